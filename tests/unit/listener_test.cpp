// Peer addresses as text: IPv4 is formatted by hand on every accept, and must read
// exactly as inet_ntop writes it.
#include "common/listener.hpp"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

using tricorn::address_of;

namespace {

sockaddr_storage ipv4(const unsigned char (&bytes)[4], unsigned short port) {
  sockaddr_storage ss{};
  auto& a = reinterpret_cast<sockaddr_in&>(ss);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  std::memcpy(&a.sin_addr, bytes, 4);
  return ss;
}

}  // namespace

TEST_CASE("every IPv4 octet in every position reads as inet_ntop writes it") {
  for (int position = 0; position < 4; ++position)
    for (int value = 0; value < 256; ++value) {
      unsigned char bytes[4] = {10, 200, 7, 99};
      bytes[position] = static_cast<unsigned char>(value);
      char expected[INET_ADDRSTRLEN];
      REQUIRE(inet_ntop(AF_INET, bytes, expected, sizeof expected));
      const auto peer = address_of(ipv4(bytes, 54321));
      CHECK(peer.host == expected);
      CHECK(peer.port == 54321);
    }
  CHECK(address_of(ipv4({255, 255, 255, 255}, 1)).host == "255.255.255.255");
  CHECK(address_of(ipv4({0, 0, 0, 0}, 65535)).port == 65535);
}

TEST_CASE("IPv6 peers read as inet_ntop writes them; other families are empty") {
  sockaddr_storage ss{};
  auto& a = reinterpret_cast<sockaddr_in6&>(ss);
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(8443);
  REQUIRE(inet_pton(AF_INET6, "2001:db8::1", &a.sin6_addr) == 1);
  const auto peer = address_of(ss);
  CHECK(peer.host == "2001:db8::1");
  CHECK(peer.port == 8443);
  sockaddr_storage unix_peer{};
  unix_peer.ss_family = AF_UNIX;
  CHECK(address_of(unix_peer).host.empty());
}
