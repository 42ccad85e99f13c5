#include "common/networks.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <stdexcept>

namespace tricorn {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An IPv4 address is kept as ::ffff:a.b.c.d, so one comparison serves both families.
bool to_bytes(std::string_view text, std::array<std::uint8_t, 16>& out, bool& v6) {
  std::string s(text);
  in_addr a4{};
  if (inet_pton(AF_INET, s.c_str(), &a4) == 1) {
    out = {};
    out[10] = out[11] = 0xff;
    std::memcpy(out.data() + 12, &a4, 4);
    v6 = false;
    return true;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1) {
    std::memcpy(out.data(), &a6, 16);
    v6 = true;
    return true;
  }
  return false;
}

}  // namespace

Networks Networks::parse(std::string_view list) {
  Networks n;
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    if (item.empty()) continue;
    if (item == "*") {
      n.everyone_ = true;
      continue;
    }
    auto slash = item.find('/');
    Net net{};
    if (!to_bytes(item.substr(0, slash), net.address, net.v6))
      throw std::invalid_argument("not an IP address or network: '" + std::string(item) + "'");
    int max = net.v6 ? 128 : 32;
    net.prefix = max;
    if (slash != std::string_view::npos) {
      auto bits = item.substr(slash + 1);
      auto [end, ec] = std::from_chars(bits.data(), bits.data() + bits.size(), net.prefix);
      if (ec != std::errc{} || end != bits.data() + bits.size() || net.prefix < 0 ||
          net.prefix > max)
        throw std::invalid_argument("bad prefix length in '" + std::string(item) + "'");
    }
    if (!net.v6) net.prefix += 96;
    n.nets_.push_back(net);
  }
  return n;
}

bool Networks::contains(std::string_view host) const {
  if (everyone_) return true;
  std::array<std::uint8_t, 16> a{};
  bool v6;
  if (!to_bytes(host, a, v6)) return false;
  for (const auto& net : nets_) {
    int full = net.prefix / 8, rest = net.prefix % 8;
    if (std::memcmp(a.data(), net.address.data(), static_cast<size_t>(full)) != 0) continue;
    if (rest && ((a[full] ^ net.address[full]) & (0xff << (8 - rest)))) continue;
    return true;
  }
  return false;
}

}  // namespace tricorn
