// WebSocket framing without sockets: the accept key, frame parsing and building, UTF-8
// across fragments, close payloads and codes.
#include "worker/websocket/frame.hpp"
#include "worker/websocket/session.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace tricorn::worker::websocket;

namespace {

std::string masked(std::uint8_t b0, std::string_view payload) {
  std::string out;
  out.push_back(static_cast<char>(b0));
  out.push_back(static_cast<char>(0x80 | payload.size()));
  const char key[4] = {1, 2, 3, 4};
  out.append(key, 4);
  for (size_t i = 0; i < payload.size(); ++i)
    out.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  return out;
}

}  // namespace

TEST_CASE("accept key of RFC 6455 section 1.3") {
  CHECK(accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("a masked text frame is unmasked in place, byte by byte or whole") {
  const std::string wire = masked(0x81, "Hello");
  for (size_t n = 0; n < wire.size(); ++n) {
    std::string part = wire.substr(0, n);
    CHECK(parse_frame(part.data(), part.size(), 1000).kind == ParseOutcome::incomplete);
  }
  std::string whole = wire;
  auto r = parse_frame(whole.data(), whole.size(), 1000);
  REQUIRE(r.kind == ParseOutcome::complete);
  CHECK(r.size == wire.size());
  CHECK(r.frame.fin);
  CHECK(r.frame.opcode == Opcode::text);
  CHECK(r.frame.payload == "Hello");
}

TEST_CASE("what a client must not send") {
  auto code_of = [](std::string wire, std::uint64_t max = 1000) {
    auto r = parse_frame(wire.data(), wire.size(), max);
    return r.kind == ParseOutcome::error ? r.close_code : 0;
  };
  CHECK(code_of(std::string("\x81\x05Hello", 7)) == 1002);  // unmasked
  CHECK(code_of(masked(0xc1, "x")) == 1002);                // RSV1
  CHECK(code_of(masked(0x83, "x")) == 1002);                // reserved opcode
  CHECK(code_of(masked(0x09, "x")) == 1002);                // fragmented ping
  CHECK(code_of(masked(0x81, std::string(100, 'a')), 99) == 1009);
  std::string huge("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00", 10);  // 64-bit, top bit set
  CHECK(code_of(huge) == 1002);
}

TEST_CASE("server frame headers use the shortest length") {
  std::string out;
  append_header(out, Opcode::binary, 125);
  CHECK(out == std::string("\x82\x7d", 2));
  out.clear();
  append_header(out, Opcode::text, 126);
  CHECK(out == std::string("\x81\x7e\x00\x7e", 4));
  out.clear();
  append_header(out, Opcode::binary, 65536);
  CHECK(out == std::string("\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10));
}

TEST_CASE("UTF-8 is validated across fragments") {
  Utf8Validator v;
  CHECK(v.feed("price: \xe2"));
  CHECK_FALSE(v.complete());
  CHECK(v.feed("\x82\xac"));
  CHECK(v.complete());
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));      // a surrogate
  CHECK_FALSE(valid_utf8("\xc0\xaf"));          // overlong
  CHECK_FALSE(valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK(valid_utf8("\xf0\x9f\x98\x80"));        // an emoji
}

TEST_CASE("close payloads and codes") {
  CHECK(close_payload(1000, "") == std::string("\x03\xe8", 2));
  CHECK(close_payload(1005, "ignored").empty());
  const std::string long_reason = std::string(122, 'a') + "\xc3\xbc";  // 124 bytes, ends in ü
  CHECK(close_payload(1000, long_reason).size() == 2 + 122);           // ü is not cut in half
  CHECK(is_valid_close_code(1000));
  CHECK(is_valid_close_code(4999));
  CHECK_FALSE(is_valid_close_code(1005));
  CHECK_FALSE(is_valid_close_code(1016));
  CHECK_FALSE(is_valid_close_code(5000));
}
