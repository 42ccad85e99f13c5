// The access log line of one request, the same for every protocol: Gunicorn's format
// atoms (access_log_format), or one JSON object per line (access_log_json).
#pragma once

#include "config/config.hpp"

#include <tricorn/app.hpp>

#include <chrono>
#include <cstdint>
#include <string_view>

namespace tricorn::worker {

struct RequestRecord {
  const Scope& scope;
  std::string_view target;    // as received, with the query
  std::string_view protocol;  // "HTTP/1.1", "HTTP/2"
  int status = 0;
  std::uint64_t body_bytes = 0;
  std::chrono::steady_clock::duration elapsed{};
};

void write_access_log(const config::Config& config, const RequestRecord& r);

}  // namespace tricorn::worker
