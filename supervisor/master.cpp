#include "supervisor/master.hpp"

#include "common/app_loader.hpp"
#include "common/control.hpp"
#include "common/log.hpp"
#include "worker/worker.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace tricorn::supervisor {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The write end of the self-pipe. A signal handler can reach nothing else; it only
// writes the signal number, and the loop does the work.
int g_signal_pipe = -1;

extern "C" void on_signal(int signo) {
  int saved = errno;
  unsigned char b = static_cast<unsigned char>(signo);
  [[maybe_unused]] auto n = ::write(g_signal_pipe, &b, 1);
  errno = saved;
}

constexpr int kHandledSignals[] = {SIGHUP,  SIGTERM, SIGINT,  SIGQUIT,  SIGTTIN,
                                   SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD};
constexpr auto kTick = 100ms;     // the loop's longest sleep
constexpr auto kAbortGrace = 2s;  // SIGABRT, then SIGKILL after this
constexpr auto kMaxBackoff = 10s;

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return std::string("was killed by SIG") + (name ? name : std::to_string(WTERMSIG(status)));
  }
  return "stopped";
}

void write_pidfile(const std::string& path) {
  if (path.empty()) return;
  std::ofstream(path) << ::getpid() << "\n";
}

}  // namespace

Master::Master(config::Config config, std::vector<std::string> args,
               std::vector<std::string> environ)
    : current_{1, std::move(config)},
      args_(std::move(args)),
      environ_(std::move(environ)),
      target_workers_(static_cast<size_t>(current_.config.workers)),
      rng_state_(static_cast<std::uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull) {}

Master::~Master() {
  for (auto& l : listeners_) close_listener(l, true);
  for (auto& l : retired_listeners_) close_listener(l, true);
  for (int fd : signal_pipe_)
    if (fd >= 0) ::close(fd);
}

int Master::run() {
  const auto& config = current_.config;
  try {
    for (const auto& bind : config.bind) listeners_.push_back(open_listener(bind, config.backlog));
  } catch (const std::exception& e) {
    log::critical("{}", e.what());
    return 1;
  }
  if (config.preload_app) {
    try {
      load_preloaded_app();
    } catch (const std::exception& e) {
      log::critical("{}", e.what());
      return control::kExitAppLoadError;
    }
  }
  install_signal_handlers();
  write_pidfile(config.pidfile);
  log::info("Starting tricorn {}", TRICORN_VERSION);
  for (const auto& l : listeners_) log::info("Listening at: http://{} ({})", l.name(), ::getpid());
  log::info("Using app: {}", config.app);

  while (phase_ == Phase::running || !slots_.empty()) {
    wait_for_events();
    while (!pending_signals_.empty()) {
      int signo = pending_signals_.front();
      pending_signals_.pop_front();
      handle_signal(signo);
    }
    reap_workers();
    murder_workers();
    manage_workers();
  }
  sd_notify(0, "STATUS=stopped");
  if (!current_.config.pidfile.empty()) ::unlink(current_.config.pidfile.c_str());
  log::info("Shutting down: Master");
  if (!boot_failure_.empty()) log::critical("{}", boot_failure_);
  return exit_code_;
}

void Master::load_preloaded_app() {
  preloaded_app_ = &load_app(current_.config.app_path(), current_.config.app_symbol());
}

// --- events ---------------------------------------------------------------------------

void Master::install_signal_handlers() {
  if (::pipe2(signal_pipe_, O_CLOEXEC | O_NONBLOCK) < 0)
    throw std::system_error(errno, std::generic_category(), "pipe2");
  g_signal_pipe = signal_pipe_[1];
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  for (int s : kHandledSignals) ::sigaction(s, &sa, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, nullptr);
}

// The loop's one wait point: signals (through the self-pipe) and worker messages.
void Master::wait_for_events() {
  std::vector<pollfd> fds;
  fds.push_back({signal_pipe_[0], POLLIN, 0});
  for (const auto& s : slots_) fds.push_back({s.control_fd, POLLIN, 0});
  int n = ::poll(fds.data(), fds.size(), static_cast<int>(kTick / 1ms));
  if (n <= 0) return;
  if (fds[0].revents & POLLIN) {
    unsigned char buf[64];
    ssize_t r;
    while ((r = ::read(signal_pipe_[0], buf, sizeof buf)) > 0)
      for (ssize_t i = 0; i < r; ++i)
        if (buf[i] != SIGCHLD) pending_signals_.push_back(buf[i]);
  }
  // Slots may have been added since fds was built only by this function; indexes match.
  for (size_t i = 1; i < fds.size(); ++i)
    if (fds[i].revents) read_control(slots_[i - 1]);
}

void Master::read_control(Slot& slot) {
  bool eof = false;
  while (auto m = control::receive(slot.control_fd, eof)) {
    switch (m->type) {
      case control::Type::heartbeat: slot.last_heartbeat = Clock::now(); break;
      case control::Type::ready:
        slot.last_heartbeat = Clock::now();
        if (slot.state == SlotState::booting) {
          slot.state = SlotState::ready;
          crashes_in_a_row_ = 0;
          log::debug("Worker {} (generation {}) is ready", slot.pid, slot.generation);
        }
        break;
      case control::Type::boot_failed: slot.boot_error = m->text; break;
      case control::Type::recycle: slot.replace = true; break;
    }
  }
}

void Master::handle_signal(int signo) {
  switch (signo) {
    case SIGHUP:
      log::info("Handling signal: hup");
      reload();
      break;
    case SIGTERM:
      log::info("Handling signal: term");
      stop(true);
      break;
    case SIGINT:
    case SIGQUIT:
      log::info("Handling signal: {}", signo == SIGINT ? "int" : "quit");
      stop(false);
      break;
    case SIGTTIN:
      ++target_workers_;
      log::info("Handling signal: ttin; workers: {}", target_workers_);
      break;
    case SIGTTOU:
      if (target_workers_ > 1) --target_workers_;
      log::info("Handling signal: ttou; workers: {}", target_workers_);
      break;
    case SIGUSR1:
      log::info("Handling signal: usr1; reopening log files");
      log::reopen();
      signal_all(SIGUSR1);
      break;
    default: log::warning("Ignoring signal {}", signo); break;
  }
}

// --- reconciliation -----------------------------------------------------------------

// Kills workers whose event loop stopped (no heartbeat within `timeout`), that did not
// boot within `timeout`, or that did not drain within `graceful_timeout`.
void Master::murder_workers() {
  auto now = Clock::now();
  for (auto& s : slots_) {
    if (s.abort_sent_at) {
      if (now - *s.abort_sent_at > kAbortGrace) ::kill(s.pid, SIGKILL);
      continue;
    }
    if (s.kill_at && now > *s.kill_at) {
      log::warning("Worker {} did not finish within graceful_timeout; killing it", s.pid);
      ::kill(s.pid, SIGKILL);
      s.kill_at.reset();
      continue;
    }
    const auto& limit = current_.config.timeout;
    auto silent = now - s.last_heartbeat;
    if (silent > seconds(limit)) {
      log::critical("WORKER TIMEOUT (pid:{}): {} for {:.1f}s", s.pid,
                    s.state == SlotState::booting ? "not ready" : "no heartbeat",
                    std::chrono::duration<double>(silent).count());
      if (s.state == SlotState::booting && s.boot_error.empty())
        s.boot_error = "not ready within timeout";
      ::kill(s.pid, SIGABRT);
      s.abort_sent_at = now;
    }
  }
}

void Master::reap_workers() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it =
        std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.pid == pid; });
    if (it == slots_.end()) continue;
    on_worker_exit(*it, status);
    ::close(it->control_fd);
    slots_.erase(it);
    close_unused_listeners();
  }
}

void Master::on_worker_exit(Slot& slot, int status) {
  const bool boot_error =
      slot.state == SlotState::booting &&
      ((WIFEXITED(status) && WEXITSTATUS(status) == control::kExitWorkerBootError) ||
       !slot.boot_error.empty());
  const bool expected = slot.state == SlotState::draining || phase_ == Phase::stopping;
  if (expected) {
    log::info("Worker exiting (pid: {}) {}", slot.pid, describe_exit(status));
    return;
  }
  std::string reason = slot.boot_error.empty() ? describe_exit(status) : slot.boot_error;
  if (boot_error && !ever_ready_) {
    // A first start that cannot boot stops here, with the reason, instead of looping.
    boot_failure_ = "Worker failed to boot: " + reason;
    exit_code_ = control::kExitWorkerBootError;
    stop(false);
    return;
  }
  if (boot_error && previous_ && slot.generation == current_.id) {
    rollback_reload("a new worker failed to boot: " + reason);
    return;
  }
  log::error("Worker (pid:{}) {}", slot.pid, reason);
  // Back off when workers die young, so a crashing app does not fork in a tight loop.
  if (Clock::now() - slot.spawned_at < 10s) {
    ++crashes_in_a_row_;
    auto delay =
        std::min<Clock::duration>(kMaxBackoff, 100ms * (1u << std::min(crashes_in_a_row_, 7u)));
    next_spawn_at_ = Clock::now() + delay;
  } else {
    crashes_in_a_row_ = 0;
  }
}

// Converges on the target: retire extra workers (oldest first), fork missing ones, and
// once the current generation is all ready, retire every worker outside it (a reload)
// or waiting to be replaced (max_requests).
void Master::manage_workers() {
  if (phase_ != Phase::running) return;
  while (count_active() > target_workers_) {
    auto oldest = std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) {
      return s.generation == current_.id && s.state != SlotState::draining && !s.replace;
    });
    retire_worker(*oldest, "too many workers");
  }
  if (Clock::now() >= next_spawn_at_)
    for (size_t n = count_active(); n < target_workers_; ++n) spawn_worker();
  if (count_ready_current() < target_workers_) return;
  for (auto& s : slots_)
    if (s.state != SlotState::draining && (s.generation != current_.id || s.replace))
      retire_worker(s, s.replace ? "replaced after max_requests" : "replaced by a reload");
  if (previous_) {
    log::info("Reload complete: generation {} serving with {} worker(s)", current_.id,
              target_workers_);
    previous_.reset();
    reload_opened_.clear();
    sd_notify(0, "READY=1");
  }
  if (!notified_ready_) {
    notified_ready_ = true;
    ever_ready_ = true;
    sd_notify(0, "READY=1");
  }
  notify_status();
}

size_t Master::count_active() const {
  return std::count_if(slots_.begin(), slots_.end(), [&](const Slot& s) {
    return s.generation == current_.id && s.state != SlotState::draining && !s.replace;
  });
}

size_t Master::count_ready_current() const {
  return std::count_if(slots_.begin(), slots_.end(), [&](const Slot& s) {
    return s.generation == current_.id && s.state == SlotState::ready && !s.replace;
  });
}

// --- actions ----------------------------------------------------------------------------

void Master::spawn_worker() {
  auto pair = control::make_pair();
  ::fcntl(pair.master_end, F_SETFL, O_NONBLOCK);
  // Until the child has reset the master's handlers, a signal sent to it would be
  // written to the master's self-pipe: keep them blocked across the fork.
  sigset_t all, previous;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, &previous);
  pid_t pid = ::fork();
  if (pid != 0) ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    log::error("fork failed: {}", std::strerror(errno));
    ::close(pair.master_end);
    ::close(pair.worker_end);
    next_spawn_at_ = Clock::now() + 1s;
    return;
  }
  if (pid == 0) {
    ::close(pair.master_end);
    run_worker_process(pair.worker_end);
  }
  ::close(pair.worker_end);
  auto now = Clock::now();
  Slot s;
  s.pid = pid;
  s.generation = current_.id;
  s.control_fd = pair.master_end;
  s.spawned_at = s.last_heartbeat = now;
  slots_.push_back(std::move(s));
}

// In the child: drop what belongs to the master and become a worker.
void Master::run_worker_process(int control_fd) {
  for (const auto& s : slots_) ::close(s.control_fd);
  for (int fd : signal_pipe_) ::close(fd);
  for (auto& l : retired_listeners_) ::close(l.fd);
  const auto& c = current_.config;
  int max_requests = c.max_requests;
  if (max_requests > 0 && c.max_requests_jitter > 0) {
    rng_state_ ^= static_cast<std::uint64_t>(::getpid()) << 17;
    rng_state_ = rng_state_ * 6364136223846793005ull + 1442695040888963407ull;
    max_requests += static_cast<int>((rng_state_ >> 33) % (c.max_requests_jitter + 1));
  }
  int code;
  {
    worker::Worker w({&c, listeners_, control_fd, current_.id, preloaded_app_, max_requests});
    code = w.run();
  }
  ::_exit(code);
}

void Master::retire_worker(Slot& s, std::string_view why) {
  log::info("Retiring worker {} (generation {}): {}", s.pid, s.generation, why);
  s.state = SlotState::draining;
  s.kill_at = Clock::now() + seconds(current_.config.graceful_timeout);
  ::kill(s.pid, SIGTERM);
}

void Master::signal_all(int signo) {
  for (const auto& s : slots_) ::kill(s.pid, signo);
}

void Master::reload() {
  config::Config next;
  try {
    next = config::load(args_, environ_).config;
  } catch (const std::exception& e) {
    log::error("Reload failed, keeping the running configuration: {}", e.what());
    return;
  }
  if (previous_) {
    log::warning("Reload ignored: generation {} is still starting", current_.id);
    return;
  }
  struct timespec ts {};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
             static_cast<unsigned long long>(ts.tv_sec) * 1000000ull + ts.tv_nsec / 1000);

  // Open added binds before anything else, so a bind that fails leaves all as it was.
  std::vector<Listener> opened;
  std::vector<Listener> kept;
  try {
    for (const auto& bind : next.bind) {
      auto same = std::find_if(listeners_.begin(), listeners_.end(),
                               [&](const Listener& l) { return l.bind == bind; });
      if (same != listeners_.end())
        kept.push_back(*same);
      else
        opened.push_back(open_listener(bind, next.backlog)), kept.push_back(opened.back());
    }
  } catch (const std::exception& e) {
    for (auto& l : opened) close_listener(l, true);
    log::error("Reload failed, keeping the running configuration: {}", e.what());
    sd_notify(0, "READY=1");
    return;
  }
  for (auto& l : listeners_)
    if (std::none_of(kept.begin(), kept.end(), [&](const Listener& k) { return k.fd == l.fd; }))
      retired_listeners_.push_back(l);
  listeners_ = std::move(kept);
  reload_opened_ = std::move(opened);
  log::configure(next.errorlog, next.loglevel);
  log::configure_access(next.accesslog);

  previous_ = std::move(current_);
  current_ = {next_generation_++, std::move(next)};
  target_workers_ = static_cast<size_t>(current_.config.workers);
  next_spawn_at_ = {};
  log::info("Reloading: starting generation {} with {} worker(s)", current_.id, target_workers_);
}

// The new generation cannot start: kill it and go on with the previous one.
void Master::rollback_reload(const std::string& why) {
  log::error("Reload failed, keeping generation {}: {}", previous_->id, why);
  for (auto& s : slots_)
    if (s.generation == current_.id) {
      ::kill(s.pid, SIGKILL);
      s.state = SlotState::draining;
    }
  // Binds the reload removed come back; binds it added go away.
  for (auto& l : retired_listeners_) listeners_.push_back(l);
  retired_listeners_.clear();
  for (auto& l : reload_opened_) {
    listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                    [&](const Listener& k) { return k.fd == l.fd; }),
                     listeners_.end());
    close_listener(l, true);
  }
  reload_opened_.clear();
  current_ = std::move(*previous_);
  previous_.reset();
  target_workers_ = static_cast<size_t>(current_.config.workers);
  log::configure(current_.config.errorlog, current_.config.loglevel);
  log::configure_access(current_.config.accesslog);
  sd_notify(0, "READY=1");
}

// Closes binds that a reload removed once no worker that could use them is left.
void Master::close_unused_listeners() {
  if (retired_listeners_.empty() || previous_) return;
  bool old_workers = std::any_of(slots_.begin(), slots_.end(),
                                 [&](const Slot& s) { return s.generation != current_.id; });
  if (old_workers) return;
  for (auto& l : retired_listeners_) {
    log::info("Closing removed bind {}", l.bind);
    close_listener(l, true);
  }
  retired_listeners_.clear();
}

void Master::stop(bool graceful) {
  if (phase_ == Phase::stopping && graceful) return;
  phase_ = Phase::stopping;
  sd_notify(0, "STOPPING=1");
  stop_deadline_ = Clock::now() + (graceful ? seconds(current_.config.graceful_timeout) : 1s);
  for (auto& s : slots_) {
    s.state = SlotState::draining;
    s.kill_at = stop_deadline_;
    ::kill(s.pid, graceful ? SIGTERM : SIGQUIT);
  }
}

void Master::notify_status() {
  auto status =
      fmt::format("STATUS=generation {}, {} worker(s)", current_.id, count_ready_current());
  if (status == last_status_) return;
  last_status_ = status;
  sd_notify(0, status.c_str());
}

}  // namespace tricorn::supervisor
