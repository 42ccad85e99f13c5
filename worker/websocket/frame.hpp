// WebSocket framing (RFC 6455 section 5), with no I/O: parse client frames in place,
// build server frame headers, validate UTF-8 across fragments. Unit-tested alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tricorn::worker::websocket {

enum class Opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xa,
};

inline bool is_control(Opcode op) {
  return static_cast<std::uint8_t>(op) & 0x8;
}

// Close codes (section 7.4).
inline constexpr int kNormal = 1000;
inline constexpr int kGoingAway = 1001;
inline constexpr int kProtocolError = 1002;
inline constexpr int kNoStatus = 1005;
inline constexpr int kAbnormal = 1006;
inline constexpr int kInvalidPayload = 1007;
inline constexpr int kTooBig = 1009;
inline constexpr int kInternalError = 1011;

struct Frame {
  bool fin = false;
  Opcode opcode = Opcode::continuation;
  std::string_view payload;  // unmasked, in place in the input
};

struct ParseOutcome {
  enum Kind : std::uint8_t { complete, incomplete, error } kind = incomplete;
  Frame frame;
  size_t size = 0;       // bytes the frame took, header included
  int close_code = 0;    // for errors: 1002 or 1009
  std::string_view why;  // for the log
};

// Parses one client frame at the start of [data, data+size), unmasking its payload in
// place. Rejects what the RFC forbids a client: unmasked frames, reserved bits (no
// extension is negotiated), unknown opcodes, fragmented or oversized control frames,
// non-minimal 64-bit lengths with the top bit set; a payload over `max_payload` is 1009.
ParseOutcome parse_frame(char* data, size_t size, std::uint64_t max_payload);

// Appends a server frame's header (FIN set, unmasked) for a payload of `size` bytes.
void append_header(std::string& out, Opcode opcode, size_t size);

// A close frame's payload: the code (network order) and a reason cut to fit 125 bytes
// without splitting a UTF-8 sequence.
std::string close_payload(int code, std::string_view reason);

// May a peer send this code in a close frame? (Section 7.4.1 and the IANA registry.)
bool is_valid_close_code(int code);

// Validates UTF-8 incrementally, so a sequence split across fragments is accepted and an
// invalid byte is caught in the fragment where it arrives.
class Utf8Validator {
 public:
  bool feed(std::string_view bytes);            // false: invalid
  bool complete() const { return need_ == 0; }  // not in the middle of a sequence
  void reset() { need_ = 0; }

 private:
  int need_ = 0;                            // continuation bytes still expected
  unsigned char low_ = 0x80, high_ = 0xbf;  // the range the next one must be in
};

inline bool valid_utf8(std::string_view s) {
  Utf8Validator v;
  return v.feed(s) && v.complete();
}

}  // namespace tricorn::worker::websocket
