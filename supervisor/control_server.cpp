#include "supervisor/control_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tricorn::supervisor {
namespace {

using namespace std::chrono_literals;
constexpr size_t kMaxClients = 16;
constexpr auto kCommandDeadline = 5s;  // to send the command line

void send_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // answers are small; a client that does not read loses them
    text.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

ControlServer::ControlServer(std::string path, Handler handler)
    : path_(std::move(path)), handler_(std::move(handler)) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path)
    throw std::runtime_error("control_socket path too long: " + path_);
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path_.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  mode_t old = ::umask(0177);
  int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::umask(old);
  if (rc < 0 || ::listen(fd_, 16) < 0) {
    ::close(fd_);
    throw std::runtime_error(fmt::format("cannot open control_socket {}: {}", path_,
                                         std::strerror(rc < 0 ? err : errno)));
  }
}

ControlServer::~ControlServer() {
  for (auto& c : clients_) {
    if (c.reply) send_all(c.fd, *c.reply);
    ::close(c.fd);
  }
  ::close(fd_);
  if (!keep_path_) ::unlink(path_.c_str());
}

void ControlServer::add_to(std::vector<pollfd>& fds) const {
  fds.push_back({clients_.size() < kMaxClients ? fd_ : -1, POLLIN, 0});
  for (const auto& c : clients_)
    fds.push_back({c.fd, static_cast<short>(c.waiting ? 0 : POLLIN), 0});
}

void ControlServer::handle(const pollfd* fds) {
  const size_t before = clients_.size();
  const auto now = Clock::now();
  for (size_t i = 0; i < before; ++i) {
    auto& c = clients_[i];
    if (c.reply) send_all(c.fd, *c.reply);
    if (c.reply || (!c.waiting && now > c.deadline) || !advance(c, fds[i + 1].revents)) {
      ::close(c.fd);
      c.fd = -1;
    }
  }
  std::erase_if(clients_, [](const Client& c) { return c.fd < 0; });
  if (fds[0].revents & POLLIN)
    while (clients_.size() < kMaxClients) {
      int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      clients_.push_back({fd, {}, false, std::nullopt, Clock::now() + kCommandDeadline});
    }
}

bool ControlServer::advance(Client& c, short revents) {
  if (c.waiting || !revents) return true;
  char buf[512];
  ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
  if (n > 0) c.in.append(buf, static_cast<size_t>(n));
  auto nl = c.in.find('\n');
  if (nl == std::string::npos) return c.in.size() < 256;
  c.waiting = true;
  auto reply = handler_(std::string_view(c.in).substr(0, nl), c.fd);
  if (!reply) return true;  // answered later through answer()
  send_all(c.fd, *reply);
  return false;
}

void ControlServer::close_in_child() const {
  for (const auto& c : clients_) ::close(c.fd);
  ::close(fd_);
}

void ControlServer::answer(int client, std::string_view text) {
  for (auto& c : clients_)
    if (c.fd == client) c.reply = std::string(text);
}

}  // namespace tricorn::supervisor
