// libFuzzer target: a whole connection, HTTP/1.1 or HTTP/2 (the first byte's low bit
// puts the HTTP/2 preface in front),
// fed arbitrary bytes through a real socket pair into the worker's own connection code
// and an app that reads the body and streams a reply. The peer's side is closed after
// the input, and the worker's event loop must then run dry: a connection that neither
// finishes nor times out within the deadline is a hang, reported as a crash.
#include "common/log.hpp"
#include "config/config.hpp"
#include "worker/http1/connection.hpp"
#include "worker/http2/connection.hpp"
#include "worker/worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

namespace asio = boost::asio;
using namespace tricorn;

// WebSocket: accept, echo every message, so fuzzed frames reach the frame parser.
asio::awaitable<void> fuzz_websocket(Receive& receive, Send& send) {
  co_await receive();  // websocket.connect
  co_await send(WebSocketAccept{});
  for (;;) {
    auto event = co_await receive();
    auto* m = std::get_if<WebSocketReceive>(&event);
    if (!m) co_return;
    co_await send(WebSocketSend{m->data, m->text});
  }
}

asio::awaitable<void> fuzz_app(Scope& scope, Receive& receive, Send& send) {
  if (scope.type == ScopeType::websocket) co_return co_await fuzz_websocket(receive, send);
  std::size_t received = 0;
  for (;;) {
    auto event = co_await receive();
    auto* r = std::get_if<HttpRequest>(&event);
    if (!r) break;
    received += r->body.size();
    if (!r->more_body) break;
  }
  static constexpr Header headers[] = {{"content-type", "text/plain"}};
  const bool trailers = scope.path == "/trailers";
  co_await send(HttpResponseStart{200, headers, trailers});
  co_await send(HttpResponseBody{scope.path, true});
  co_await send(HttpResponseBody{std::string(received % 4096, 'x'), false});
  if (trailers) co_await send(HttpResponseTrailers{headers});
}

const AppEntry kApp{kAbiVersion, &fuzz_app, "fuzz_app"};

worker::Worker& the_worker() {
  static config::Config config = [] {
    config::Config c;
    c.app = "fuzz";
    c.header_timeout = c.body_timeout = c.send_timeout = c.keepalive = 1;
    c.http2_idle_timeout = 1;
    c.ws_ping_interval = 0.5;
    c.ws_ping_timeout = 0.5;
    c.lifespan = "off";
    c.limit_request_line = 256;
    c.limit_request_field_size = 512;
    return c;
  }();
  static worker::Worker w(worker::Params{&config, {}, -1, 1, &kApp, 0});
  static bool logging = (log::configure("/dev/null", config::LogLevel::critical), true);
  (void)logging;
  return w;
}

// Reads and drops what the server writes, until it closes its side.
asio::awaitable<void> drain(asio::posix::stream_descriptor& peer) {
  char buf[16384];
  for (;;) {
    auto [ec, n] = co_await peer.async_read_some(asio::buffer(buf), worker::use_nothrow);
    if (ec) co_return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  if (size < 1 || size > 256 * 1024) return 0;
  auto& w = the_worker();
  auto& io = w.io();
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  int big = 1 << 20;
  ::setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  const bool http2 = data[0] & 1;
  std::string input(reinterpret_cast<const char*>(data + 1), size - 1);
  if (http2) input.insert(0, worker::http2::kClientPreface);

  asio::posix::stream_descriptor peer(io, fds[1]);
  bool peer_done = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await asio::async_write(peer, asio::buffer(input), worker::use_nothrow);
        ::shutdown(fds[1], SHUT_WR);
        co_await drain(peer);
        peer_done = true;
      },
      asio::detached);
  worker::Socket socket(io, asio::generic::stream_protocol(AF_UNIX, 0), fds[0]);
  static const worker::ListenerInfo listener{"http", "", 0, true};
  // HTTP/2 too starts as HTTP/1.1, which spots the preface: the real path.
  worker::http1::start_connection(w, worker::Stream(std::move(socket)), listener);
  io.restart();
  // The deadlines above are 1 s; a connection, or an HTTP/2 stream's app, still there
  // after 10 s is stuck. (Not "until the loop runs out of work": the worker keeps
  // coroutines waiting to run HTTP/2 apps and, once a connection was parked, the parking
  // lot's epoll set.)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!peer_done || w.connection_count() > 0 || worker::http2::streams_in_use(w) > 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "the connection did not finish\n");
      std::abort();
    }
    io.run_one_for(std::chrono::milliseconds(100));
  }
  while (io.poll() > 0) {  // what the connection's end left ready: its coroutines' cleanup
  }
  return 0;
}
