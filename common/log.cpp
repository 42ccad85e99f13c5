#include "common/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <thread>

namespace tricorn::log {
namespace {

using namespace std::chrono_literals;

void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a log that cannot be written is not worth stopping for
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// Whole lines, at most PIPE_BUF bytes per write where lines allow: other processes
// write to the same pipe or journal stream, and their lines must not land inside ours.
void write_lines(int fd, std::string_view data) {
  constexpr size_t kAtomic = 4096;
  while (!data.empty()) {
    size_t n = data.size();
    if (n > kAtomic) {
      auto cut = data.rfind('\n', kAtomic - 1);
      n = cut == std::string_view::npos ? data.find('\n') : cut + 1;
      if (n == std::string_view::npos) n = data.size();
    }
    write_all(fd, data.substr(0, n));
    data.remove_prefix(n);
  }
}

// A log destination. Process-wide by nature (it is the process's stderr or a file),
// so it lives here rather than being threaded through every call.
struct Sink {
  std::string target;
  int fd = -1;
  bool owned = false;
  std::string pending;  // lines for the background writer

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
  void write_now(std::string_view a, std::string_view b) const {
    if (fd < 0) return;
    iovec iov[3] = {{const_cast<char*>(a.data()), a.size()},
                    {const_cast<char*>(b.data()), b.size()},
                    {const_cast<char*>("\n"), 1}};
    while (::writev(fd, iov, 3) < 0 && errno == EINTR) {
    }
  }
};

Sink g_error{"-", STDERR_FILENO, false, {}};
Sink g_access;
LogLevel g_level = LogLevel::info;
int g_standard_error = STDERR_FILENO;
bool g_journal = false;  // stderr is the systemd journal: lines carry <N> priorities

// Workers hand their lines to a thread that writes them, so a slow disk delays that
// thread and never the event loop. Lines are written at least every 100 ms, at once
// past 64 KiB, and dropped (and counted) past 8 MiB waiting. The thread starts with the
// first line and ends after a second without any: a worker that logs nothing (no access
// log, no errors) is then a single thread again, and the kernel skips reference counting
// on every descriptor a single-threaded process uses in a system call.
struct Background {
  static constexpr size_t kFlushAt = 64 * 1024;
  static constexpr size_t kDropAt = 8 * 1024 * 1024;
  static constexpr int kIdleRounds = 10;  // of 100 ms
  std::mutex mutex;                       // guards the pending buffers, running and stopping
  std::mutex io;                          // held while writing; reopen() takes it too
  std::mutex starting;                    // one thread at a time starts (or joins) the writer
  std::condition_variable wake;
  size_t dropped = 0;
  bool stopping = false;
  bool running = false;
  std::thread thread;

  void run() {
    std::string error, access;
    int idle = 0;
    for (;;) {
      size_t lost;
      bool last;
      {
        std::unique_lock lock(mutex);
        wake.wait_for(lock, 100ms, [&] {
          return stopping || !g_error.pending.empty() || g_access.pending.size() >= kFlushAt;
        });
        if (!stopping && g_error.pending.empty() && g_access.pending.empty() && !dropped) {
          if (++idle < kIdleRounds) continue;
          running = false;  // the next line starts a new writer
          return;
        }
        idle = 0;
        error.swap(g_error.pending);
        access.swap(g_access.pending);
        lost = std::exchange(dropped, 0);
        last = stopping;
      }
      {
        std::lock_guard lock(io);
        if (lost) {
          std::string note = "[WARNING] " + std::to_string(lost) +
                             " log line(s) dropped: the log could not be written fast enough\n";
          write_all(g_error.fd, note);
        }
        if (g_error.fd >= 0) write_lines(g_error.fd, error);
        if (g_access.fd >= 0) write_lines(g_access.fd, access);
      }
      error.clear();
      access.clear();
      if (last) return;
    }
  }

  // Error lines wake the writer at once: they are rare, and an operator reads them in
  // order with the master's. Access lines wait for the next batch.
  void append(Sink& sink, std::string_view a, std::string_view b) {
    bool start = false;
    {
      std::lock_guard lock(mutex);
      if (sink.pending.size() > kDropAt) {
        ++dropped;
        return;
      }
      sink.pending.append(a).append(b).push_back('\n');
      start = !running && !stopping;
      running = running || start;
    }
    if (start)
      start_writer();
    else if (&sink == &g_error)
      wake.notify_one();
  }

  void start_writer() {
    std::lock_guard lock(starting);
    if (thread.joinable()) thread.join();  // the last writer, which has ended
    thread = std::thread([this] { run(); });
  }

  void stop() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    wake.notify_one();
    std::lock_guard lock(starting);
    if (thread.joinable()) thread.join();
    // Lines that arrived after the writer ended are written here.
    std::string error, access;
    {
      std::lock_guard pending(mutex);
      error.swap(g_error.pending);
      access.swap(g_access.pending);
    }
    if (g_error.fd >= 0) write_lines(g_error.fd, error);
    if (g_access.fd >= 0) write_lines(g_access.fd, access);
  }
};

Background* g_background = nullptr;

void write_line(Sink& sink, std::string_view a, std::string_view b) {
  if (sink.fd < 0) return;
  if (g_background)
    g_background->append(sink, a, b);
  else
    sink.write_now(a, b);
}

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

// syslog priorities (sd-daemon.h's SD_DEBUG ... SD_CRIT), read by journald.
std::string_view journal_prefix(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "<7>";
    case LogLevel::info: return "<6>";
    case LogLevel::warning: return "<4>";
    case LogLevel::error: return "<3>";
    case LogLevel::critical: return "<2>";
  }
  return "";
}

// JOURNAL_STREAM is "DEVICE:INODE" of the stream systemd connected to stderr: only if
// stderr still is that stream does it speak to the journal.
bool stderr_is_journal() {
  const char* env = std::getenv("JOURNAL_STREAM");
  if (!env) return false;
  std::string_view v(env);
  auto colon = v.find(':');
  if (colon == std::string_view::npos) return false;
  unsigned long long dev = 0, ino = 0;
  std::from_chars(v.data(), v.data() + colon, dev);
  std::from_chars(v.data() + colon + 1, v.data() + v.size(), ino);
  struct stat st {};
  return ::fstat(STDERR_FILENO, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

}  // namespace

void configure(const std::string& target, LogLevel level) {
  std::unique_lock<std::mutex> lock;
  if (g_background) lock = std::unique_lock(g_background->io);
  g_error.open(target, g_standard_error);
  g_level = level;
  g_journal = target == "-" && stderr_is_journal();
}

void reopen() {
  std::unique_lock<std::mutex> lock;
  if (g_background) lock = std::unique_lock(g_background->io);
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
  auto prefix = fmt::format("{}{} [{}] [{}] ", g_journal ? journal_prefix(level) : "",
                            std::string_view(stamp, n), ::getpid(), level_name(level));
  write_line(g_error, prefix, message);
}

void configure_access(const std::string& target) {
  std::unique_lock<std::mutex> lock;
  if (g_background) lock = std::unique_lock(g_background->io);
  g_access.open(target, STDOUT_FILENO);
}
bool access_enabled() {
  return g_access.fd >= 0;
}
void access(std::string_view line) {
  write_line(g_access, line, {});
}

void start_background_writer() {
  if (!g_background) g_background = new Background;
}

void flush() {
  if (!g_background) return;
  g_background->stop();
  delete std::exchange(g_background, nullptr);
}

}  // namespace tricorn::log
