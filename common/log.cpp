#include "common/log.hpp"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace tricorn::log {
namespace {

// A log destination. Process-wide by nature (it is the process's stderr or a file),
// so it lives here rather than being threaded through every call.
struct Sink {
  std::string target;
  int fd = -1;
  bool owned = false;

  void open(const std::string& t, int standard_fd) {
    close_owned();
    target = t;
    if (t.empty()) {
      fd = -1;
    } else if (t == "-") {
      fd = standard_fd;
    } else {
      fd = ::open(t.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
      owned = fd >= 0;
      if (fd < 0) fd = STDERR_FILENO;
    }
  }
  void close_owned() {
    if (owned) ::close(fd);
    owned = false;
  }
  void write_line(std::string_view a, std::string_view b) const {
    if (fd < 0) return;
    iovec iov[3] = {{const_cast<char*>(a.data()), a.size()},
                    {const_cast<char*>(b.data()), b.size()},
                    {const_cast<char*>("\n"), 1}};
    while (::writev(fd, iov, 3) < 0 && errno == EINTR) {
    }
  }
};

Sink g_error{"-", STDERR_FILENO, false};
Sink g_access;
LogLevel g_level = LogLevel::info;
int g_standard_error = STDERR_FILENO;

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "DEBUG";
    case LogLevel::info: return "INFO";
    case LogLevel::warning: return "WARNING";
    case LogLevel::error: return "ERROR";
    case LogLevel::critical: return "CRITICAL";
  }
  return "?";
}

}  // namespace

void configure(const std::string& target, LogLevel level) {
  g_error.open(target, g_standard_error);
  g_level = level;
}

void reopen() {
  g_error.open(std::string(g_error.target), g_standard_error);
  g_access.open(std::string(g_access.target), STDOUT_FILENO);
}

bool enabled(LogLevel level) {
  return level >= g_level;
}

void write(LogLevel level, std::string_view message) {
  char stamp[64];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  size_t n = std::strftime(stamp, sizeof stamp, "[%Y-%m-%d %H:%M:%S %z]", &tm);
  auto prefix =
      fmt::format("{} [{}] [{}] ", std::string_view(stamp, n), ::getpid(), level_name(level));
  g_error.write_line(prefix, message);
}

void configure_access(const std::string& target) {
  g_access.open(target, STDOUT_FILENO);
}
bool access_enabled() {
  return g_access.fd >= 0;
}
void access(std::string_view line) {
  g_access.write_line(line, {});
}

}  // namespace tricorn::log
