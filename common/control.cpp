#include "common/control.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace tricorn::control {
namespace {
constexpr size_t kMaxMessage = 1024;
}

Pair make_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) < 0)
    throw std::system_error(errno, std::generic_category(), "socketpair");
  return {fds[0], fds[1]};
}

bool send(int fd, Type type, std::string_view text) {
  char buf[kMaxMessage];
  buf[0] = static_cast<char>(type);
  size_t n = std::min(text.size(), kMaxMessage - 1);
  if (n) std::memcpy(buf + 1, text.data(), n);  // an empty view may have a null data()
  ssize_t r;
  do r = ::send(fd, buf, n + 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r == static_cast<ssize_t>(n + 1);
}

std::optional<Message> receive(int fd, bool& eof) {
  char buf[kMaxMessage];
  ssize_t r;
  do r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  eof = r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  if (r <= 0) return std::nullopt;
  return Message{static_cast<Type>(buf[0]), std::string(buf + 1, static_cast<size_t>(r - 1))};
}

}  // namespace tricorn::control
