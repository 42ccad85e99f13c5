// Behind a proxy: from a trusted peer (forwarded_allow_ips), `Forwarded` (RFC 7239) or
// else `X-Forwarded-For` and `X-Forwarded-Proto` set the scope's client and scheme, as
// Uvicorn's proxy headers do. From any other peer they are left alone (an app still
// sees them among the headers).
#pragma once

#include "common/networks.hpp"

#include <tricorn/app.hpp>

namespace tricorn::worker {

// Is the connection's peer one whose forwarding headers count? Unix-socket peers (no
// host) are, as in Gunicorn. Computed once per connection.
inline bool trusts_forwarding(const Networks& trusted, std::string_view peer_host) {
  return peer_host.empty() || trusted.contains(peer_host);
}

// For a trusted peer: rewrites `scope.client` (the peer, on entry) and `scope.scheme`.
// Returns whether it rewrote the client.
bool apply_forwarded(Scope& scope, const Networks& trusted);

}  // namespace tricorn::worker
