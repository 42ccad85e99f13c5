// What a parse of an HTTP/1.1 head decided, as text: the verdict and, for a whole head,
// every field with the offset of each view into the buffer. Two parses of copies of one
// input agree exactly when their dumps are equal. Shared by the parser's unit tests and
// its fuzz target, which hold parse_request and parse_request_checked to one answer.
#pragma once

#include "worker/http1/parser.hpp"

#include <string>

namespace tricorn::http1::testing {

inline std::string dump_parse(const ParseResult& r, const RequestHead& h, const char* base) {
  std::string out = std::to_string(static_cast<int>(r.kind)) + " " + std::to_string(r.status) +
                    " " + std::string(r.reason) + "\n";
  if (r.kind != ParseResult::complete) return out;
  auto view = [&](std::string_view v) {
    if (v.data() == nullptr) return std::string("null");
    // A view outside the head is a constant (the path "/" of an absolute-form target).
    if (v.data() < base || v.data() >= base + h.head_size) return "const:" + std::string(v);
    return "@" + std::to_string(v.data() - base) + ":" + std::string(v);
  };
  out += "method " + view(h.method) + "\ntarget " + view(h.target) + "\npath " + view(h.path) +
         "\nquery " + view(h.query) + "\nversion 1." + std::to_string(h.version_minor) + "\nbody " +
         std::to_string(static_cast<int>(h.body)) + " " + std::to_string(h.content_length) +
         "\nkeep_alive " + std::to_string(h.keep_alive) + "\nexpect_continue " +
         std::to_string(h.expect_continue) + "\nhost " + view(h.host) + "\nupgrade " +
         view(h.upgrade) + "\nhead_size " + std::to_string(h.head_size) + "\n";
  for (const auto& f : h.headers) out += "field " + view(f.name) + " = " + view(f.value) + "\n";
  return out;
}

}  // namespace tricorn::http1::testing
