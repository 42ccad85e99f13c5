#include "worker/http1/parser.hpp"

#include <array>
#include <cstring>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace tricorn::http1 {
namespace {

constexpr std::array<bool, 256> make_tchar_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto kTchar = make_tchar_table();

// Field values: HTAB, SP, VCHAR and obs-text. Everything else (CR, LF, NUL, other
// controls, DEL) is rejected.
constexpr std::array<bool, 256> make_value_table() {
  std::array<bool, 256> t{};
  t['\t'] = true;
  for (int c = 0x20; c <= 0x7e; ++c) t[c] = true;
  for (int c = 0x80; c <= 0xff; ++c) t[c] = true;
  return t;
}
constexpr auto kValueChar = make_value_table();

constexpr std::array<bool, 256> make_host_table() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("-._~:[]%!$&'()*+,;=")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr auto kHostChar = make_host_table();

// Request-target bytes: anything visible (RFC 9112 section 3.2 forms are checked after).
constexpr std::array<bool, 256> make_target_table() {
  std::array<bool, 256> t{};
  for (int c = 0x21; c <= 0xff; ++c) t[c] = c != 0x7f;
  return t;
}
constexpr auto kTargetChar = make_target_table();

unsigned char byte(char c) {
  return static_cast<unsigned char>(c);
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

constexpr ParseResult kComplete{ParseResult::complete, 0, {}};
constexpr ParseResult kIncomplete{ParseResult::incomplete, 0, {}};

ParseResult fail(int status, std::string_view reason) {
  return {ParseResult::error, status, reason};
}

// Calls f(token) for each element of a comma-separated list; empty elements are skipped
// as RFC 9110 section 5.6.1 allows.
template <typename F>
void for_each_list_item(std::string_view list, F&& f) {
  while (!list.empty()) {
    auto comma = list.find(',');
    auto item = trim_ows(list.substr(0, comma));
    if (!item.empty()) f(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

bool parse_decimal(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;  // 19 digits cannot overflow 64 bits
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  out = v;
  return true;
}

// Finds the end of the head, checking line endings and size limits as bytes arrive so
// that an oversized or malformed head is refused before it is complete.
ParseResult scan_head(const char* data, size_t size, const Limits& limits, ScanState& s,
                      size_t& head_end) {
  const size_t max_lines = limits.fields + 1;
  while (s.pos < size) {
    const void* nl = std::memchr(data + s.pos, '\n', size - s.pos);
    if (!nl) {
      s.pos = size;
      break;
    }
    size_t lf = static_cast<size_t>(static_cast<const char*>(nl) - data);
    if (lf == s.line_start || data[lf - 1] != '\r') return fail(400, "bare LF line ending");
    size_t line_len = lf - 1 - s.line_start;
    if (line_len == 0) {
      head_end = lf + 1;
      return kComplete;
    }
    if (s.lines == 0 && line_len > limits.request_line) return fail(414, "request line too long");
    if (s.lines > 0 && line_len > limits.field_size) return fail(431, "header field too large");
    if (++s.lines > max_lines) return fail(431, "too many header fields");
    s.line_start = s.pos = lf + 1;
  }
  size_t partial = size - s.line_start;
  if (s.lines == 0 && partial > limits.request_line + 1) return fail(414, "request line too long");
  if (s.lines > 0 && partial > limits.field_size + 1) return fail(431, "header field too large");
  return kIncomplete;
}

// The request target's form (RFC 9112 section 3.2) and its path and query.
ParseResult parse_target(RequestHead& out) {
  auto target = out.target;
  if (target.front() == '/') {
    // origin-form
  } else if (target == "*") {
    if (out.method != "OPTIONS") return fail(400, "asterisk target outside OPTIONS");
  } else if (auto scheme_end = target.find("://");
             scheme_end != std::string_view::npos && scheme_end > 0) {
    auto after = target.substr(scheme_end + 3);
    auto slash = after.find_first_of("/?");
    target = slash == std::string_view::npos ? std::string_view("/") : after.substr(slash);
    if (target.front() == '?') return fail(400, "absolute target without a path");
  } else {
    return fail(400, "invalid request target");
  }
  auto q = target.find('?');
  out.path = target.substr(0, q);
  out.query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  return kComplete;
}

ParseResult parse_request_line(std::string_view line, RequestHead& out) {
  auto sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return fail(400, "malformed request line");
  out.method = line.substr(0, sp1);
  if (!is_token(out.method)) return fail(400, "invalid method");
  auto rest = line.substr(sp1 + 1);
  auto sp2 = rest.find(' ');
  if (sp2 == std::string_view::npos || sp2 == 0) return fail(400, "malformed request line");
  out.target = rest.substr(0, sp2);
  for (unsigned char c : out.target)
    if (c <= 0x20 || c == 0x7f) return fail(400, "invalid character in request target");
  auto version = rest.substr(sp2 + 1);
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
      version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9')
    return fail(400, "malformed HTTP version");
  if (version[5] != '1') return fail(505, "HTTP version not supported");
  out.version_minor = version[7] == '0' ? 0 : 1;
  return parse_target(out);
}

struct FramingFields {
  int host_count = 0;
  int content_length_count = 0;
  bool has_transfer_encoding = false;
  int chunked_count = 0;
  bool chunked_last = false;
  bool unknown_coding = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  bool connection_upgrade = false;
  std::string_view upgrade;
};

ParseResult note_field(std::string_view name, std::string_view value, RequestHead& out,
                       FramingFields& f) {
  if (name == "host") {
    if (++f.host_count > 1) return fail(400, "more than one Host field");
    for (unsigned char c : value)
      if (!kHostChar[c]) return fail(400, "invalid Host");
    out.host = value;
  } else if (name == "content-length") {
    if (++f.content_length_count > 1) return fail(400, "more than one Content-Length");
    if (!parse_decimal(value, out.content_length)) return fail(400, "invalid Content-Length");
  } else if (name == "transfer-encoding") {
    f.has_transfer_encoding = true;
    for_each_list_item(value, [&](std::string_view coding) {
      if (iequals(coding, "chunked")) {
        ++f.chunked_count;
        f.chunked_last = true;
      } else {
        if (f.chunked_count == 0) f.unknown_coding = true;
        f.chunked_last = false;
      }
    });
  } else if (name == "connection") {
    for_each_list_item(value, [&](std::string_view token) {
      if (iequals(token, "close"))
        f.connection_close = true;
      else if (iequals(token, "keep-alive"))
        f.connection_keep_alive = true;
      else if (iequals(token, "upgrade"))
        f.connection_upgrade = true;
    });
  } else if (name == "expect") {
    if (out.version_minor >= 1) {
      if (!iequals(value, "100-continue")) return fail(417, "unsupported Expect");
      out.expect_continue = true;
    }
  } else if (name == "upgrade") {
    f.upgrade = value;
  }
  return kComplete;
}

// The first byte at or after `p` that cannot be in a field value: 16 bytes at a time
// (SSE2, which every x86-64 has) while they lie before `readable_end`, then one at a
// time up to a terminator the caller guarantees (the CR ending the line). Values are
// the longest part of most heads (User-Agent, Cookie), and the table loop costs about
// six instructions a byte.
const char* skip_value_chars(const char* p, const char* readable_end) {
#ifdef __SSE2__
  const __m128i tab = _mm_set1_epi8('\t'), del = _mm_set1_epi8(0x7f), unit = _mm_set1_epi8(0x1f);
  while (readable_end - p >= 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, unit), v);  // v <= 0x1f
    const __m128i bad =
        _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(v, tab), control), _mm_cmpeq_epi8(v, del));
    if (const int mask = _mm_movemask_epi8(bad)) return p + __builtin_ctz(mask);
    p += 16;
  }
#endif
  while (kValueChar[byte(*p)]) ++p;
  return p;
}

// One field line, in one pass: the name (lower-cased where it lies) up to its colon, the
// value up to CR LF, without optional whitespace. The head is known to end in CR LF CR LF,
// and CR is neither a name nor a value character, so neither loop can run past it.
// Returns false on anything irregular; field_line_error then says what.
bool split_field_line(char* p, const char* readable_end, const char*& eol, std::string_view& name,
                      std::string_view& value) {
  char* q = p;
  while (kTchar[byte(*q)]) {
    *q = lower(*q);
    ++q;
  }
  if (*q != ':' || q == p) return false;
  name = {p, static_cast<size_t>(q - p)};
  ++q;
  while (*q == ' ' || *q == '\t') ++q;
  const char* const v = q;
  const char* e = skip_value_chars(v, readable_end);
  if (e[0] != '\r' || e[1] != '\n') return false;
  eol = e;
  while (e > v && (e[-1] == ' ' || e[-1] == '\t')) --e;
  value = {v, static_cast<size_t>(e - v)};
  return true;
}

// Why the field line at `p` is malformed, checked in the order a reader would.
ParseResult field_line_error(const char* p, const char* end) {
  const char* eol = static_cast<const char*>(std::memchr(p, '\r', end - p + 1));
  if (eol[1] != '\n') return fail(400, "bare CR in header field");
  if (*p == ' ' || *p == '\t') return fail(400, "obsolete line folding");
  std::string_view line(p, static_cast<size_t>(eol - p));
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return fail(400, "header field without a colon");
  if (!is_token(line.substr(0, colon))) return fail(400, "invalid header field name");
  return fail(400, "invalid character in header field value");
}

ParseResult decide_framing(RequestHead& out, const FramingFields& f) {
  if (out.version_minor >= 1 && f.host_count == 0) return fail(400, "missing Host");
  if (f.has_transfer_encoding) {
    if (f.content_length_count) return fail(400, "both Content-Length and Transfer-Encoding");
    if (out.version_minor == 0) return fail(400, "Transfer-Encoding in HTTP/1.0");
    if (f.chunked_count > 1) return fail(400, "chunked applied twice");
    if (!f.chunked_last) return fail(400, "final transfer coding is not chunked");
    if (f.unknown_coding) return fail(501, "unsupported transfer coding");
    out.body = BodyKind::chunked;
  } else if (f.content_length_count) {
    out.body = out.content_length ? BodyKind::length : BodyKind::none;
  }
  out.keep_alive =
      out.version_minor >= 1 ? !f.connection_close : f.connection_keep_alive && !f.connection_close;
  if (f.connection_upgrade) out.upgrade = f.upgrade;
  return kComplete;
}

// Empty lines before the request line (a client's stray CRLF after a body) are skipped.
size_t skip_empty_lines(const char* data, size_t size, ScanState& scan) {
  size_t skip = 0;
  while (skip + 1 < size && data[skip] == '\r' && data[skip + 1] == '\n') skip += 2;
  if (skip > 0 && scan.pos < skip) scan = {skip, skip, 0};
  return skip;
}

// The common case in one pass: a whole head, well-formed and within every limit, in a
// buffer that ends where it ends (a request read alone, or the last of a pipelined
// batch, with no body after it). It accepts nothing the checked path below refuses and
// fills `out` exactly as that path would; anything else (a partial head, a body after
// it, HTTP/1.2, any fault, a line over a limit) returns false and the checked path
// decides, with its reasons. The buffer's final CR LF CR LF bounds every loop: CR is
// neither a method, target, name nor value byte.
bool parse_whole_head(char* data, size_t size, size_t skip, const Limits& limits,
                      RequestHead& out) {
  if (size < skip + 4 || std::memcmp(data + size - 4, "\r\n\r\n", 4) != 0) return false;
  const char* const end = data + size;
  out.clear();
  char* p = data + skip;
  const char* const line = p;
  while (kTchar[byte(*p)]) ++p;
  if (*p != ' ' || p == line) return false;
  out.method = {line, static_cast<size_t>(p - line)};
  const char* const target = ++p;
  while (kTargetChar[byte(*p)]) ++p;
  if (*p != ' ' || p == target) return false;
  out.target = {target, static_cast<size_t>(p - target)};
  ++p;
  if (end - p < 10 || std::memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') ||
      p[8] != '\r' || p[9] != '\n' || static_cast<size_t>(p + 8 - line) > limits.request_line)
    return false;
  out.version_minor = p[7] - '0';
  if (parse_target(out).kind != ParseResult::complete) return false;
  FramingFields framing;
  size_t fields = 0;
  for (p += 10; *p != '\r';) {
    const char* eol;
    std::string_view name, value;
    if (!split_field_line(p, end, eol, name, value) ||
        static_cast<size_t>(eol - p) > limits.field_size || ++fields > limits.fields)
      return false;
    out.headers.push_back({name, value});
    if (note_field(name, value, out, framing).kind != ParseResult::complete) return false;
    p = data + (eol + 2 - data);
  }
  if (p[1] != '\n') return false;
  out.head_size = static_cast<size_t>(p + 2 - data);
  return decide_framing(out, framing).kind == ParseResult::complete;
}

// Every head the long way: its end found and each line's length checked as bytes
// arrive (carried in `scan`), then each line parsed, with the exact reason for a fault.
ParseResult parse_checked(char* data, size_t size, size_t skip, const Limits& limits,
                          RequestHead& out, ScanState& scan) {
  if (size - skip == 1 && data[skip] == '\r') return kIncomplete;

  size_t head_end = 0;
  if (auto r = scan_head(data, size, limits, scan, head_end); r.kind != ParseResult::complete)
    return r;

  out.clear();
  out.head_size = head_end;
  const char* p = data + skip;
  const char* end = data + head_end - 2;  // the final CRLF
  const char* eol = static_cast<const char*>(std::memchr(p, '\r', end - p));
  if (auto r = parse_request_line({p, static_cast<size_t>(eol - p)}, out);
      r.kind != ParseResult::complete)
    return r;
  if (eol[1] != '\n') return fail(400, "bare CR");

  FramingFields framing;
  for (p = eol + 2; p < end; p = eol + 2) {
    std::string_view name, value;
    if (!split_field_line(data + (p - data), data + size, eol, name, value))
      return field_line_error(p, end);
    out.headers.push_back({name, value});
    if (auto r = note_field(name, value, out, framing); r.kind != ParseResult::complete) return r;
  }
  return decide_framing(out, framing);
}

}  // namespace

bool iequals_same_size(const char* a, const char* b, size_t size) {
  for (size_t i = 0; i < size; ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split_list(std::string_view value, char separator) {
  std::vector<std::string_view> out;
  for (;;) {
    auto at = value.find(separator);
    out.push_back(trim_ows(value.substr(0, at)));
    if (at == std::string_view::npos) return out;
    value.remove_prefix(at + 1);
  }
}

bool list_has_token(std::string_view value, std::string_view token) {
  bool found = false;
  for_each_list_item(value, [&](std::string_view item) { found = found || iequals(item, token); });
  return found;
}

bool is_token(std::string_view s) {
  bool all = !s.empty();  // no early exit: names are short, and this loop unrolls
  for (char c : s) all &= kTchar[byte(c)];
  return all;
}

ParseResult parse_request(char* data, size_t size, const Limits& limits, RequestHead& out,
                          ScanState& scan) {
  const size_t skip = skip_empty_lines(data, size, scan);
  if (parse_whole_head(data, size, skip, limits, out)) return kComplete;
  return parse_checked(data, size, skip, limits, out, scan);
}

ParseResult parse_request_checked(char* data, size_t size, const Limits& limits, RequestHead& out,
                                  ScanState& scan) {
  return parse_checked(data, size, skip_empty_lines(data, size, scan), limits, out, scan);
}

ChunkedDecoder::Step ChunkedDecoder::step(const char* data, size_t size) {
  constexpr size_t kExtensionLimit = 4096;
  Step st;
  auto fail = [&](int status) {
    st.error_status = status;
    return st;
  };
  size_t i = 0;
  while (i < size) {
    char c = data[i];
    switch (state_) {
      case State::size: {
        int digit = (c >= '0' && c <= '9')   ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                             : -1;
        if (digit >= 0) {
          if (++size_digits_ > 15) return fail(400);  // over 2^60: no real body is that big
          remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(digit);
        } else if (size_digits_ > 0 && c == ';') {
          state_ = State::extension;
        } else if (size_digits_ > 0 && c == '\r') {
          state_ = State::size_lf;
        } else {
          return fail(400);
        }
        ++i;
        break;
      }
      case State::extension:
        if (c == '\r')
          state_ = State::size_lf;
        else if (c == '\n' || c == '\0' || ++extension_bytes_ > kExtensionLimit)
          return fail(400);
        ++i;
        break;
      case State::size_lf:
        if (c != '\n') return fail(400);
        ++i;
        state_ = remaining_ ? State::data : State::trailer_line_start;
        break;
      case State::data: {
        size_t n = static_cast<size_t>(std::min<std::uint64_t>(remaining_, size - i));
        st.data = std::string_view(data + i, n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::data_cr;
        st.consumed = i + n;
        return st;
      }
      case State::data_cr:
        if (c != '\r') return fail(400);
        state_ = State::data_lf;
        ++i;
        break;
      case State::data_lf:
        if (c != '\n') return fail(400);
        state_ = State::size;
        size_digits_ = 0;
        extension_bytes_ = 0;
        ++i;
        break;
      case State::trailer_line_start:
        if (c == '\r') {
          state_ = State::final_lf;
          ++i;
          break;
        }
        if (c == ' ' || c == '\t') return fail(400);  // obs-fold
        state_ = State::trailer_line;
        [[fallthrough]];
      case State::trailer_line:
        if (c == '\r')
          state_ = State::trailer_lf;
        else if (!kValueChar[static_cast<unsigned char>(c)])
          return fail(400);
        if (++trailer_bytes_ > trailer_limit_) return fail(431);
        ++i;
        break;
      case State::trailer_lf:
        if (c != '\n') return fail(400);
        state_ = State::trailer_line_start;
        ++i;
        break;
      case State::final_lf:
        if (c != '\n') return fail(400);
        state_ = State::done;
        st.consumed = i + 1;
        st.done = true;
        return st;
      case State::done:
        st.consumed = i;
        st.done = true;
        return st;
    }
  }
  st.consumed = i;
  st.done = state_ == State::done;
  return st;
}

bool percent_decode(std::string_view raw, std::string& out) {
  out.clear();
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '%') {
      out.push_back(raw[i]);
      continue;
    }
    if (i + 2 >= raw.size()) return false;
    auto hex = [](char c) {
      return (c >= '0' && c <= '9')   ? c - '0'
             : (c >= 'a' && c <= 'f') ? c - 'a' + 10
             : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                      : -1;
    };
    int hi = hex(raw[i + 1]), lo = hex(raw[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

}  // namespace tricorn::http1
