// The PROXY protocol (HAProxy's, versions 1 and 2): a header in front of the first byte
// of a connection that names the client a load balancer accepted. Parsed without I/O,
// so it is unit-tested and fuzzed alone; the worker reads it before anything else.
#pragma once

#include <tricorn/app.hpp>

#include <cstddef>
#include <optional>
#include <string_view>

namespace tricorn::worker {

struct ProxyHeader {
  enum Kind : std::uint8_t { complete, incomplete, invalid } kind = incomplete;
  size_t size = 0;                // bytes of the header
  std::optional<Address> source;  // none for UNKNOWN (v1) and LOCAL (v2): use the peer
};

// The longest header we accept: v1's 107 bytes, or v2 with up to 512 bytes of TLVs.
inline constexpr size_t kMaxProxyHeader = 16 + 36 + 512;

ProxyHeader parse_proxy_header(std::string_view data);

}  // namespace tricorn::worker
