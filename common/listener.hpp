// Listening sockets. The master opens them once (or adopts inherited ones) and keeps
// them for its whole life; workers inherit them through fork().
#pragma once

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

// Opens (or adopts, for fd://N) the socket for one bind. Throws std::runtime_error
// naming the bind and the reason.
Listener open_listener(const std::string& bind, int backlog);
void close_listener(Listener& listener, bool remove_unix_path);

// "host:port" of a socket address (peer or local); empty for unix sockets.
struct PeerAddress {
  std::string host;
  unsigned short port = 0;
};
PeerAddress local_address(int fd);
PeerAddress peer_address(int fd);

}  // namespace tricorn
