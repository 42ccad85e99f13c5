// The master's Prometheus endpoint (metrics_bind): a small HTTP/1.1 server inside the
// master's poll loop. Every scrape is one connection with a bounded request and a
// deadline, served without blocking the loop: a stuck scraper cannot delay signals.
#pragma once

#include "common/listener.hpp"

#include <poll.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace tricorn::supervisor {

class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  MetricsServer(Listener listener, Render render);
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer();

  // The loop adds these to its poll set, then hands back what poll returned for them.
  void add_to(std::vector<pollfd>& fds) const;
  void handle(const pollfd* fds);  // this server's entries, in add_to's order
  const Listener& listener() const { return listener_; }
  void close_in_child() const;  // in a forked worker: close every descriptor of this server
  // After a binary upgrade the new master serves on this socket: keep a unix path.
  void keep_path() { keep_path_ = true; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Scrape {
    int fd;
    std::string in;
    std::string out;
    size_t sent = 0;
    Clock::time_point deadline;
  };
  void accept_scrapes();
  bool advance(Scrape& s, short revents);  // false: done with it
  void answer(Scrape& s);

  Listener listener_;
  Render render_;
  bool keep_path_ = false;
  std::vector<Scrape> scrapes_;
};

}  // namespace tricorn::supervisor
