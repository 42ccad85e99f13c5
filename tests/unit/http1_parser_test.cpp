// The parser against the request corpus in tests/data/requests: every valid request
// parses to what its .expect file says, whether it arrives whole or a byte at a time;
// every invalid one fails with the status its file name starts with.
#include "worker/http1/parser.hpp"

#include "tests/common/parse_dump.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

namespace fs = std::filesystem;
using namespace tricorn::http1;

namespace {

const fs::path kCorpus = fs::path(TRICORN_TEST_DATA) / "requests";

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string describe(const RequestHead& h) {
  std::ostringstream o;
  o << "method=" << h.method << "\npath=" << h.path << "\nquery=" << h.query
    << "\nversion=" << h.version_minor << "\nbody=";
  switch (h.body) {
    case BodyKind::none: o << "none"; break;
    case BodyKind::length: o << "length:" << h.content_length; break;
    case BodyKind::chunked: o << "chunked"; break;
  }
  o << "\nkeep_alive=" << h.keep_alive << "\nheaders=" << h.headers.size() << "\n";
  return o.str();
}

// Feeds `data` growing by `step` bytes per call, as reads from a socket would.
ParseResult parse_incrementally(std::string& data, size_t step, RequestHead& head) {
  ScanState scan;
  ParseResult r{ParseResult::incomplete, 0, {}};
  for (size_t n = std::min(step, data.size());; n = std::min(n + step, data.size())) {
    r = parse_request(data.data(), n, Limits{}, head, scan);
    if (r.kind != ParseResult::incomplete || n == data.size()) return r;
  }
}

}  // namespace

TEST_CASE("valid requests parse as expected, whole and byte by byte") {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(kCorpus / "valid")) {
    if (entry.path().extension() != ".http") continue;
    ++count;
    auto expected = read_file(fs::path(entry.path()).replace_extension(".expect"));
    for (size_t step : {size_t(1), size_t(7), size_t(1 << 20)}) {
      CAPTURE(entry.path().filename().string());
      CAPTURE(step);
      auto data = read_file(entry.path());
      RequestHead head;
      auto r = parse_incrementally(data, step, head);
      REQUIRE(r.kind == ParseResult::complete);
      CHECK(describe(head) == expected);
    }
  }
  CHECK(count == 15);
}

TEST_CASE("invalid requests fail with the status in their name") {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(kCorpus / "invalid")) {
    ++count;
    const auto name = entry.path().filename().string();
    const int status = std::stoi(name.substr(0, 3));
    for (size_t step : {size_t(1), size_t(1 << 20)}) {
      CAPTURE(name);
      CAPTURE(step);
      auto data = read_file(entry.path());
      RequestHead head;
      auto r = parse_incrementally(data, step, head);
      REQUIRE(r.kind == ParseResult::error);
      CHECK(r.status == status);
    }
  }
  CHECK(count == 43);
}

TEST_CASE("header names are lower-cased in place and values trimmed") {
  std::string data = "GET / HTTP/1.1\r\nHOST: x\r\nX-Mixed-Case:  v  \r\n\r\n";
  RequestHead head;
  ScanState scan;
  auto r = parse_request(data.data(), data.size(), Limits{}, head, scan);
  REQUIRE(r.kind == ParseResult::complete);
  REQUIRE(head.headers.size() == 2);
  CHECK(head.headers[0].name == "host");
  CHECK(head.headers[1].name == "x-mixed-case");
  CHECK(head.headers[1].value == "v");
  CHECK(head.head_size == data.size());
}

TEST_CASE("limits are configurable and checked before the head is complete") {
  Limits small{64, 2, 100};
  RequestHead head;
  ScanState scan;
  std::string line = "GET /" + std::string(100, 'a');  // no end of line yet
  auto r = parse_request(line.data(), line.size(), small, head, scan);
  CHECK(r.kind == ParseResult::error);
  CHECK(r.status == 414);

  std::string fields = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n";
  scan = {};
  r = parse_request(fields.data(), fields.size(), small, head, scan);
  CHECK(r.kind == ParseResult::error);
  CHECK(r.status == 431);
}

namespace {

// Both parses of one input, each on its own copy (names are lower-cased in place).
void check_paths_agree(const std::string& input, const Limits& limits) {
  std::string a = input, b = input;
  RequestHead ha, hb;
  ScanState sa, sb;
  auto ra = parse_request(a.data(), a.size(), limits, ha, sa);
  auto rb = parse_request_checked(b.data(), b.size(), limits, hb, sb);
  CAPTURE(input);
  REQUIRE(testing::dump_parse(ra, ha, a.data()) == testing::dump_parse(rb, hb, b.data()));
}

std::vector<std::string> corpus_inputs() {
  std::vector<std::string> inputs;
  for (const char* dir : {"valid", "invalid"})
    for (const auto& entry : fs::directory_iterator(kCorpus / dir))
      if (entry.path().extension() == ".http" || std::string(dir) == "invalid")
        inputs.push_back(read_file(entry.path()));
  return inputs;
}

}  // namespace

// parse_request takes a one-pass path for a whole head at the end of the buffer; it must
// decide everything exactly as the checked path does. Every corpus request, pipelined
// after itself, cut short, and with each byte replaced by each byte that matters to the
// grammar, under the default limits and under limits each input comes near.
TEST_CASE("the one-pass path for whole heads agrees with the checked path") {
  const std::string kBytes{'\0', '\t', '\n', '\r', ' ', '"', '(',    ',',    '/',
                           ':',  ';',  '?',  'A',  'a', '~', '\x7f', '\x80', '\xff'};
  const Limits tight{24, 3, 24};
  size_t compared = 0;
  for (const auto& input : corpus_inputs()) {
    for (const Limits& limits : {Limits{}, tight}) {
      check_paths_agree(input, limits);
      check_paths_agree(input + input, limits);
      check_paths_agree("\r\n\r\n" + input, limits);
      for (size_t cut = 1; cut < input.size(); cut += 5)
        check_paths_agree(input.substr(0, input.size() - cut), limits);
      for (size_t at = 0; at < input.size(); ++at)
        for (char c : kBytes) {
          std::string mutated = input;
          mutated[at] = c;
          check_paths_agree(mutated, limits);
          ++compared;
        }
    }
  }
  CHECK(compared > 50'000);
}

TEST_CASE("field values are scanned 16 bytes at a time up to the first byte they cannot hold") {
  // Each forbidden byte at each offset of a long value, so that it falls in every lane of
  // the 16-byte scan and in the byte-at-a-time tail.
  for (char bad : {'\0', '\x01', '\x08', '\x0b', '\x1f', '\x7f', '\n'})
    for (size_t at = 0; at < 40; ++at) {
      std::string value(40, 'v');
      value[at] = bad;
      std::string data = "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + value + "\r\n\r\n";
      RequestHead head;
      ScanState scan;
      CAPTURE(at);
      CAPTURE(static_cast<int>(bad));
      auto r = parse_request(data.data(), data.size(), Limits{}, head, scan);
      CHECK(r.kind == ParseResult::error);
      CHECK(r.status == 400);
    }
  std::string value = "tab\there, obs-text \x80\xff, and every visible byte !~";
  std::string data = "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + value + "  \r\n\r\n";
  RequestHead head;
  ScanState scan;
  REQUIRE(parse_request(data.data(), data.size(), Limits{}, head, scan).kind ==
          ParseResult::complete);
  CHECK(head.headers[1].value == value);
}

namespace {

struct Decoded {
  std::string body;
  bool done = false;
  int error = 0;
};

Decoded decode_chunked(const std::string& wire, size_t step) {
  ChunkedDecoder d(64);
  Decoded out;
  size_t pos = 0;
  std::string pending;
  while (pos < wire.size() && !out.done && !out.error) {
    size_t n = std::min(step, wire.size() - pos);
    size_t used = 0;
    while (used < n) {
      auto st = d.step(wire.data() + pos + used, n - used);
      used += st.consumed;
      out.body.append(st.data);
      if (st.error_status) {
        out.error = st.error_status;
        break;
      }
      if (st.done) {
        out.done = true;
        break;
      }
      if (st.consumed == 0) break;
    }
    pos += n;
  }
  return out;
}

}  // namespace

TEST_CASE("chunked bodies decode whole and byte by byte") {
  const std::string wire =
      "5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
  for (size_t step : {size_t(1), size_t(3), size_t(1000)}) {
    CAPTURE(step);
    auto d = decode_chunked(wire, step);
    CHECK(d.error == 0);
    CHECK(d.done);
    CHECK(d.body == "hello world0123456789");
  }
}

TEST_CASE("malformed chunked framing is rejected") {
  struct Case {
    const char* wire;
    int status;
  } cases[] = {
      {"0x1\r\na\r\n0\r\n\r\n", 400},  // hex prefix
      {"+1\r\na\r\n0\r\n\r\n", 400},   // sign
      {"-1\r\na\r\n0\r\n\r\n", 400},
      {" 1\r\na\r\n0\r\n\r\n", 400},   // leading space
      {"1 \r\na\r\n0\r\n\r\n", 400},   // trailing space
      {"10000000000000000\r\n", 400},  // overflow
      {"1\na\r\n0\r\n\r\n", 400},      // bare LF after the size
      {"1\r\na\n0\r\n\r\n", 400},      // bare LF after the data
      {"1\r\nab\r\n0\r\n\r\n", 400},   // data longer than the size
      {"\r\n", 400},                   // no size
      {"0\r\nX: 1\n\r\n", 400},        // bare LF in a trailer
      {"0\r\n X: 1\r\n\r\n", 400},     // obs-fold in trailers
      {"0\r\nX: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n",
       431},
  };
  for (const auto& c : cases) {
    CAPTURE(c.wire);
    for (size_t step : {size_t(1), size_t(1000)}) {
      auto d = decode_chunked(c.wire, step);
      CHECK(d.error == c.status);
    }
  }
  // Extensions are bounded too.
  std::string long_ext = "1;" + std::string(5000, 'e') + "\r\na\r\n0\r\n\r\n";
  CHECK(decode_chunked(long_ext, 1000).error == 400);
}

TEST_CASE("percent-decoding") {
  std::string out;
  CHECK(percent_decode("/a%20b/%E2%82%AC", out));
  CHECK(out == "/a b/\xE2\x82\xAC");
  CHECK_FALSE(percent_decode("/a%2", out));
  CHECK_FALSE(percent_decode("/a%zz", out));
}
