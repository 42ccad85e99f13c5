// Lists of trusted networks, as `forwarded_allow_ips` and `proxy_allow_ips` give them:
// "127.0.0.1,::1", "10.0.0.0/8, fd00::/8", or "*" for every peer.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tricorn {

class Networks {
 public:
  // Throws std::invalid_argument naming the entry that is not an address or CIDR.
  static Networks parse(std::string_view list);

  // `host` as a peer address prints ("127.0.0.1", "::1"); false for anything else.
  bool contains(std::string_view host) const;
  bool everyone() const { return everyone_; }

 private:
  struct Net {
    bool v6;
    std::array<std::uint8_t, 16> address;
    int prefix;  // bits
  };
  std::vector<Net> nets_;
  bool everyone_ = false;
};

}  // namespace tricorn
