#include "worker/websocket/frame.hpp"

#include <cstring>

namespace tricorn::worker::websocket {

ParseOutcome parse_frame(char* data, size_t size, std::uint64_t max_payload) {
  ParseOutcome out;
  auto error = [&](int code, std::string_view why) {
    out.kind = ParseOutcome::error;
    out.close_code = code;
    out.why = why;
    return out;
  };
  if (size < 2) return out;
  const auto b0 = static_cast<unsigned char>(data[0]);
  const auto b1 = static_cast<unsigned char>(data[1]);
  const bool fin = b0 & 0x80;
  const auto opcode = static_cast<Opcode>(b0 & 0x0f);
  if (b0 & 0x70) return error(kProtocolError, "reserved bits set");
  switch (opcode) {
    case Opcode::continuation:
    case Opcode::text:
    case Opcode::binary:
    case Opcode::close:
    case Opcode::ping:
    case Opcode::pong: break;
    default: return error(kProtocolError, "unknown opcode");
  }
  if (!(b1 & 0x80)) return error(kProtocolError, "unmasked client frame");
  std::uint64_t length = b1 & 0x7f;
  size_t header = 2;
  if (is_control(opcode)) {
    if (!fin) return error(kProtocolError, "fragmented control frame");
    if (length > 125) return error(kProtocolError, "control frame longer than 125 bytes");
  }
  if (length == 126) {
    if (size < 4) return out;
    length = (std::uint64_t{static_cast<unsigned char>(data[2])} << 8) |
             static_cast<unsigned char>(data[3]);
    header = 4;
  } else if (length == 127) {
    if (size < 10) return out;
    length = 0;
    for (int i = 2; i < 10; ++i) length = (length << 8) | static_cast<unsigned char>(data[i]);
    if (length >> 63) return error(kProtocolError, "payload length with the top bit set");
    header = 10;
  }
  if (length > max_payload) return error(kTooBig, "message over ws_max_size");
  header += 4;  // the masking key
  if (size < header || size - header < length) return out;
  const unsigned char* mask = reinterpret_cast<const unsigned char*>(data + header - 4);
  char* payload = data + header;
  for (size_t i = 0; i < length; ++i) payload[i] = static_cast<char>(payload[i] ^ mask[i & 3]);
  out.kind = ParseOutcome::complete;
  out.frame = {fin, opcode, std::string_view(payload, static_cast<size_t>(length))};
  out.size = header + static_cast<size_t>(length);
  return out;
}

void append_header(std::string& out, Opcode opcode, size_t size) {
  out.push_back(static_cast<char>(0x80 | static_cast<unsigned char>(opcode)));
  if (size < 126) {
    out.push_back(static_cast<char>(size));
  } else if (size <= 0xffff) {
    out.push_back(126);
    out.push_back(static_cast<char>(size >> 8));
    out.push_back(static_cast<char>(size & 0xff));
  } else {
    out.push_back(127);
    for (int shift = 56; shift >= 0; shift -= 8)
      out.push_back(static_cast<char>((static_cast<std::uint64_t>(size) >> shift) & 0xff));
  }
}

std::string close_payload(int code, std::string_view reason) {
  std::string out;
  if (code == kNoStatus) return out;  // "no status" is never sent on the wire
  out.push_back(static_cast<char>((code >> 8) & 0xff));
  out.push_back(static_cast<char>(code & 0xff));
  size_t n = std::min<size_t>(reason.size(), 123);
  // Do not cut a multi-byte sequence: back up over continuation bytes.
  while (n < reason.size() && n > 0 && (static_cast<unsigned char>(reason[n]) & 0xc0) == 0x80) --n;
  out.append(reason.substr(0, n));
  return out;
}

bool is_valid_close_code(int code) {
  if (code >= 3000 && code <= 4999) return true;  // registered by apps and libraries
  switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
    case 1012:
    case 1013:
    case 1014: return true;
    default: return false;  // 1004-1006 and 1015 are never sent; the rest unassigned
  }
}

bool Utf8Validator::feed(std::string_view bytes) {
  for (unsigned char c : bytes) {
    if (need_ == 0) {
      if (c < 0x80) continue;
      low_ = 0x80;
      high_ = 0xbf;
      if (c >= 0xc2 && c <= 0xdf) {
        need_ = 1;
      } else if (c >= 0xe0 && c <= 0xef) {
        need_ = 2;
        if (c == 0xe0) low_ = 0xa0;   // no overlong forms
        if (c == 0xed) high_ = 0x9f;  // no surrogates
      } else if (c >= 0xf0 && c <= 0xf4) {
        need_ = 3;
        if (c == 0xf0) low_ = 0x90;
        if (c == 0xf4) high_ = 0x8f;  // nothing above U+10FFFF
      } else {
        return false;
      }
      continue;
    }
    if (c < low_ || c > high_) return false;
    low_ = 0x80;
    high_ = 0xbf;
    --need_;
  }
  return true;
}

}  // namespace tricorn::worker::websocket
