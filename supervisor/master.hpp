// The master: binds the listening sockets, forks the workers and keeps them converged
// on a target (how many, which generation), in one loop shaped like Gunicorn's arbiter:
// wait for one event, handle it, then reconcile (murder, reap, manage).
#pragma once

#include "common/listener.hpp"
#include "common/metrics.hpp"
#include "config/config.hpp"
#include "supervisor/control_server.hpp"
#include "supervisor/metrics_server.hpp"

#include <tricorn/app.hpp>

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>
#include <vector>

namespace tricorn::supervisor {

class Master {
 public:
  // `args` and `environ` are kept so that a HUP can rebuild the configuration the way
  // it was first built: flags and environment over a re-read YAML file.
  Master(config::Config config, std::vector<std::string> args, std::vector<std::string> environ);
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;
  ~Master();

  int run();  // the process's exit code

 private:
  using Clock = std::chrono::steady_clock;
  enum class SlotState { booting, ready, draining };
  enum class Phase { running, stopping };

  struct Slot {
    pid_t pid = 0;
    unsigned generation = 0;
    SlotState state = SlotState::booting;
    int control_fd = -1;
    Clock::time_point spawned_at;
    Clock::time_point last_heartbeat;
    std::optional<Clock::time_point> abort_sent_at;  // timeout: SIGABRT sent
    std::optional<Clock::time_point> kill_at;        // draining: SIGKILL after this
    bool replace = false;                            // recycle: retire once replaced
    std::string boot_error;
    int metrics_slot = -1;  // its counters in the shared block
  };

  // What the master itself counts, for the metrics endpoint.
  struct Events {
    std::uint64_t restarts_crash = 0, restarts_timeout = 0, restarts_recycle = 0;
    std::uint64_t reloads_ok = 0, reloads_failed = 0;
    std::uint64_t upgrades_ok = 0, upgrades_failed = 0;
  };

  // A generation: the configuration its workers were forked with.
  struct Generation {
    unsigned id = 0;
    config::Config config;
  };

  // A binary upgrade in progress: the new master, a child of this one.
  struct Upgrade {
    pid_t pid = 0;
    int ready_fd = -1;  // the new master writes "ready" here
    Clock::time_point deadline;
  };

  // Listening sockets: inherited from a previous master, passed by systemd, or bound.
  std::vector<Listener> acquire_listeners();
  std::vector<Listener> adopt_inherited(const std::string& spec);

  // Events and the loop.
  void install_signal_handlers();
  void wait_for_events();
  void handle_signal(int signo);
  void read_control(Slot& slot);

  // Reconciliation.
  void murder_workers();
  void reap_workers();
  void manage_workers();

  // Actions.
  void spawn_worker();
  [[noreturn]] void run_worker_process(int control_fd, int metrics_slot);
  void retire_worker(Slot& slot, std::string_view why);
  void signal_all(int signo);
  void reload();
  void rollback_reload(const std::string& why);
  void start_upgrade();
  [[noreturn]] void exec_new_master(const std::vector<std::string>& env, int ready_fd);
  void read_upgrade_pipe();
  void finish_upgrade();
  void abandon_upgrade(const std::string& why);
  void tell_old_master_ready();
  void send_watchdog();
  void stop(bool graceful);
  void on_worker_exit(Slot& slot, int status);
  void close_unused_listeners();
  void load_preloaded_app();

  void open_metrics_endpoint();
  std::optional<std::string> handle_command(std::string_view command, int client);
  std::string status_table() const;
  void reload_finished(bool ok, std::string_view what);
  std::string render_metrics() const;
  size_t count_active() const;
  size_t count_ready_current() const;
  void notify_status();

  Generation current_;
  std::optional<Generation> previous_;  // set while a reload may still roll back
  unsigned next_generation_ = 2;
  std::vector<std::string> args_;
  std::vector<std::string> environ_;
  std::vector<Listener> listeners_;          // what the current generation uses
  std::vector<Listener> retired_listeners_;  // removed by a reload, closed once unused
  std::vector<Listener> reload_opened_;      // opened by a pending reload, closed on rollback
  std::deque<Slot> slots_;
  size_t target_workers_ = 1;
  Phase phase_ = Phase::running;
  Clock::time_point stop_deadline_;
  bool ever_ready_ = false;
  bool notified_ready_ = false;
  int exit_code_ = 0;
  std::string boot_failure_;
  unsigned crashes_in_a_row_ = 0;
  Clock::time_point next_spawn_at_;
  const AppEntry* preloaded_app_ = nullptr;
  int signal_pipe_[2] = {-1, -1};
  std::deque<int> pending_signals_;
  std::uint64_t rng_state_;
  std::string last_status_;
  std::string exe_path_;           // this binary's path at start, for USR2
  bool socket_activated_ = false;  // listeners came from systemd: binds are ignored
  std::optional<Upgrade> upgrade_;
  bool handed_over_ = false;  // a new master took over; this one is leaving
  int old_master_fd_ = -1;    // we are the new master: "ready" goes here
  std::uint64_t watchdog_usec_ = 0;
  metrics::Registry metrics_;  // mapped before the first fork
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<ControlServer> control_;
  std::vector<int> reload_waiters_;  // control clients told the outcome of the reload
  std::vector<int> stop_waiters_;    // ... and when the master is gone
  Events events_;
  Clock::time_point last_watchdog_;
};

}  // namespace tricorn::supervisor
