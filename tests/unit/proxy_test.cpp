// Trusted networks and the PROXY protocol parser, without sockets.
#include "common/networks.hpp"
#include "worker/proxy_protocol.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

using tricorn::Networks;
using tricorn::worker::parse_proxy_header;
using tricorn::worker::ProxyHeader;

TEST_CASE("networks: addresses, CIDR, both families, everyone") {
  auto n = Networks::parse("127.0.0.1, 10.0.0.0/8,fd00::/8 , 192.168.1.0/25");
  CHECK(n.contains("127.0.0.1"));
  CHECK_FALSE(n.contains("127.0.0.2"));
  CHECK(n.contains("10.255.1.2"));
  CHECK(n.contains("::ffff:10.1.1.1"));  // IPv4-mapped, from a dual-stack socket
  CHECK(n.contains("fd12::1"));
  CHECK_FALSE(n.contains("fe80::1"));
  CHECK(n.contains("192.168.1.127"));
  CHECK_FALSE(n.contains("192.168.1.128"));
  CHECK_FALSE(n.contains("not an address"));
  CHECK(Networks::parse("*").contains("203.0.113.5"));
  CHECK_FALSE(Networks::parse("").contains("127.0.0.1"));
  CHECK_THROWS_AS(Networks::parse("10.0.0.0/33"), std::invalid_argument);
  CHECK_THROWS_AS(Networks::parse("localhost"), std::invalid_argument);
}

TEST_CASE("PROXY v1, whole and cut short") {
  const std::string h = "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET";
  for (size_t n = 0; n < h.size() - 3; ++n)
    CHECK(parse_proxy_header(std::string_view(h).substr(0, n)).kind == ProxyHeader::incomplete);
  auto r = parse_proxy_header(h);
  REQUIRE(r.kind == ProxyHeader::complete);
  CHECK(r.size == h.size() - 3);
  REQUIRE(r.source);
  CHECK(r.source->host == "192.0.2.1");
  CHECK(r.source->port == 56324);
  CHECK(parse_proxy_header("PROXY UNKNOWN\r\n").source == std::nullopt);
  CHECK(parse_proxy_header("PROXY TCP4 192.0.2.1 198.51.100.1 056 443\r\n").kind ==
        ProxyHeader::invalid);
  CHECK(parse_proxy_header("PROXY TCP4  192.0.2.1 198.51.100.1 1 443\r\n").kind ==
        ProxyHeader::invalid);
  CHECK(parse_proxy_header("PROXY TCP6 192.0.2.1 198.51.100.1 1 2\r\n").kind ==
        ProxyHeader::invalid);
  CHECK(parse_proxy_header("GET / HTTP/1.1\r\n").kind == ProxyHeader::invalid);
  CHECK(parse_proxy_header("PROXY " + std::string(120, 'x')).kind == ProxyHeader::invalid);
}

TEST_CASE("PROXY v2: IPv4, LOCAL, bad version") {
  std::string h("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", 16);
  h += std::string("\xc0\x00\x02\x07\xcb\x00\x71\x01\x04\xd2\x01\xbb", 12);  // 192.0.2.7:1234
  auto r = parse_proxy_header(h);
  REQUIRE(r.kind == ProxyHeader::complete);
  CHECK(r.size == 28);
  REQUIRE(r.source);
  CHECK(r.source->host == "192.0.2.7");
  CHECK(r.source->port == 1234);
  CHECK(parse_proxy_header(h.substr(0, 27)).kind == ProxyHeader::incomplete);
  std::string local = h;
  local[12] = '\x20';
  CHECK(parse_proxy_header(local).source == std::nullopt);
  std::string v3 = h;
  v3[12] = '\x31';
  CHECK(parse_proxy_header(v3).kind == ProxyHeader::invalid);
}
