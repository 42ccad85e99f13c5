// The master's control socket (control_socket): `tricorn status`, `tricorn reload` and
// `tricorn stop` connect to it, send one command line and read the answer. Served in
// the master's poll loop without blocking it, like the metrics endpoint. The socket is
// created 0600: only the master's user may control it.
#pragma once

#include <poll.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tricorn::supervisor {

class ControlServer {
 public:
  // Handles one command; returns the answer, or nothing to keep the client waiting
  // (a reload answers once it is done, a stop when the master exits).
  using Handler = std::function<std::optional<std::string>(std::string_view command, int client)>;
  ControlServer(std::string path, Handler handler);  // throws std::runtime_error
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  ~ControlServer();

  void add_to(std::vector<pollfd>& fds) const;
  void handle(const pollfd* fds);
  // Answers a client the handler kept waiting, and closes it (at the next handle(), so
  // it may be called from inside the handler).
  void answer(int client, std::string_view text);
  int fd() const { return fd_; }
  // In a forked worker: close every descriptor of this server (a client waiting for an
  // answer must see EOF when the master closes its end, not when workers exit).
  void close_in_child() const;
  // After a binary upgrade the new master serves at the same path: leave it alone.
  void keep_path() { keep_path_ = true; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Client {
    int fd;
    std::string in;
    bool waiting = false;              // the command is being carried out
    std::optional<std::string> reply;  // ready to be sent
    Clock::time_point deadline;
  };
  bool advance(Client& c, short revents);

  std::string path_;
  int fd_ = -1;
  bool keep_path_ = false;
  Handler handler_;
  std::vector<Client> clients_;
};

}  // namespace tricorn::supervisor
