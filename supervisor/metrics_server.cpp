#include "supervisor/metrics_server.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>

namespace tricorn::supervisor {
namespace {

using namespace std::chrono_literals;
constexpr size_t kMaxScrapes = 16;
constexpr size_t kMaxRequest = 8192;
constexpr auto kScrapeDeadline = 5s;

std::string response(int status, std::string_view reason, std::string_view type,
                     std::string_view body) {
  return fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      status, reason, type, body.size(), body);
}

}  // namespace

MetricsServer::MetricsServer(Listener listener, Render render)
    : listener_(std::move(listener)), render_(std::move(render)) {}

MetricsServer::~MetricsServer() {
  for (auto& s : scrapes_) ::close(s.fd);
  close_listener(listener_, !keep_path_);
}

void MetricsServer::add_to(std::vector<pollfd>& fds) const {
  fds.push_back({scrapes_.size() < kMaxScrapes ? listener_.fd : -1, POLLIN, 0});
  for (const auto& s : scrapes_)
    fds.push_back({s.fd, static_cast<short>(s.out.empty() ? POLLIN : POLLOUT), 0});
}

void MetricsServer::handle(const pollfd* fds) {
  const auto now = Clock::now();
  std::vector<Scrape> kept;
  for (size_t i = 0; i < scrapes_.size(); ++i) {
    auto& s = scrapes_[i];
    if (now < s.deadline && advance(s, fds[i + 1].revents))
      kept.push_back(std::move(s));
    else
      ::close(s.fd);
  }
  scrapes_ = std::move(kept);
  if (fds[0].revents & POLLIN) accept_scrapes();
}

void MetricsServer::close_in_child() const {
  for (const auto& s : scrapes_) ::close(s.fd);
  ::close(listener_.fd);
}

void MetricsServer::accept_scrapes() {
  while (scrapes_.size() < kMaxScrapes) {
    int fd = ::accept4(listener_.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    scrapes_.push_back({fd, {}, {}, 0, Clock::now() + kScrapeDeadline});
  }
}

bool MetricsServer::advance(Scrape& s, short revents) {
  if (!revents) return true;
  if (s.out.empty()) {
    char buf[2048];
    ssize_t n = ::recv(s.fd, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return false;
    if (n > 0) s.in.append(buf, static_cast<size_t>(n));
    if (s.in.find("\r\n\r\n") == std::string::npos) {
      if (s.in.size() <= kMaxRequest) return true;
      s.out = response(431, "Request Header Fields Too Large", "text/plain", "too large\n");
    } else {
      answer(s);
    }
  }
  while (s.sent < s.out.size()) {
    ssize_t n = ::send(s.fd, s.out.data() + s.sent, s.out.size() - s.sent, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    if (n <= 0) return false;
    s.sent += static_cast<size_t>(n);
  }
  ::shutdown(s.fd, SHUT_WR);
  return false;
}

void MetricsServer::answer(Scrape& s) {
  std::string_view line(s.in.data(), s.in.find("\r\n"));
  const bool get = line.starts_with("GET "), head = line.starts_with("HEAD ");
  auto target = line.substr(line.find(' ') + 1);
  target = target.substr(0, target.find(' '));
  if (!get && !head)
    s.out = response(405, "Method Not Allowed", "text/plain", "GET /metrics\n");
  else if (target != "/metrics" && !target.starts_with("/metrics?"))
    s.out = response(404, "Not Found", "text/plain", "GET /metrics\n");
  else
    s.out = response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", render_());
  if (head) s.out.erase(s.out.find("\r\n\r\n") + 4);
}

}  // namespace tricorn::supervisor
