#include "worker/access_log.hpp"

#include "common/log.hpp"

#include <fmt/format.h>

#include <unistd.h>

#include <ctime>

namespace tricorn::worker {
namespace {

using std::chrono::duration_cast;

std::string_view or_dash(std::string_view v) {
  return v.empty() ? "-" : v;
}

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f)
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
        else
          out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

std::string local_time(const char* format) {
  char stamp[64];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  return std::string(stamp, std::strftime(stamp, sizeof stamp, format, &tm));
}

std::string json_line(const RequestRecord& r) {
  const auto& s = r.scope;
  std::string out = "{\"time\":";
  append_json_string(out, local_time("%Y-%m-%dT%H:%M:%S%z"));
  out += ",\"remote_addr\":";
  append_json_string(out, s.client.host);
  out += ",\"method\":";
  append_json_string(out, s.method);
  out += ",\"path\":";
  append_json_string(out, s.raw_path);
  out += ",\"query\":";
  append_json_string(out, s.query_string);
  out += ",\"protocol\":";
  append_json_string(out, r.protocol);
  fmt::format_to(std::back_inserter(out), ",\"status\":{},\"bytes\":{},\"duration_us\":{}",
                 r.status, r.body_bytes,
                 duration_cast<std::chrono::microseconds>(r.elapsed).count());
  out += ",\"referer\":";
  append_json_string(out, s.header("referer"));
  out += ",\"user_agent\":";
  append_json_string(out, s.header("user-agent"));
  fmt::format_to(std::back_inserter(out), ",\"pid\":{}}}", ::getpid());
  return out;
}

// Gunicorn's atoms: h l u t r m U q H s B b f a T M D L p, and {name}i for a request
// header. Unknown atoms print "-".
void append_atom(std::string& line, std::string_view atom, const RequestRecord& r) {
  const auto& s = r.scope;
  const auto us = duration_cast<std::chrono::microseconds>(r.elapsed).count();
  if (atom.size() > 3 && atom.front() == '{' && atom.ends_with("}i")) {
    std::string name(atom.substr(1, atom.size() - 3));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    line += or_dash(s.header(name));
    return;
  }
  if (atom.size() != 1) {
    line += "-";
    return;
  }
  auto out = std::back_inserter(line);
  switch (atom[0]) {
    case 'h': line += or_dash(s.client.host); break;
    case 'l':
    case 'u': line += "-"; break;
    case 't': line += local_time("[%d/%b/%Y:%H:%M:%S %z]"); break;
    case 'r': fmt::format_to(out, "{} {} {}", s.method, r.target, r.protocol); break;
    case 'm': line += s.method; break;
    case 'U': line += s.raw_path; break;
    case 'q': line += s.query_string; break;
    case 'H': line += r.protocol; break;
    case 's': fmt::format_to(out, "{}", r.status); break;
    case 'B':
    case 'b': fmt::format_to(out, "{}", r.body_bytes); break;
    case 'f': line += or_dash(s.header("referer")); break;
    case 'a': line += or_dash(s.header("user-agent")); break;
    case 'T': fmt::format_to(out, "{}", us / 1000000); break;
    case 'M': fmt::format_to(out, "{}", us / 1000); break;
    case 'D': fmt::format_to(out, "{}", us); break;
    case 'L': fmt::format_to(out, "{:.6f}", static_cast<double>(us) / 1e6); break;
    case 'p': fmt::format_to(out, "<{}>", ::getpid()); break;
    default: line += "-";
  }
}

}  // namespace

void write_access_log(const config::Config& config, const RequestRecord& r) {
  if (config.access_log_json) {
    log::access(json_line(r));
    return;
  }
  std::string line;
  const std::string& format = config.access_log_format;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format.compare(i, 2, "%(") == 0) {
      auto close = format.find(")s", i);
      if (close != std::string::npos) {
        append_atom(line, std::string_view(format).substr(i + 2, close - i - 2), r);
        i = close + 1;
        continue;
      }
    }
    line += format[i];
  }
  log::access(line);
}

}  // namespace tricorn::worker
