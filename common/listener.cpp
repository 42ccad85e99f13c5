#include "common/listener.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace tricorn {
namespace {

[[noreturn]] void fail(const std::string& bind, std::string_view what, int err = 0) {
  throw std::runtime_error(fmt::format("cannot listen on {}: {}{}{}", bind, what, err ? ": " : "",
                                       err ? std::strerror(err) : ""));
}

}  // namespace

PeerAddress address_of(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    // By hand: glibc's inet_ntop formats through vfprintf, a thousand instructions for
    // every connection. Into a local buffer first, so the string is made once, within
    // its inline capacity (15 characters is the longest IPv4 address).
    auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    const auto* b = reinterpret_cast<const unsigned char*>(&a.sin_addr);
    char* out = host;
    for (int i = 0; i < 4; ++i) {
      if (i) *out++ = '.';
      const unsigned v = b[i];
      if (v >= 100) *out++ = static_cast<char>('0' + v / 100);
      if (v >= 10) *out++ = static_cast<char>('0' + v / 10 % 10);
      *out++ = static_cast<char>('0' + v % 10);
    }
    return {std::string(host, out), ntohs(a.sin_port)};
  }
  if (ss.ss_family == AF_INET6) {
    auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return {host, ntohs(a.sin6_port)};
  }
  return {};
}

namespace {

Listener adopt_fd(const std::string& bind, std::string_view number) {
  int fd = -1;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), fd);
  if (ec != std::errc{} || end != number.data() + number.size() || fd < 0)
    fail(bind, "not a file descriptor number");
  int accepting = 0;
  socklen_t len = sizeof accepting;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0)
    fail(bind, "not a socket", errno);
  if (!accepting) fail(bind, "the socket is not listening");
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return {bind, fd, ss.ss_family, {}};
}

Listener open_unix(const std::string& bind, const std::string& path, const ListenOptions& o) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) fail(bind, "bad socket path");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(bind, "socket", errno);
  struct stat st {};
  // A stale socket file from a previous run would make bind fail; remove only sockets.
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  // Created with no permissions at all, then given its owner, then its mode: nobody
  // outside can connect before the socket has the access it was configured with.
  mode_t old_umask = ::umask(0777);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::umask(old_umask);
  const bool bound = rc == 0;
  const char* step = "bind";
  if (rc == 0 && (o.unix_uid != static_cast<uid_t>(-1) || o.unix_gid != static_cast<gid_t>(-1)))
    rc = ::chown(path.c_str(), o.unix_uid, o.unix_gid), err = errno, step = "chown";
  if (rc == 0)
    rc = ::chmod(path.c_str(), static_cast<mode_t>(o.unix_mode)), err = errno, step = "chmod";
  if (rc == 0) rc = ::listen(fd, o.backlog), err = errno, step = "listen";
  if (rc < 0) {
    ::close(fd);
    if (bound) ::unlink(path.c_str());  // ours: a half-set-up socket file
    fail(bind, step, err);
  }
  return {bind, fd, AF_UNIX, path};
}

Listener open_inet(const std::string& bind, int backlog) {
  std::string host, port;
  if (bind.starts_with('[')) {
    auto close = bind.find("]:");
    if (close == std::string::npos) fail(bind, "expected [IPV6]:PORT");
    host = bind.substr(1, close - 1);
    port = bind.substr(close + 2);
  } else {
    auto colon = bind.rfind(':');
    if (colon == std::string::npos) {
      host = bind;
      port = "8000";
    } else {
      host = bind.substr(0, colon);
      port = bind.substr(colon + 1);
    }
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res))
    fail(bind, gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(bind, "socket", errno);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (res->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, res->ai_addr, res->ai_addrlen) < 0 || ::listen(fd, backlog) < 0) {
    int err = errno;
    ::close(fd);
    fail(bind, "bind", err);
  }
  return {bind, fd, res->ai_family, {}};
}

}  // namespace

std::string Listener::name() const {
  if (family == AF_UNIX) return unix_path.empty() ? bind : "unix:" + unix_path;
  auto a = local_address(fd);
  return family == AF_INET6 ? fmt::format("[{}]:{}", a.host, a.port)
                            : fmt::format("{}:{}", a.host, a.port);
}

Listener open_listener(const std::string& bind, const ListenOptions& options) {
  if (bind.starts_with("fd://")) return adopt_fd(bind, std::string_view(bind).substr(5));
  if (bind.starts_with("unix:")) return open_unix(bind, bind.substr(5), options);
  return open_inet(bind, options.backlog);
}

void close_listener(Listener& l, bool remove_unix_path) {
  if (l.fd >= 0) ::close(l.fd);
  if (remove_unix_path && !l.unix_path.empty()) ::unlink(l.unix_path.c_str());
  l.fd = -1;
}

PeerAddress local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) < 0) return {};
  return address_of(ss);
}

}  // namespace tricorn
