#include "supervisor/master.hpp"

#include "common/app_loader.hpp"
#include "common/control.hpp"
#include "common/credentials.hpp"
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
using config::seconds;

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

// Removes the pidfile only if it is still ours: after a binary upgrade the new master
// has written its own.
void remove_pidfile(const std::string& path) {
  if (path.empty()) return;
  std::ifstream in(path);
  pid_t pid = 0;
  if (in >> pid && pid == ::getpid()) ::unlink(path.c_str());
}

std::string env_get(const std::vector<std::string>& env, std::string_view name) {
  for (const auto& e : env)
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
      return e.substr(name.size() + 1);
  return {};
}

// Variables that describe this master's own inheritance; neither the workers nor a
// later upgrade may see them.
constexpr std::string_view kPrivateEnv[] = {"TRICORN_LISTENERS",  "TRICORN_SOCKET_ACTIVATED",
                                            "TRICORN_UPGRADE_FD", "TRICORN_METRICS_FD",
                                            "LISTEN_FDS",         "LISTEN_PID",
                                            "LISTEN_FDNAMES",     "WATCHDOG_PID"};

std::vector<std::string> without_private_env(const std::vector<std::string>& env) {
  std::vector<std::string> out;
  for (const auto& e : env) {
    auto name = std::string_view(e).substr(0, e.find('='));
    if (std::find(std::begin(kPrivateEnv), std::end(kPrivateEnv), name) == std::end(kPrivateEnv))
      out.push_back(e);
  }
  return out;
}

// unix_socket_owner, or else the user and group the workers run as (Gunicorn chowns its
// unix sockets to them), so an unprivileged worker's users can reach the socket.
ListenOptions listen_options(const config::Config& c) {
  ListenOptions o;
  o.backlog = c.backlog;
  o.unix_mode = c.unix_socket_mode;
  std::string_view owner = c.unix_socket_owner;
  std::string_view user = c.user, group = c.group;
  if (!owner.empty()) {
    auto colon = owner.find(':');
    user = owner.substr(0, colon);
    group = colon == std::string_view::npos ? std::string_view() : owner.substr(colon + 1);
  }
  const bool has_unix_bind = std::any_of(
      c.bind.begin(), c.bind.end(), [](const std::string& b) { return b.starts_with("unix:"); });
  if (!has_unix_bind || (user.empty() && group.empty())) return o;
  Credentials to = resolve_credentials(user, group);
  o.unix_uid = to.uid;
  o.unix_gid = to.gid;
  return o;
}

}  // namespace

Master::Master(config::Config config, std::vector<std::string> args,
               std::vector<std::string> environ)
    : current_{1, std::move(config)},
      args_(std::move(args)),
      environ_(std::move(environ)),
      target_workers_(static_cast<size_t>(current_.config.workers)),
      rng_state_(static_cast<std::uint64_t>(::getpid()) * 0x9E3779B97F4A7C15ull) {
  // Read now: once the binary is replaced on disk, /proc/self/exe says "(deleted)",
  // and USR2 must start what is at this path then.
  char path[4096];
  ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  exe_path_ = n > 0 ? std::string(path, static_cast<size_t>(n)) : std::string("tricorn");
}

Master::~Master() {
  // After a hand-over the new master serves on the same unix socket paths.
  for (auto& l : listeners_) close_listener(l, !handed_over_);
  for (auto& l : retired_listeners_) close_listener(l, true);
  for (int fd : signal_pipe_)
    if (fd >= 0) ::close(fd);
}

int Master::run() {
  const auto& config = current_.config;
  try {
    listeners_ = acquire_listeners();
    open_metrics_endpoint();
    if (!config.control_socket.empty())
      control_ = std::make_unique<ControlServer>(
          config.control_socket,
          [this](std::string_view command, int client) { return handle_command(command, client); });
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
  if (sd_watchdog_enabled(1, &watchdog_usec_) <= 0) watchdog_usec_ = 0;
  log::info("Starting tricorn {}", TRICORN_VERSION);
  for (const auto& l : listeners_) log::info("Listening at: http://{} ({})", l.name(), ::getpid());
  log::info("Using app: {}", config.app);
  if (::geteuid() == 0 && config.user.empty())
    log::warning("Workers will run as root: set user and group to drop privileges");

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
    send_watchdog();
  }
  if (!handed_over_) sd_notify(0, "STATUS=stopped");
  remove_pidfile(handed_over_ ? current_.config.pidfile + ".oldbin" : current_.config.pidfile);
  log::info("Shutting down: Master");
  if (!boot_failure_.empty()) log::critical("{}", boot_failure_);
  for (int c : std::exchange(stop_waiters_, {})) control_->answer(c, "stopped\n");
  control_.reset();  // sends what is waiting, removes the socket
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
  fds.push_back({upgrade_ ? upgrade_->ready_fd : -1, POLLIN, 0});
  for (const auto& s : slots_) fds.push_back({s.control_fd, POLLIN, 0});
  const size_t metrics_at = fds.size();
  if (metrics_server_) metrics_server_->add_to(fds);
  const size_t control_at = fds.size();
  if (control_) control_->add_to(fds);
  int n = ::poll(fds.data(), fds.size(), static_cast<int>(kTick / 1ms));
  // Called whether or not poll saw something: they also expire deadlines and send
  // answers that became ready.
  if (metrics_server_) metrics_server_->handle(fds.data() + metrics_at);
  if (control_) control_->handle(fds.data() + control_at);
  if (n <= 0) return;
  if (fds[1].revents && upgrade_) read_upgrade_pipe();
  if (fds[0].revents & POLLIN) {
    unsigned char buf[64];
    ssize_t r;
    while ((r = ::read(signal_pipe_[0], buf, sizeof buf)) > 0)
      for (ssize_t i = 0; i < r; ++i)
        if (buf[i] != SIGCHLD) pending_signals_.push_back(buf[i]);
  }
  // Only this function changes slots_ between building fds and here: indexes match.
  for (size_t i = 2; i < metrics_at; ++i)
    if (fds[i].revents) read_control(slots_[i - 2]);
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
    case SIGUSR2:
      log::info("Handling signal: usr2; starting a new master from {}", exe_path_);
      start_upgrade();
      break;
    case SIGWINCH:
      // nginx's use: retire every worker, keep the master and its sockets; HUP or TTIN
      // brings workers back.
      log::info("Handling signal: winch; retiring all workers");
      target_workers_ = 0;
      break;
    default: log::warning("Ignoring signal {}", signo); break;
  }
}

// --- reconciliation -----------------------------------------------------------------

// Kills workers whose event loop stopped (no heartbeat within `timeout`), that did not
// boot within `timeout`, or that did not drain within `graceful_timeout`.
void Master::murder_workers() {
  auto now = Clock::now();
  if (upgrade_ && now > upgrade_->deadline) abandon_upgrade("the new master was not ready in time");
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
      ++events_.restarts_timeout;
    }
  }
}

void Master::reap_workers() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    if (upgrade_ && pid == upgrade_->pid) {
      abandon_upgrade("the new master " + describe_exit(status));
      continue;
    }
    auto it =
        std::find_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.pid == pid; });
    if (it == slots_.end()) continue;
    read_control(*it);  // what it sent before it exited (a boot failure's reason)
    on_worker_exit(*it, status);
    metrics_.retire_slot(it->metrics_slot);
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
  if (!boot_error && !slot.abort_sent_at) ++events_.restarts_crash;
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
    if (s.state != SlotState::draining && (s.generation != current_.id || s.replace)) {
      if (s.replace) ++events_.restarts_recycle;
      retire_worker(s, s.replace ? "replaced after max_requests" : "replaced by a reload");
    }
  if (previous_) {
    log::info("Reload complete: generation {} serving with {} worker(s)", current_.id,
              target_workers_);
    reload_finished(
        true, fmt::format("generation {} serving with {} worker(s)", current_.id, target_workers_));
    previous_.reset();
    reload_opened_.clear();
    sd_notify(0, "READY=1");
  }
  if (!notified_ready_) {
    notified_ready_ = true;
    ever_ready_ = true;
    if (old_master_fd_ >= 0)
      tell_old_master_ready();
    else
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
  const int metrics_slot = metrics_.take_slot();
  if (metrics_slot < 0) log::warning("No metrics slot left: the new worker goes uncounted");
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
    metrics_.retire_slot(metrics_slot);
    next_spawn_at_ = Clock::now() + 1s;
    return;
  }
  if (pid == 0) {
    ::close(pair.master_end);
    run_worker_process(pair.worker_end, metrics_slot);
  }
  ::close(pair.worker_end);
  auto now = Clock::now();
  Slot s;
  s.metrics_slot = metrics_slot;
  s.pid = pid;
  s.generation = current_.id;
  s.control_fd = pair.master_end;
  s.spawned_at = s.last_heartbeat = now;
  slots_.push_back(std::move(s));
}

// In the child: drop what belongs to the master and become a worker.
void Master::run_worker_process(int control_fd, int metrics_slot) {
  for (const auto& s : slots_) ::close(s.control_fd);
  if (metrics_server_) metrics_server_->close_in_child();
  if (control_) control_->close_in_child();
  for (int fd : signal_pipe_) ::close(fd);
  for (auto& l : retired_listeners_) ::close(l.fd);
  const auto& c = current_.config;
  int max_requests = c.max_requests;
  if (max_requests > 0 && c.max_requests_jitter > 0) {
    rng_state_ ^= static_cast<std::uint64_t>(::getpid()) << 17;
    rng_state_ = rng_state_ * 6364136223846793005ull + 1442695040888963407ull;
    max_requests += static_cast<int>((rng_state_ >> 33) % (c.max_requests_jitter + 1));
  }
  // The worker is never destroyed: the process ends right after run(), and tearing
  // the event loop down would run connection clean-up against members of the worker
  // already destroyed (ASan showed it). The kernel closes what is left.
  auto* w = new worker::Worker({&c, listeners_, control_fd, current_.id, preloaded_app_,
                                max_requests, metrics_.slot(metrics_slot)});
  ::_exit(w->run());
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
    reload_finished(false, fmt::format("keeping the running configuration: {}", e.what()));
    return;
  }
  if (previous_) {
    log::warning("Reload ignored: generation {} is still starting", current_.id);
    for (int c : std::exchange(reload_waiters_, {}))
      if (control_) control_->answer(c, "reload ignored: a reload is already in progress\n");
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
        opened.push_back(open_listener(bind, listen_options(next))), kept.push_back(opened.back());
    }
  } catch (const std::exception& e) {
    for (auto& l : opened) close_listener(l, true);
    log::error("Reload failed, keeping the running configuration: {}", e.what());
    reload_finished(false, fmt::format("keeping the running configuration: {}", e.what()));
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
  reload_finished(false, fmt::format("keeping generation {}: {}", previous_->id, why));
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
  if (upgrade_) abandon_upgrade("this master is stopping");
  phase_ = Phase::stopping;
  if (!handed_over_) sd_notify(0, "STOPPING=1");
  stop_deadline_ = Clock::now() + (graceful ? seconds(current_.config.graceful_timeout) : 1s);
  for (auto& s : slots_) {
    s.state = SlotState::draining;
    s.kill_at = stop_deadline_;
    ::kill(s.pid, graceful ? SIGTERM : SIGQUIT);
  }
}

// --- listening sockets ----------------------------------------------------------------

std::vector<Listener> Master::acquire_listeners() {
  const auto& config = current_.config;
  std::string inherited = env_get(environ_, "TRICORN_LISTENERS");
  std::string upgrade_fd = env_get(environ_, "TRICORN_UPGRADE_FD");
  if (!upgrade_fd.empty()) old_master_fd_ = std::stoi(upgrade_fd);
  std::vector<Listener> out;
  if (!inherited.empty()) {
    socket_activated_ = env_get(environ_, "TRICORN_SOCKET_ACTIVATED") == "1";
    auto adopted = adopt_inherited(inherited);
    for (auto& l : adopted) ::fcntl(l.fd, F_SETFD, FD_CLOEXEC);
    if (socket_activated_)
      out = std::move(adopted);
    else {
      // Keep inherited sockets the config still names; open new binds; close the rest.
      for (const auto& bind : config.bind) {
        auto it = std::find_if(adopted.begin(), adopted.end(),
                               [&](const Listener& l) { return l.bind == bind; });
        if (it != adopted.end())
          out.push_back(*it), adopted.erase(it);
        else
          out.push_back(open_listener(bind, listen_options(config)));
      }
      for (auto& l : adopted) close_listener(l, false);
    }
  } else {
    char** names = nullptr;
    int n = sd_listen_fds_with_names(1, &names);
    if (n > 0) {
      socket_activated_ = true;
      for (int i = 0; i < n; ++i) {
        int fd = SD_LISTEN_FDS_START + i;
        Listener l = open_listener(fmt::format("fd://{}", fd), {});
        if (names && names[i] && std::strcmp(names[i], "unknown") != 0)
          l.bind = fmt::format("fd://{}", fd);
        out.push_back(std::move(l));
      }
      if (names) {
        for (int i = 0; i < n; ++i) std::free(names[i]);
        std::free(names);
      }
      log::info("Using {} socket(s) from systemd; the bind setting is ignored", n);
    } else {
      for (const auto& bind : config.bind)
        out.push_back(open_listener(bind, listen_options(config)));
    }
  }
  for (auto name : kPrivateEnv) ::unsetenv(std::string(name).c_str());
  return out;
}

// TRICORN_LISTENERS is "FD,BIND;FD,BIND;...", written by the previous master.
std::vector<Listener> Master::adopt_inherited(const std::string& spec) {
  std::vector<Listener> out;
  size_t pos = 0;
  while (pos < spec.size()) {
    auto end = spec.find(';', pos);
    auto item = spec.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? spec.size() : end + 1;
    auto comma = item.find(',');
    if (comma == std::string::npos) continue;
    Listener l = open_listener("fd://" + item.substr(0, comma), {});
    l.bind = item.substr(comma + 1);
    if (l.bind.starts_with("unix:")) l.unix_path = l.bind.substr(5);
    out.push_back(std::move(l));
  }
  return out;
}

// --- binary upgrade (USR2) ------------------------------------------------------------

void Master::start_upgrade() {
  if (upgrade_ || handed_over_ || phase_ != Phase::running) {
    log::warning("USR2 ignored: {}",
                 upgrade_ ? "an upgrade is already in progress" : "this master is stopping");
    return;
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) < 0) {
    log::error("Upgrade failed: pipe: {}", std::strerror(errno));
    return;
  }
  auto env = without_private_env(environ_);
  std::string spec;
  for (const auto& l : listeners_) spec += fmt::format("{},{};", l.fd, l.bind);
  env.push_back("TRICORN_LISTENERS=" + spec);
  if (socket_activated_) env.push_back("TRICORN_SOCKET_ACTIVATED=1");
  if (metrics_server_)
    env.push_back(fmt::format("TRICORN_METRICS_FD={}", metrics_server_->listener().fd));
  env.push_back(fmt::format("TRICORN_UPGRADE_FD={}", pipefd[1]));

  const auto& pidfile = current_.config.pidfile;
  if (!pidfile.empty()) ::rename(pidfile.c_str(), (pidfile + ".oldbin").c_str());
  sigset_t all, previous;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, &previous);
  pid_t pid = ::fork();
  if (pid == 0) exec_new_master(env, pipefd[1]);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  ::close(pipefd[1]);
  if (pid < 0) {
    ::close(pipefd[0]);
    if (!pidfile.empty()) ::rename((pidfile + ".oldbin").c_str(), pidfile.c_str());
    log::error("Upgrade failed: fork: {}", std::strerror(errno));
    return;
  }
  auto deadline = Clock::now() + seconds(std::max(60.0, 2 * current_.config.timeout));
  upgrade_ = Upgrade{pid, pipefd[0], deadline};
  log::info("Upgrade: started {} as pid {}", exe_path_, pid);
}

// In the child: the listening sockets and the ready pipe survive exec; nothing else of
// the master's does (every other descriptor is close-on-exec).
void Master::exec_new_master(const std::vector<std::string>& env, int ready_fd) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s : kHandledSignals) ::sigaction(s, &dfl, nullptr);
  for (const auto& l : listeners_) ::fcntl(l.fd, F_SETFD, 0);
  if (metrics_server_) ::fcntl(metrics_server_->listener().fd, F_SETFD, 0);
  ::fcntl(ready_fd, F_SETFD, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  std::vector<char*> argv{const_cast<char*>(exe_path_.c_str())};
  for (const auto& a : args_) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  ::execve(exe_path_.c_str(), argv.data(), envp.data());
  log::error("Upgrade failed: cannot execute {}: {}", exe_path_, std::strerror(errno));
  ::_exit(127);
}

void Master::read_upgrade_pipe() {
  char buf[16];
  ssize_t n = ::read(upgrade_->ready_fd, buf, sizeof buf);
  if (n > 0 && std::string_view(buf, static_cast<size_t>(n)).starts_with("ready")) {
    finish_upgrade();
  } else if (n == 0) {
    // The new master is exiting; reaping it will say how. The deadline still holds if
    // it closed the pipe and went on running.
    ::close(upgrade_->ready_fd);
    upgrade_->ready_fd = -1;
  }
}

// The new master serves: retire this master's workers and leave, without telling
// systemd we stop (the new master has sent MAINPID=).
void Master::finish_upgrade() {
  log::info("Upgrade complete: new master {} is ready; retiring this master's workers",
            upgrade_->pid);
  ++events_.upgrades_ok;
  ::close(upgrade_->ready_fd);
  upgrade_.reset();
  handed_over_ = true;
  if (control_) control_->keep_path();
  if (metrics_server_) metrics_server_->keep_path();
  phase_ = Phase::stopping;
  auto deadline = Clock::now() + seconds(current_.config.graceful_timeout);
  for (auto& s : slots_)
    if (s.state != SlotState::draining) {
      s.state = SlotState::draining;
      s.kill_at = deadline;
      ::kill(s.pid, SIGTERM);
    }
}

void Master::abandon_upgrade(const std::string& why) {
  log::error("Upgrade failed, this master keeps serving: {}", why);
  ++events_.upgrades_failed;
  ::kill(upgrade_->pid, SIGQUIT);
  if (upgrade_->ready_fd >= 0) ::close(upgrade_->ready_fd);
  upgrade_.reset();
  const auto& pidfile = current_.config.pidfile;
  if (!pidfile.empty()) {
    ::rename((pidfile + ".oldbin").c_str(), pidfile.c_str());
    write_pidfile(pidfile);
  }
}

// We are the new master of an upgrade: once our workers are ready, say so.
void Master::tell_old_master_ready() {
  if (old_master_fd_ < 0) return;
  [[maybe_unused]] auto n = ::write(old_master_fd_, "ready", 5);
  ::close(old_master_fd_);
  old_master_fd_ = -1;
  sd_notifyf(0, "MAINPID=%d\nREADY=1", static_cast<int>(::getpid()));
}

void Master::send_watchdog() {
  if (!watchdog_usec_) return;
  auto now = Clock::now();
  if (now - last_watchdog_ < std::chrono::microseconds(watchdog_usec_ / 2)) return;
  last_watchdog_ = now;
  sd_notify(0, "WATCHDOG=1");
}

void Master::notify_status() {
  auto status =
      fmt::format("STATUS=generation {}, {} worker(s)", current_.id, count_ready_current());
  if (status == last_status_) return;
  last_status_ = status;
  sd_notify(0, status.c_str());
}

}  // namespace tricorn::supervisor

namespace tricorn::supervisor {

// metrics_bind: bound once; a binary upgrade hands the socket to the new master, as it
// does the listeners (both cannot bind the port at once).
void Master::open_metrics_endpoint() {
  const auto& bind = current_.config.metrics_bind;
  if (bind.empty()) return;
  Listener l;
  if (auto inherited = env_get(environ_, "TRICORN_METRICS_FD"); !inherited.empty()) {
    l = open_listener("fd://" + inherited, {});
    l.bind = bind;
  } else {
    l = open_listener(bind, listen_options(current_.config));
  }
  ::unsetenv("TRICORN_METRICS_FD");
  ::fcntl(l.fd, F_SETFL, O_NONBLOCK);
  log::info("Metrics at: http://{}/metrics", l.name());
  metrics_server_ =
      std::make_unique<MetricsServer>(std::move(l), [this] { return render_metrics(); });
}

std::string Master::render_metrics() const {
  size_t states[3] = {};
  for (const auto& s : slots_) ++states[static_cast<int>(s.state)];
  return metrics_.render(fmt::format(
      "# HELP tricorn_workers Worker processes, by state.\n"
      "# TYPE tricorn_workers gauge\n"
      "tricorn_workers{{state=\"booting\"}} {}\n"
      "tricorn_workers{{state=\"ready\"}} {}\n"
      "tricorn_workers{{state=\"draining\"}} {}\n"
      "# HELP tricorn_worker_restarts_total Workers replaced, by cause.\n"
      "# TYPE tricorn_worker_restarts_total counter\n"
      "tricorn_worker_restarts_total{{cause=\"crash\"}} {}\n"
      "tricorn_worker_restarts_total{{cause=\"timeout\"}} {}\n"
      "tricorn_worker_restarts_total{{cause=\"recycle\"}} {}\n"
      "# HELP tricorn_reloads_total Reloads (HUP), by outcome.\n"
      "# TYPE tricorn_reloads_total counter\n"
      "tricorn_reloads_total{{outcome=\"success\"}} {}\n"
      "tricorn_reloads_total{{outcome=\"failure\"}} {}\n"
      "# HELP tricorn_upgrades_total Binary upgrades (USR2) started by this master, by outcome.\n"
      "# TYPE tricorn_upgrades_total counter\n"
      "tricorn_upgrades_total{{outcome=\"success\"}} {}\n"
      "tricorn_upgrades_total{{outcome=\"failure\"}} {}\n"
      "# HELP tricorn_config_generation The generation of workers now serving.\n"
      "# TYPE tricorn_config_generation gauge\n"
      "tricorn_config_generation {}\n",
      states[0], states[1], states[2], events_.restarts_crash, events_.restarts_timeout,
      events_.restarts_recycle, events_.reloads_ok, events_.reloads_failed, events_.upgrades_ok,
      events_.upgrades_failed, current_.id));
}

}  // namespace tricorn::supervisor

namespace tricorn::supervisor {

// A command from the control socket. reload and stop go through the same queue as HUP
// and TERM, so they are the signals' mechanism, answered when it is done.
std::optional<std::string> Master::handle_command(std::string_view command, int client) {
  if (command == "status") return status_table();
  if (command == "reload") {
    reload_waiters_.push_back(client);
    pending_signals_.push_back(SIGHUP);
    return std::nullopt;
  }
  if (command == "stop") {
    stop_waiters_.push_back(client);
    pending_signals_.push_back(SIGTERM);
    return std::nullopt;
  }
  return fmt::format("error: unknown command '{}' (status, reload, stop)\n", command);
}

void Master::reload_finished(bool ok, std::string_view what) {
  ++(ok ? events_.reloads_ok : events_.reloads_failed);
  for (int c : std::exchange(reload_waiters_, {}))
    if (control_)
      control_->answer(c, fmt::format("{}: {}\n", ok ? "reloaded" : "reload failed", what));
}

std::string Master::status_table() const {
  const auto now = Clock::now();
  auto out = fmt::format("tricorn {}, master {}, generation {}, {} worker(s), {}\n",
                         TRICORN_VERSION, ::getpid(), current_.id, slots_.size(),
                         phase_ == Phase::running ? "running" : "stopping");
  fmt::format_to(std::back_inserter(out), "{:<8} {:>4} {:>9} {:<9} {:>6} {:>10} {:>10}\n", "PID",
                 "GEN", "AGE", "STATE", "CONNS", "REQUESTS", "HEARTBEAT");
  static constexpr std::string_view names[] = {"booting", "ready", "draining"};
  for (const auto& s : slots_) {
    auto age = std::chrono::duration_cast<std::chrono::seconds>(now - s.spawned_at).count();
    auto beat = std::chrono::duration<double>(now - s.last_heartbeat).count();
    const auto* m = metrics_.slot(s.metrics_slot);
    fmt::format_to(
        std::back_inserter(out), "{:<8} {:>4} {:>3}:{:02}:{:02} {:<9} {:>6} {:>10} {:>9.1f}s\n",
        s.pid, s.generation, age / 3600, age / 60 % 60, age % 60, names[static_cast<int>(s.state)],
        m ? m->connections_total() : 0, m ? m->requests_total() : 0, beat);
  }
  return out;
}

}  // namespace tricorn::supervisor
