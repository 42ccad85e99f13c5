#pragma once

#include "worker/stream.hpp"

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tricorn::worker {
class Worker;
}

namespace tricorn::worker::http2 {

// An HTTP/1.1 request that asked for `Upgrade: h2c`: it becomes stream 1.
struct UpgradedRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string body;
  std::string settings;  // the decoded HTTP2-Settings payload
};

// Serves HTTP/2 on `stream` until it closes. `received` holds bytes already read from
// the stream (the client preface and what followed it).
void start_connection(Worker& worker, Stream stream, const ListenerInfo& listener,
                      std::string received, std::unique_ptr<UpgradedRequest> upgraded = nullptr);

// The client connection preface (RFC 9113 section 3.4).
// Streams taken from the worker's pool and not yet given back: each is held by its
// connection or by its app. For checks (the connection fuzzer): none once all is done.
size_t streams_in_use(Worker& worker);

inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

bool decode_base64url(std::string_view in, std::string& out);

}  // namespace tricorn::worker::http2
