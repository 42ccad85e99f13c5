#include "worker/worker.hpp"

#include "common/app_loader.hpp"
#include "common/control.hpp"
#include "common/credentials.hpp"
#include "common/log.hpp"
#include "worker/blocking.hpp"
#include "worker/forwarded.hpp"
#include "worker/http1/connection.hpp"
#include "worker/proxy_protocol.hpp"
#include "worker/reactor_ops.hpp"
#include "worker/socket.hpp"
#include "worker/tls.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>

#include <grp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>

namespace tricorn::worker {

using namespace std::chrono_literals;
using config::seconds;
using std::chrono::duration;
using std::chrono::duration_cast;
using std::chrono::steady_clock;

struct Worker::Acceptor {
  Acceptor(asio::io_context& io, const Listener& l, bool tls)
      : protocol(l.family, l.family == AF_UNIX ? 0 : IPPROTO_TCP),
        acceptor(io, protocol, ::dup(l.fd)) {
    acceptor.non_blocking(true);  // for async_accept4
    info.is_unix = l.family == AF_UNIX;
    if (tls) info.scheme = "https";
    if (!info.is_unix) {
      auto a = local_address(l.fd);
      info.server_host = a.host;
      info.server_port = a.port;
    }
  }
  asio::generic::stream_protocol protocol;
  Listening acceptor;
  ListenerInfo info;
};

namespace {

// Undoes what the master set up for itself and ties this process's life to the master.
void prepare_process() {
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s : {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM})
    ::sigaction(s, &dfl, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  // TTIN, TTOU and WINCH are the master's; a worker in the same process group must not
  // stop or react when an operator signals the whole group.
  for (int s : {SIGPIPE, SIGTTIN, SIGTTOU, SIGWINCH}) ::sigaction(s, &ign, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void log_connection_error(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("Error in a worker task: {}", ex.what());
  }
}

}  // namespace

Worker::Worker(Params params)
    : params_(std::move(params)),
      forwarded_trusted_(Networks::parse(params_.config->forwarded_allow_ips)),
      proxy_trusted_(Networks::parse(params_.config->proxy_allow_ips)),
      app_(params_.preloaded_app) {}

Worker::~Worker() = default;

int Worker::run() {
  prepare_process();
  if (::getppid() == 1) return 0;  // the master died before we got here
  log::start_background_writer();
  struct Flush {
    ~Flush() { log::flush(); }
  } flush_logs_at_exit;
  log::info("Booting worker with pid: {}", ::getpid());
  if (!load_app()) return control::kExitWorkerBootError;
  send_heartbeat();
  asio::co_spawn(io_, watch_master(), log_connection_error);
  asio::co_spawn(io_, handle_signals(), log_connection_error);
  asio::co_spawn(io_, boot(), log_connection_error);
  io_.run();
  log::info("Worker exiting (pid: {})", ::getpid());
  return exit_code_;
}

// Lifespan startup (the heartbeats already run, so a slow startup is not taken for a
// hung worker), then `ready` and the acceptors.
asio::awaitable<void> Worker::boot() {
  if (config().lifespan != "off") {
    lifespan_ = std::make_unique<Lifespan>(*this);
    if (auto failure = co_await lifespan_->startup()) {
      log::error("Application startup failed: {}", *failure);
      control::send(params_.control_fd, control::Type::boot_failed, *failure);
      exit_code_ = control::kExitWorkerBootError;
      io_.stop();
      co_return;
    }
  }
  if (draining_) co_return;  // told to stop while starting
  control::send(params_.control_fd, control::Type::ready);
  start_accepting();
}

asio::awaitable<void> Worker::run_app(Scope& scope, Receive& receive, Send& send) {
  if (scope.type == ScopeType::http && !config().health_path.empty() &&
      scope.path == config().health_path)
    return answer_health_check(send);
  if (app_->call) return app_->call(scope, receive, send);
  if (scope.type != ScopeType::http) throw UnsupportedScope();
  return call_blocking(*pool_, app_->sync_call, scope, receive, send);
}

bool Worker::load_app() {
  try {
    // The key is read before privileges go: key files are usually readable by root only.
    if (!config().certfile.empty()) tls_ = make_tls_context(config());
    if (!drop_privileges()) return false;
    if (!app_) app_ = &load_app_entry();
    if (!app_->call) pool_ = std::make_unique<ThreadPool>(io_, config().threads);
    return true;
  } catch (const std::exception& e) {
    log::error("{}", e.what());
    control::send(params_.control_fd, control::Type::boot_failed, e.what());
    return false;
  }
}

// user / group: the master keeps its privileges (to bind, to read new certificates on
// a HUP); each worker gives them up before it loads the app or accepts anything.
bool Worker::drop_privileges() {
  ::umask(static_cast<mode_t>(config().umask));
  const auto& c = config();
  if (c.user.empty() && c.group.empty()) return true;
  auto fail = [&](const std::string& why) {
    log::error("{}", why);
    control::send(params_.control_fd, control::Type::boot_failed, why);
    return false;
  };
  Credentials to;
  try {
    to = resolve_credentials(c.user, c.group);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  if (::setgroups(0, nullptr) != 0 || ::setgid(to.gid) != 0 || ::setuid(to.uid) != 0)
    return fail(
        fmt::format("cannot switch to user {} group {}: {}", to.uid, to.gid, std::strerror(errno)));
  return true;
}

const AppEntry& Worker::load_app_entry() {
  return tricorn::load_app(config().app_path(), config().app_symbol());
}

void Worker::start_accepting() {
  for (const auto& l : params_.listeners) {
    acceptors_.push_back(std::make_unique<Acceptor>(io_, l, tls_ != nullptr));
    asio::co_spawn(io_, accept_loop(*acceptors_.back()), log_connection_error);
  }
}

asio::awaitable<void> Worker::accept_loop(Acceptor& a) {
  asio::steady_timer pause(io_);
  for (;;) {
    // At worker_connections, stop accepting: the connection stays queued in the shared
    // socket for a worker with room, instead of being accepted and starved here.
    while (connection_count_ >= static_cast<size_t>(config().worker_connections) && !draining_) {
      accept_paused_ = true;
      accept_resume_.expires_at(std::chrono::steady_clock::time_point::max());
      co_await accept_resume_.async_wait(use_nothrow);
    }
    if (draining_) co_return;
    // One system call: the peer's address comes with it, and the socket is non-blocking.
    auto [ec, accepted] = co_await async_accept4(a.acceptor, reactor_, use_nothrow);
    // A connection accepted as the drain began is still served (its response will
    // carry Connection: close): dropping it would reset a request.
    if (ec == asio::error::operation_aborted) co_return;
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory) {
      // Out of file descriptors: leave the connection queued in the shared socket for
      // another worker (or for later) instead of spinning.
      log::error("accept: {}; pausing accepts for 100 ms", ec.message());
      pause.expires_after(100ms);
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    if (ec) continue;  // the peer reset before we accepted: nothing to do
    Socket socket(io_);
    if (tls_ || config().proxy_protocol) {  // these wait on the socket from the start
      boost::system::error_code assign_failed;
      socket.assign(a.protocol, accepted.fd, assign_failed);
      if (assign_failed) {
        ::close(accepted.fd);
        continue;
      }
      adopt_accepted(socket);
    } else {
      adopt_unregistered(socket, a.protocol, accepted.fd);
    }
    Address peer;
    if (!a.info.is_unix) {
      auto p = address_of(accepted.address);
      peer = {std::move(p.host), p.port};
    }
    if (config().proxy_protocol)
      asio::co_spawn(io_, accept_proxied(std::move(socket), a.info, std::move(peer)),
                     log_connection_error);
    else
      serve(std::move(socket), a.info, std::move(peer));
    if (draining_) co_return;
  }
}

void Worker::serve(Socket socket, const ListenerInfo& info, Address peer) {
  if (tls_) {
    if (!info.is_unix) {  // a TLS 1.2 handshake writes twice before any request
      int one = 1;
      ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    start_tls_connection(*this, *tls_, std::move(socket), info, std::move(peer));
    return;
  }
  Stream stream(std::move(socket));
  stream.set_peer(std::move(peer));
  if (!info.is_unix) stream.set_nodelay_before_second_write();
  http1::start_connection(*this, std::move(stream), info);
}

// proxy_protocol: the PROXY header comes first, from a peer in proxy_allow_ips, within
// header_timeout. It is peeked at and then consumed exactly, so whatever follows (TLS,
// HTTP/1.1, the HTTP/2 preface) is read by the protocol as if nothing came before.
asio::awaitable<void> Worker::accept_proxied(Socket socket, const ListenerInfo& info,
                                             Address peer) {
  if (!info.is_unix && !proxy_trusted_.contains(peer.host)) {
    log::debug("PROXY header refused from {}: not in proxy_allow_ips", peer.host);
    co_return;
  }
  asio::steady_timer deadline(io_, seconds(config().header_timeout));
  deadline.async_wait([&socket](boost::system::error_code ec) {
    boost::system::error_code ignored;
    if (!ec) socket.cancel(ignored);
  });
  char buf[kMaxProxyHeader];
  for (;;) {
    auto [ec] = co_await socket.async_wait(Socket::wait_read, use_nothrow);
    if (ec) co_return;  // gone, or too slow
    ssize_t n = ::recv(socket.native_handle(), buf, sizeof buf, MSG_PEEK);
    if (n <= 0) co_return;
    auto header = parse_proxy_header({buf, static_cast<size_t>(n)});
    if (header.kind == ProxyHeader::invalid) {
      log::debug("Invalid PROXY header from {}", peer.host);
      co_return;
    }
    if (header.kind == ProxyHeader::incomplete) {
      if (static_cast<size_t>(n) == sizeof buf) co_return;
      // Wait for more than what is already there: readability alone would spin.
      asio::steady_timer pause(io_, 5ms);
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    [[maybe_unused]] auto consumed = ::recv(socket.native_handle(), buf, header.size, 0);
    deadline.cancel();
    serve(std::move(socket), info, header.source ? std::move(*header.source) : std::move(peer));
    co_return;
  }
}

// Sent from inside the loop, so a loop blocked by an app stops the heartbeat and the
// master kills the worker at `timeout`. A timer callback rather than a coroutine: a
// coroutine's wait would take a frame from the cache the request path recycles its
// frames through, once a second, and now and then push out a block a request needs.
void Worker::send_heartbeat() {
  control::send(params_.control_fd, control::Type::heartbeat);
  const auto now = steady_clock::now();
  for (Connection* c = connections_; c; c = c->next_) c->on_heartbeat(now);
  auto interval = std::clamp(seconds(config().timeout / 4), steady_clock::duration(10ms),
                             steady_clock::duration(1s));
  heartbeat_.expires_after(interval);
  heartbeat_.async_wait([this](boost::system::error_code ec) {
    if (!ec) send_heartbeat();
  });
}

asio::awaitable<void> Worker::watch_master() {
  asio::posix::stream_descriptor control(io_, ::dup(params_.control_fd));
  for (;;) {
    auto [ec] = co_await control.async_wait(asio::posix::stream_descriptor::wait_read, use_nothrow);
    if (ec == asio::error::operation_aborted) co_return;
    bool eof = false;
    while (control::receive(params_.control_fd, eof)) {
      // The master sends nothing yet; reserved for later commands.
    }
    if (eof || ec) {
      begin_drain("the master is gone");
      co_return;
    }
  }
}

asio::awaitable<void> Worker::handle_signals() {
  asio::signal_set signals(io_, SIGTERM, SIGINT, SIGQUIT);
  signals.add(SIGUSR1);
  for (;;) {
    auto [ec, signo] = co_await signals.async_wait(use_nothrow);
    if (ec) co_return;
    switch (signo) {
      case SIGTERM: begin_drain("SIGTERM"); break;
      case SIGUSR1: log::reopen(); break;
      default:  // INT, QUIT: fast stop
        log::info("Worker exiting at once on signal {} (pid: {})", signo, ::getpid());
        io_.stop();
        co_return;
    }
  }
}

// health_path: the worker answers for itself, so a balancer sees it turn unhealthy
// the moment it starts draining, whatever the app does.
asio::awaitable<void> Worker::answer_health_check(Send& send) {
  static constexpr Header headers[] = {{"content-type", "text/plain"},
                                       {"cache-control", "no-store"}};
  co_await send(HttpResponseStart{draining_ ? 503 : 200, headers});
  co_await send(HttpResponseBody{draining_ ? "draining\n" : "ok\n"});
}

void Worker::begin_drain(std::string_view why) {
  if (draining_) return;
  draining_ = true;
  log::info("Worker draining ({}), {} connection(s) open (pid: {})", why, connection_count_,
            ::getpid());
  for (auto& a : acceptors_) {
    boost::system::error_code ignored;
    a->acceptor.close(ignored);
  }
  for (Connection* c = connections_; c;) {
    Connection* next = c->next_;  // on_drain may untrack c
    c->on_drain();
    c = next;
  }
  drain_deadline_.expires_after(seconds(config().graceful_timeout));
  drain_deadline_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    log::warning("Graceful timeout: closing {} connection(s) (pid: {})", connection_count_,
                 ::getpid());
    io_.stop();
  });
  stop_if_drained();
}

void Worker::stop_if_drained() {
  if (!draining_ || connection_count_ > 0 || finishing_) return;
  finishing_ = true;
  asio::co_spawn(io_, finish(), log_connection_error);
}

// The last connection is gone: lifespan shutdown (bounded by the graceful timeout
// armed when the drain began), then the end.
asio::awaitable<void> Worker::finish() {
  if (connection_count_ > 0) {  // a parked connection woke as the last one closed
    finishing_ = false;
    co_return;
  }
  if (lifespan_) co_await lifespan_->shutdown();
  io_.stop();
}

void Worker::track(Connection* c) {
  list(c);
  ++connection_count_;
}

void Worker::list(Connection* c) {
  c->next_ = connections_;
  if (connections_) connections_->prev_ = c;
  connections_ = c;
}

void Worker::untrack(Connection* c) {
  if (c->prev_)
    c->prev_->next_ = c->next_;
  else
    connections_ = c->next_;
  if (c->next_) c->next_->prev_ = c->prev_;
  c->prev_ = c->next_ = nullptr;
  count_closed();
}

void Worker::count_closed() {
  --connection_count_;
  if (accept_paused_ && connection_count_ < static_cast<size_t>(config().worker_connections)) {
    accept_paused_ = false;
    accept_resume_.cancel();
  }
  stop_if_drained();
}

void Worker::on_request_done() {
  ++requests_served_;
  if (params_.max_requests > 0 && !recycle_requested_ &&
      requests_served_ >= static_cast<std::uint64_t>(params_.max_requests)) {
    recycle_requested_ = true;
    log::info("Autorestarting worker after {} requests (pid: {})", requests_served_, ::getpid());
    control::send(params_.control_fd, control::Type::recycle);
  }
}

bool Worker::trusts_forwarding_from(const std::string& peer_host) {
  if (peer_host != last_peer_ || last_peer_.empty()) {
    last_peer_trusted_ = trusts_forwarding(forwarded_trusted_, peer_host);
    last_peer_ = peer_host;
  }
  return last_peer_trusted_;
}

namespace {
constexpr std::string_view kDateName = "date: ";
constexpr std::string_view kServerField = "\r\nserver: tricorn\r\n";
}  // namespace

void Worker::refresh_date() {
  const std::time_t now = std::time(nullptr);
  if (now == date_second_) return;
  std::tm tm{};
  gmtime_r(&now, &tm);
  char* date = fields_ + kDateName.size();
  std::memcpy(fields_, kDateName.data(), kDateName.size());
  const size_t room = sizeof fields_ - kDateName.size() - kServerField.size();
  date_len_ = std::strftime(date, room, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  std::memcpy(date + date_len_, kServerField.data(), kServerField.size());
  date_second_ = now;
}

std::string_view Worker::http_date() {
  refresh_date();
  return {fields_ + kDateName.size(), date_len_};
}

std::string_view Worker::date_field() {
  refresh_date();
  return {fields_, kDateName.size() + date_len_ + 2};
}

std::string_view Worker::date_and_server_fields() {
  refresh_date();
  return {fields_, kDateName.size() + date_len_ + kServerField.size()};
}

}  // namespace tricorn::worker
