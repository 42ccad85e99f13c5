// libFuzzer target: the HTTP/1.1 request parser and the chunked body decoder, fed
// arbitrary bytes whole and split at a point the input chooses (the parser is
// incremental, and a split must not change what it decides), and the parser's one-pass
// path for whole heads held to the checked path's answer, field by field.
#include "worker/http1/parser.hpp"

#include "tests/common/parse_dump.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace tricorn::http1;

namespace {

const Limits kLimits{256, 16, 512};

ParseResult parse(std::vector<char>& buf, size_t split, RequestHead& head) {
  ScanState scan;
  head.clear();
  auto r = parse_request(buf.data(), split, kLimits, head, scan);
  if (r.kind != ParseResult::incomplete) return r;
  head.clear();
  return parse_request(buf.data(), buf.size(), kLimits, head, scan);
}

void decode_body(const char* data, size_t size) {
  ChunkedDecoder decoder(256);
  while (size > 0) {
    auto step = decoder.step(data, size);
    if (step.consumed > size) std::abort();
    if (step.error_status || step.done || step.consumed == 0) return;
    data += step.consumed;
    size -= step.consumed;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t split = data[0] % (size);
  std::vector<char> whole(data + 1, data + size), pieces = whole;
  RequestHead a, b;
  auto ra = parse(whole, 0, a);
  auto rb = parse(pieces, std::min(split, pieces.size()), b);
  // Byte by byte or at once, the same verdict.
  if (ra.kind != rb.kind || ra.status != rb.status) std::abort();
  if (ra.kind == ParseResult::complete) {
    if (a.head_size > whole.size() || a.head_size != b.head_size) std::abort();
    if (a.body == BodyKind::chunked)
      decode_body(whole.data() + a.head_size, whole.size() - a.head_size);
  }
  std::vector<char> fast(data + 1, data + size), checked = fast;
  RequestHead hf, hc;
  ScanState sf, sc;
  const auto rf = parse_request(fast.data(), fast.size(), kLimits, hf, sf);
  const auto rc = parse_request_checked(checked.data(), checked.size(), kLimits, hc, sc);
  using tricorn::http1::testing::dump_parse;
  if (dump_parse(rf, hf, fast.data()) != dump_parse(rc, hc, checked.data())) std::abort();
  return 0;
}
