#include "worker/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <string>

namespace tricorn::worker {
namespace {

constexpr std::string_view kV1 = "PROXY ";
constexpr std::string_view kV2 = std::string_view("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr size_t kV1Max = 107;

ProxyHeader invalid() {
  return {ProxyHeader::invalid, 0, std::nullopt};
}

std::optional<Address> v1_address(std::string_view family, std::string_view host,
                                  std::string_view port) {
  std::string h(host);
  unsigned char buf[16];
  if (inet_pton(family == "TCP4" ? AF_INET : AF_INET6, h.c_str(), buf) != 1) return std::nullopt;
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc{} || end != port.data() + port.size() || p > 65535 || port.empty() ||
      (port.size() > 1 && port[0] == '0'))
    return std::nullopt;
  return Address{h, static_cast<std::uint16_t>(p)};
}

// "PROXY TCP4 SRC DST SPORT DPORT\r\n" or "PROXY UNKNOWN ...\r\n", single spaces.
ProxyHeader parse_v1(std::string_view data) {
  auto end = data.find("\r\n");
  if (end == std::string_view::npos) {
    if (data.size() >= kV1Max) return invalid();
    return {};
  }
  if (end + 2 > kV1Max) return invalid();
  std::string_view line = data.substr(kV1.size(), end - kV1.size());
  std::string_view fields[5];
  size_t n = 0;
  while (n < 5) {
    auto space = line.find(' ');
    fields[n++] = line.substr(0, space);
    if (space == std::string_view::npos) break;
    line.remove_prefix(space + 1);
  }
  if (n >= 1 && fields[0] == "UNKNOWN") return {ProxyHeader::complete, end + 2, std::nullopt};
  if (n != 5 || line.find(' ') != std::string_view::npos || line != fields[4] ||
      (fields[0] != "TCP4" && fields[0] != "TCP6"))
    return invalid();
  auto source = v1_address(fields[0], fields[1], fields[3]);
  if (!source || !v1_address(fields[0], fields[2], fields[4])) return invalid();
  return {ProxyHeader::complete, end + 2, source};
}

ProxyHeader parse_v2(std::string_view data) {
  if (data.size() < 16) return {};
  const auto* b = reinterpret_cast<const unsigned char*>(data.data());
  const unsigned version = b[12] >> 4, command = b[12] & 0x0f;
  const unsigned family = b[13];
  const size_t length = (size_t{b[14]} << 8) | b[15];
  if (version != 2 || command > 1 || 16 + length > kMaxProxyHeader) return invalid();
  if (data.size() < 16 + length) return {};
  ProxyHeader h{ProxyHeader::complete, 16 + length, std::nullopt};
  if (command == 0) return h;  // LOCAL: the balancer's own connection (a health check)
  char text[INET6_ADDRSTRLEN];
  if (family == 0x11) {  // TCP over IPv4
    if (length < 12) return invalid();
    inet_ntop(AF_INET, b + 16, text, sizeof text);
    h.source = Address{text, static_cast<std::uint16_t>((b[24] << 8) | b[25])};
  } else if (family == 0x21) {  // TCP over IPv6
    if (length < 36) return invalid();
    inet_ntop(AF_INET6, b + 16, text, sizeof text);
    h.source = Address{text, static_cast<std::uint16_t>((b[48] << 8) | b[49])};
  } else if (family != 0x00 && family != 0x31) {
    return invalid();  // UDP makes no sense for HTTP; unix or unspecified: no address
  }
  return h;
}

}  // namespace

ProxyHeader parse_proxy_header(std::string_view data) {
  const size_t n = std::min(data.size(), kV2.size());
  if (data.substr(0, n) == kV2.substr(0, n)) return n < kV2.size() ? ProxyHeader{} : parse_v2(data);
  const size_t m = std::min(data.size(), kV1.size());
  if (data.substr(0, m) == kV1.substr(0, m)) return m < kV1.size() ? ProxyHeader{} : parse_v1(data);
  return invalid();
}

}  // namespace tricorn::worker
