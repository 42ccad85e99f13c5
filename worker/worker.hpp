// One worker process: an io_context on one thread, created after the fork, that accepts
// on the inherited listening sockets and runs one coroutine per connection.
#pragma once

#include "common/listener.hpp"
#include "common/metrics.hpp"
#include "common/networks.hpp"
#include "config/config.hpp"
#include "worker/buffer_pool.hpp"
#include "worker/lifespan.hpp"
#include "worker/socket.hpp"
#include "worker/thread_pool.hpp"

#include <tricorn/app.hpp>

#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <string_view>
#include <vector>

namespace tricorn::worker {

namespace http1 {
class ParkingLot;
}

// What a connection offers the worker: it can be told that the worker is draining, and
// of each heartbeat.
// Connections link themselves into the worker's list for their lifetime.
class Connection {
 public:
  virtual void on_drain() = 0;
  // At each heartbeat of the worker (at most a second apart), for checks that need no
  // timer of their own.
  virtual void on_heartbeat(std::chrono::steady_clock::time_point) {}

 protected:
  ~Connection() = default;

 private:
  friend class Worker;
  Connection* prev_ = nullptr;
  Connection* next_ = nullptr;
};

struct Params {
  const config::Config* config;
  std::vector<Listener> listeners;
  int control_fd;
  unsigned generation;
  const AppEntry* preloaded_app;                // null unless preload_app
  int max_requests;                             // 0: no recycling; jitter already applied
  metrics::WorkerCounters* counters = nullptr;  // this worker's slot; null: uncounted
};

class Worker {
 public:
  explicit Worker(Params params);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker();

  int run();  // the process's exit code

  // --- for connections (and the fuzz target, which runs connections on this loop
  // without accepting) ---
  asio::io_context& io() { return io_; }
  asio::detail::reactor& reactor() { return reactor_; }  // for worker/reactor_ops.hpp
  const config::Config& config() const { return *params_.config; }
  const AppEntry& app() const { return *app_; }
  // Calls the app for one scope: its coroutine, or its blocking handler on the pool.
  asio::awaitable<void> run_app(Scope& scope, Receive& receive, Send& send);
  const std::shared_ptr<std::any>& state() const { return state_; }
  bool draining() const { return draining_; }
  metrics::WorkerCounters* counters() { return params_.counters; }
  const Networks& forwarded_trusted() const { return forwarded_trusted_; }
  // Does a peer's forwarding header count (forwarded_allow_ips)? Remembers the last
  // answer: connections mostly come from the same few peers, often one proxy.
  bool trusts_forwarding_from(const std::string& peer_host);
  const Networks& proxy_trusted() const { return proxy_trusted_; }
  std::string_view http_date();  // IMF-fixdate, cached per second
  // HTTP/1.1's "date: <http_date>\r\nserver: tricorn\r\n", and its first line alone:
  // most responses carry neither field from the app, and take both in one copy.
  std::string_view date_and_server_fields();
  std::string_view date_field();
  BufferPool& buffers() { return buffers_; }
  // HTTP/2 reads whole frames of the default maximum size (16 KiB) at once: nghttp2
  // then sees a SETTINGS or PING flood as one burst of more frames than its limit on
  // queued acknowledgements, which smaller reads would let the writer keep under.
  BufferPool& http2_buffers() { return http2_buffers_; }
  // A connection object is listed (for on_drain) and counted (worker_connections, the
  // drain's end) while it lives. The HTTP/1.1 parking lot is listed once and counts its
  // parked connections itself.
  void track(Connection* c);
  void untrack(Connection* c);
  void list(Connection* c);
  void count_opened() { ++connection_count_; }
  size_t connection_count() const { return connection_count_; }
  void count_closed();
  void on_request_done();
  // The HTTP/1.1 parking lot of this worker's event loop (worker/http1/connection.cpp).
  http1::ParkingLot& parking_lot();

 private:
  struct Acceptor;
  bool load_app();
  bool drop_privileges();
  const AppEntry& load_app_entry();
  void start_accepting();
  asio::awaitable<void> accept_loop(Acceptor& acceptor);
  void serve(Socket socket, const ListenerInfo& info, Address peer);
  asio::awaitable<void> accept_proxied(Socket socket, const ListenerInfo& info, Address peer);
  void send_heartbeat();
  asio::awaitable<void> watch_master();
  asio::awaitable<void> handle_signals();
  asio::awaitable<void> boot();
  asio::awaitable<void> finish();
  void begin_drain(std::string_view why);
  void stop_if_drained();

  asio::awaitable<void> answer_health_check(Send& send);

  Params params_;
  Networks forwarded_trusted_;
  Networks proxy_trusted_;
  std::string last_peer_;
  bool last_peer_trusted_ = false;
  // One thread, no async resolve, the only io_context with a signal_set in the
  // process: the conditions under which Asio may skip all its locking.
  asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  asio::detail::reactor& reactor_ = asio::use_service<asio::detail::reactor>(io_);
  const AppEntry* app_ = nullptr;
  std::shared_ptr<std::any> state_ = std::make_shared<std::any>();
  std::unique_ptr<Lifespan> lifespan_;
  std::unique_ptr<ThreadPool> pool_;  // for a blocking handler only
  int exit_code_ = 0;
  bool finishing_ = false;
  BufferPool buffers_;
  BufferPool http2_buffers_{16 * 1024};
  std::unique_ptr<asio::ssl::context> tls_;  // set when certfile/keyfile are
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  Connection* connections_ = nullptr;
  size_t connection_count_ = 0;
  http1::ParkingLot* parking_lot_ = nullptr;
  bool draining_ = false;
  bool recycle_requested_ = false;
  std::uint64_t requests_served_ = 0;
  asio::steady_timer drain_deadline_{io_};
  asio::steady_timer heartbeat_{io_};
  asio::steady_timer accept_resume_{io_};  // acceptors wait here at worker_connections
  bool accept_paused_ = false;
  std::time_t date_second_ = 0;
  char fields_[80] = {};  // "date: " + the date + "\r\nserver: tricorn\r\n"
  size_t date_len_ = 0;
  void refresh_date();
};

}  // namespace tricorn::worker
