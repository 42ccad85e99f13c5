// A strict HTTP/1.1 request parser (RFC 9112). It works in place on the connection's
// buffer: views point into it and header names are lower-cased where they lie, so a
// parsed request costs no allocation. It rejects anything that two parsers could read
// differently (see docs/http1.md for the table), because a proxy in front of us may be
// one of those parsers.
#pragma once

#include <tricorn/app.hpp>

#include <boost/container/small_vector.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace tricorn::http1 {

struct Limits {
  size_t request_line = 4094;
  size_t fields = 100;
  size_t field_size = 8190;
};

enum class BodyKind : std::uint8_t { none, length, chunked };

struct RequestHead {
  std::string_view method;
  std::string_view target;  // as received
  std::string_view path;    // target up to '?'
  std::string_view query;   // after '?', without it
  int version_minor = 1;    // HTTP/1.0 or HTTP/1.1 (1.2+ is treated as 1.1)
  // Names lower-cased in place. The first 16 fields live in the head itself: a new
  // connection's request allocates nothing.
  boost::container::small_vector<Header, 16> headers;
  BodyKind body = BodyKind::none;
  std::uint64_t content_length = 0;
  bool keep_alive = true;
  bool expect_continue = false;
  std::string_view host;
  std::string_view upgrade;  // the Upgrade field, if Connection names it
  size_t head_size = 0;      // bytes of the head, CRLFCRLF included

  void clear() {
    headers.clear();
    body = BodyKind::none;
    content_length = 0;
    keep_alive = true;
    expect_continue = false;
    host = upgrade = {};
    head_size = 0;
  }
};

struct ParseResult {
  enum Kind : std::uint8_t { complete, incomplete, error } kind;
  int status = 0;           // for errors: 400, 414, 431, 501, 505, 417
  std::string_view reason;  // for the error log
};

// Where the search for the end of a head stopped; carried between calls on the same head
// so that bytes arriving one at a time are scanned once.
struct ScanState {
  size_t pos = 0;  // next byte to look at
  size_t line_start = 0;
  size_t lines = 0;  // complete lines seen, the request line included
};

// Parses one request head at the start of [data, data+size). Leading empty lines are
// skipped (RFC 9112 section 2.2) and counted in head_size.
ParseResult parse_request(char* data, size_t size, const Limits& limits, RequestHead& out,
                          ScanState& scan);

// The same without the one-pass path for whole heads: every head through the
// incremental checks. The tests and the fuzzer hold the two to the same answers.
ParseResult parse_request_checked(char* data, size_t size, const Limits& limits, RequestHead& out,
                                  ScanState& scan);

// Decodes a chunked body incrementally, handing out data as views into the input.
class ChunkedDecoder {
 public:
  struct Step {
    size_t consumed = 0;    // input bytes used, data included
    std::string_view data;  // a piece of body, possibly empty
    bool done = false;      // the last chunk and trailers were read
    int error_status = 0;   // non-zero: malformed (400) or trailers too large (431)
  };
  explicit ChunkedDecoder(size_t trailer_limit = 8192) : trailer_limit_(trailer_limit) {}
  void reset() { *this = ChunkedDecoder(trailer_limit_); }
  // Processes input until it yields data, finishes, fails or runs out of input.
  Step step(const char* data, size_t size);

 private:
  enum class State : std::uint8_t {
    size,
    extension,
    size_lf,
    data,
    data_cr,
    data_lf,
    trailer_line_start,
    trailer_line,
    trailer_lf,
    final_lf,
    done
  };
  State state_ = State::size;
  std::uint64_t remaining_ = 0;
  int size_digits_ = 0;
  size_t extension_bytes_ = 0;
  size_t trailer_bytes_ = 0;
  size_t trailer_limit_;
};

// Percent-decodes `raw` into `out` (reusing its capacity); returns false on a malformed
// escape. The result is what ASGI calls `path`.
bool percent_decode(std::string_view raw, std::string& out);

bool is_token(std::string_view s);

// ASCII case-insensitive equality, for field names and tokens. Inline for the length
// test, which settles most comparisons of a name against a list of names.
bool iequals_same_size(const char* a, const char* b, size_t size);
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && iequals_same_size(a.data(), b.data(), a.size());
}

// Without optional whitespace (spaces and tabs) at either end.
std::string_view trim_ows(std::string_view s);

// The elements of a list-valued field ("a, b,c"), split at `separator` and stripped of
// optional whitespace; empty elements are kept (callers decide what they mean).
std::vector<std::string_view> split_list(std::string_view value, char separator = ',');

// Is `token` one of the elements of a list-valued field (case-insensitive)?
bool list_has_token(std::string_view value, std::string_view token);

}  // namespace tricorn::http1
