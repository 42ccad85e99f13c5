// The one place a request meets the app, for every protocol: call it, and turn
// whatever escapes it into a reason the protocol can act on (and that is logged with
// the request line). The protocols decide what to send after a failure: HTTP/1.1 a
// 500 or a close, HTTP/2 a 500 or RST_STREAM.
#pragma once

#include "common/log.hpp"
#include "worker/http1/parser.hpp"
#include "worker/worker.hpp"

#include <fmt/format.h>

#include <tricorn/app.hpp>

#include <cstdint>
#include <string>

namespace tricorn::worker {

// Thrown through the app's send() when the client went away or stopped reading.
using ClientGone = ClientDisconnected;

struct AppOutcome {
  bool client_gone = false;
  std::string failure;  // empty: the app returned normally
};

inline asio::awaitable<AppOutcome> call_app(Worker& worker, Scope& scope, Receive& receive,
                                            Send& send) {
  AppOutcome outcome;
  try {
    co_await worker.run_app(scope, receive, send);
  } catch (const ClientGone&) {
    outcome.client_gone = true;
  } catch (const std::exception& e) {
    outcome.failure = e.what();
  }
  co_return outcome;
}

// ASGI's rules for what an app sends, the same for every protocol: a final status, and
// fields whose names are tokens and whose values cannot split a message.
// One pass over the value without an early exit, which the compiler vectorises
// (string_view::find_first_of calls memchr over the set for every character).
inline bool has_cr_lf_or_nul(std::string_view value) {
  bool found = false;
  for (char c : value) found |= (c == '\r') | (c == '\n') | (c == '\0');
  return found;
}

inline void check_fields(std::span<const Header> fields, std::string_view what) {
  for (const auto& h : fields)
    if (!tricorn::http1::is_token(h.name) || has_cr_lf_or_nul(h.value))
      throw ProtocolError(fmt::format("invalid {} '{}'", what, h.name));
}

// Where a response is in ASGI's sequence, the same for every protocol: nothing yet;
// http.response.start received; its head handed to the protocol (written, or submitted
// to nghttp2); the last body sent with trailers due; complete.
enum class ResponseStage : std::uint8_t { none, started, head_sent, body_done, complete };

inline void check_start(ResponseStage stage, const HttpResponseStart& start) {
  if (stage != ResponseStage::none) throw ProtocolError("http.response.start sent twice");
  if (start.status < 200 || start.status > 599)
    throw ProtocolError(fmt::format("invalid status {}", start.status));
  check_fields(start.headers, "response header");
}

inline void check_body(ResponseStage stage) {
  if (stage == ResponseStage::none)
    throw ProtocolError("http.response.body sent before http.response.start");
  if (stage == ResponseStage::body_done || stage == ResponseStage::complete)
    throw ProtocolError("http.response.body sent after the response body was complete");
}

inline void check_trailers(ResponseStage stage, bool expected,
                           const HttpResponseTrailers& trailers) {
  if (stage != ResponseStage::body_done || !expected)
    throw ProtocolError("http.response.trailers without trailers: true and a complete body");
  check_fields(trailers.headers, "trailer");
}

inline void log_app_failure(const Scope& scope, std::string_view target, std::string_view why) {
  log::error("Error handling request {} {}: {}", scope.method, target, why);
}

}  // namespace tricorn::worker
