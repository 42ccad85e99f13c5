// Listening sockets. The master opens them once (or adopts inherited ones) and keeps
// them for its whole life; workers inherit them through fork().
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace tricorn {

struct Listener {
  std::string bind;  // as configured: "127.0.0.1:8000", "unix:/run/x.sock", "fd://3"
  int fd = -1;
  int family = 0;            // AF_INET, AF_INET6 or AF_UNIX
  std::string unix_path;     // for unix sockets tricorn created, removed at exit
  std::string name() const;  // the bound address, with the real port for ":0"
};

// How tricorn creates sockets. The unix socket file gets `unix_mode` and, when set,
// the owner; it is never accessible with a wider mode, even for a moment.
struct ListenOptions {
  int backlog = 2048;
  int unix_mode = 0666;
  uid_t unix_uid = static_cast<uid_t>(-1);  // -1: leave as created
  gid_t unix_gid = static_cast<gid_t>(-1);
};

// Opens (or adopts, for fd://N) the socket for one bind. Throws std::runtime_error
// naming the bind and the reason.
Listener open_listener(const std::string& bind, const ListenOptions& options);
void close_listener(Listener& listener, bool remove_unix_path);

// "host:port" of a socket address (peer or local); empty for unix sockets.
struct PeerAddress {
  std::string host;
  unsigned short port = 0;
};
PeerAddress local_address(int fd);
PeerAddress address_of(const sockaddr_storage& address);

}  // namespace tricorn
