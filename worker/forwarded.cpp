#include "worker/forwarded.hpp"

#include "worker/http1/parser.hpp"

#include <charconv>
#include <vector>

namespace tricorn::worker {
namespace {

using tricorn::http1::iequals;
using tricorn::http1::split_list;
using tricorn::http1::trim_ows;

std::string_view scheme_of(std::string_view proto) {
  if (iequals(proto, "https") || iequals(proto, "wss")) return "https";
  if (iequals(proto, "http") || iequals(proto, "ws")) return "http";
  return {};
}

// One hop's address, as X-Forwarded-For or Forwarded's for= write it:
// 192.0.2.1, "[2001:db8::1]:4711", 192.0.2.1:80. Ports are dropped (0) unless given.
Address parse_hop(std::string_view v) {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  Address a;
  if (v.starts_with('[')) {
    auto close = v.find(']');
    if (close == std::string_view::npos) return {};
    a.host = std::string(v.substr(1, close - 1));
    v.remove_prefix(close + 1);
  } else if (v.find(':') == v.rfind(':') && v.find(':') != std::string_view::npos) {
    a.host = std::string(v.substr(0, v.find(':')));  // IPv4 with a port
    v.remove_prefix(v.find(':'));
  } else {
    a.host = std::string(v);
    v = {};
  }
  if (v.starts_with(':')) std::from_chars(v.data() + 1, v.data() + v.size(), a.port);
  return a;
}

// The client is the nearest hop that is not one of our trusted proxies: walking from
// the right skips the proxies we trust, so a client cannot forge its address by
// sending its own X-Forwarded-For (it lands left of the one our proxy adds).
template <typename Hop>
const Hop* pick_client(const std::vector<Hop>& hops, const Networks& trusted,
                       std::string_view (*host_of)(const Hop&)) {
  if (hops.empty()) return nullptr;
  for (auto it = hops.rbegin(); it != hops.rend(); ++it)
    if (!trusted.contains(host_of(*it))) return &*it;
  return &hops.front();
}

struct ForwardedElement {
  Address client;
  std::string_view proto;
};

}  // namespace

bool apply_forwarded(Scope& scope, const Networks& trusted) {
  // The three fields in one pass (the first of each name counts, as Scope::header
  // finds it): most requests carry none, and this runs for every request of a trusted
  // peer.
  const std::string_view *forwarded = nullptr, *xff = nullptr, *proto = nullptr;
  for (const auto& h : scope.headers) {
    if (h.name.size() < 9 || (h.name[0] != 'f' && h.name[0] != 'x')) continue;
    if (!forwarded && h.name == "forwarded") forwarded = &h.value;
    if (!xff && h.name == "x-forwarded-for") xff = &h.value;
    if (!proto && h.name == "x-forwarded-proto") proto = &h.value;
  }
  bool rewrote = false;
  if (forwarded && !forwarded->empty()) {
    std::vector<ForwardedElement> hops;
    for (auto element : split_list(*forwarded)) {
      ForwardedElement e;
      for (auto pair : split_list(element, ';')) {
        auto eq = pair.find('=');
        if (eq == std::string_view::npos) continue;
        auto name = trim_ows(pair.substr(0, eq));
        auto value = trim_ows(pair.substr(eq + 1));
        if (iequals(name, "for")) e.client = parse_hop(value);
        if (iequals(name, "proto")) e.proto = value;
      }
      hops.push_back(std::move(e));
    }
    auto host_of = +[](const ForwardedElement& e) -> std::string_view { return e.client.host; };
    if (const auto* hop = pick_client(hops, trusted, host_of)) {
      if (!hop->client.host.empty()) {
        scope.client = hop->client;
        rewrote = true;
      }
      if (auto s = scheme_of(hop->proto); !s.empty()) scope.scheme = s;
    }
    return rewrote;
  }
  if (xff && !xff->empty()) {
    std::vector<Address> hops;
    for (auto item : split_list(*xff))
      if (!item.empty()) hops.push_back(parse_hop(item));
    auto host_of = +[](const Address& a) -> std::string_view { return a.host; };
    if (const auto* hop = pick_client(hops, trusted, host_of); hop && !hop->host.empty()) {
      scope.client = *hop;
      rewrote = true;
    }
  }
  if (proto && !proto->empty())
    if (auto s = scheme_of(split_list(*proto).front()); !s.empty()) scope.scheme = s;
  return rewrote;
}

}  // namespace tricorn::worker
