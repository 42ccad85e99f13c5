// The app the integration tests drive: one route per behaviour under test.
#include <tricorn/app.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <unistd.h>

#include <any>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

namespace asio = tricorn::asio;
using tricorn::Header;
using tricorn::HttpRequest;
using tricorn::HttpResponseBody;
using tricorn::HttpResponseStart;

int query_int(std::string_view query, std::string_view key, int fallback) {
  auto at = query.find(std::string(key) + "=");
  if (at == std::string_view::npos) return fallback;
  int v = fallback;
  std::from_chars(query.data() + at + key.size() + 1, query.data() + query.size(), v);
  return v;
}

asio::awaitable<void> reply(tricorn::Send& send, int status, std::string_view body) {
  static constexpr Header headers[] = {{"content-type", "text/plain"}};
  co_await send(HttpResponseStart{status, headers});
  co_await send(HttpResponseBody{body});
}

asio::awaitable<std::string> read_body(tricorn::Receive& receive) {
  std::string body;
  for (;;) {
    auto event = co_await receive();
    auto* r = std::get_if<HttpRequest>(&event);
    if (!r) break;
    body.append(r->body);
    if (!r->more_body) break;
  }
  co_return body;
}

asio::awaitable<void> sleep_ms(int ms) {
  asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  co_await t.async_wait(asio::use_awaitable);
}

// Lifespan, steered by the environment: TESTAPP_LIFESPAN=fail fails startup (as does
// the existence of the file TESTAPP_LIFESPAN_FAIL_IF names), =unsupported behaves as an
// app without lifespan, =slow takes 500 ms; TESTAPP_SHUTDOWN_FILE gets a line per worker
// that ran its shutdown.
struct State {
  std::string started_by;
};

asio::awaitable<void> lifespan(tricorn::Scope& scope, tricorn::Receive& receive,
                               tricorn::Send& send) {
  const char* mode = std::getenv("TESTAPP_LIFESPAN");
  std::string_view m = mode ? mode : "";
  if (m == "unsupported") throw tricorn::UnsupportedScope();
  auto event = co_await receive();
  if (!std::holds_alternative<tricorn::LifespanStartup>(event)) co_return;
  const char* fail_if = std::getenv("TESTAPP_LIFESPAN_FAIL_IF");  // a file that exists
  if (m == "fail" || (fail_if && ::access(fail_if, F_OK) == 0)) {
    co_await send(tricorn::LifespanStartupFailed{"database unreachable"});
    co_return;
  }
  if (m == "slow") co_await sleep_ms(500);
  *scope.state = State{"lifespan startup in pid " + std::to_string(::getpid())};
  co_await send(tricorn::LifespanStartupComplete{});
  event = co_await receive();
  if (!std::holds_alternative<tricorn::LifespanShutdown>(event)) co_return;
  if (const char* file = std::getenv("TESTAPP_SHUTDOWN_FILE")) {
    std::string line = "shutdown " + std::to_string(::getpid()) + "\n";
    if (FILE* f = std::fopen(file, "a")) {
      std::fputs(line.c_str(), f);
      std::fclose(f);
    }
  }
  co_await send(tricorn::LifespanShutdownComplete{});
}

// WebSocket routes: /ws/echo echoes every message (and accepts a "chat" subprotocol if
// offered), /ws/deny closes before accepting, /ws/close-after accepts and closes with
// 4000, /ws/throw fails before accepting, /ws/wait receives until the client leaves and
// answers nothing.
asio::awaitable<void> websocket(tricorn::Scope& scope, tricorn::Receive& receive,
                                tricorn::Send& send) {
  using namespace tricorn;
  const auto path = scope.path;
  auto connect = co_await receive();
  if (!std::holds_alternative<WebSocketConnect>(connect)) co_return;
  if (path == "/ws/deny") {
    co_await send(WebSocketClose{});
    co_return;
  }
  if (path == "/ws/throw") throw std::runtime_error("the websocket app failed on purpose");
  std::string_view subprotocol;
  for (auto p : scope.subprotocols)
    if (p == "chat") subprotocol = p;
  static constexpr Header extra[] = {{"x-testapp", "websocket"}};
  co_await send(WebSocketAccept{subprotocol, extra});
  if (path == "/ws/flood") {
    // ?mb= MiB in 64 KiB binary messages, then a normal close: a client that does not
    // read holds this app back.
    const std::string piece(64 * 1024, 'f');
    for (int i = 0, n = query_int(scope.query_string, "mb", 16) * 16; i < n; ++i)
      co_await send(WebSocketSend{piece, false});
    co_await send(WebSocketClose{});
    co_return;
  }
  if (path == "/ws/sleepy") {
    // Reads nothing for ?ms=, then counts what the client sent until it sends "end".
    co_await sleep_ms(query_int(scope.query_string, "ms", 1000));
    std::size_t total = 0;
    for (;;) {
      auto event = co_await receive();
      auto* m = std::get_if<WebSocketReceive>(&event);
      if (!m) co_return;
      if (m->text && m->data == "end") break;
      total += m->data.size();
    }
    co_await send(WebSocketSend{std::to_string(total), true});
    co_return;
  }
  if (path == "/ws/close-after") {
    co_await send(WebSocketClose{4000, "done here"});
    co_return;
  }
  if (path == "/ws/scope") {
    std::string out = "scheme=" + std::string(scope.scheme) +
                      " http_version=" + std::string(scope.http_version) +
                      " path=" + std::string(scope.path) +
                      " query=" + std::string(scope.query_string) + " subprotocols=";
    for (auto p : scope.subprotocols) out += std::string(p) + ",";
    co_await send(WebSocketSend{out, true});
  }
  for (;;) {
    auto event = co_await receive();
    if (auto* m = std::get_if<WebSocketReceive>(&event)) {
      if (path == "/ws/echo" || path == "/ws/scope") co_await send(WebSocketSend{m->data, m->text});
      continue;
    }
    break;  // websocket.disconnect
  }
}

asio::awaitable<void> testapp(tricorn::Scope& scope, tricorn::Receive& receive,
                              tricorn::Send& send) {
  if (scope.type == tricorn::ScopeType::lifespan) co_return co_await lifespan(scope, receive, send);
  if (scope.type == tricorn::ScopeType::websocket)
    co_return co_await websocket(scope, receive, send);
  const auto path = scope.path;
  if (path == "/") {
    co_await reply(send, 200, "Hello, World!");
  } else if (path == "/pid") {
    co_await reply(send, 200, std::to_string(::getpid()));
  } else if (path == "/slow") {
    co_await sleep_ms(query_int(scope.query_string, "ms", 1000));
    co_await reply(send, 200, "slow done");
  } else if (path == "/block") {
    // Blocks the worker's event loop, as a badly written app would.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(query_int(scope.query_string, "ms", 1000)));
    co_await reply(send, 200, "unblocked");
  } else if (path == "/crash") {
    std::abort();
  } else if (path == "/throw") {
    throw std::runtime_error("the app failed on purpose");
  } else if (path == "/none") {
    co_return;
  } else if (path == "/body-first") {
    co_await send(HttpResponseBody{"too early"});
  } else if (path == "/two-starts") {
    co_await send(HttpResponseStart{200, {}});
    co_await send(HttpResponseStart{200, {}});
  } else if (path == "/throw-after-start") {
    co_await send(HttpResponseStart{200, {}});
    co_await send(HttpResponseBody{"partial", true});
    throw std::runtime_error("failed mid-response");
  } else if (path == "/echo") {
    co_await reply(send, 200, co_await read_body(receive));
  } else if (path == "/length") {
    auto body = co_await read_body(receive);
    co_await reply(send, 200, std::to_string(body.size()));
  } else if (path == "/slow-echo") {
    // A deliberately slow consumer: each piece is held for a while before the next
    // receive(), so the client must be held back by flow control.
    int ms = query_int(scope.query_string, "ms", 2);
    co_await send(HttpResponseStart{200, {}});
    for (;;) {
      auto event = co_await receive();
      auto* r = std::get_if<HttpRequest>(&event);
      if (!r) co_return;
      co_await send(HttpResponseBody{r->body, r->more_body});
      if (!r->more_body) break;
      co_await sleep_ms(ms);
    }
  } else if (path == "/trailers") {
    static constexpr Header trailers[] = {{"x-checksum", "abc123"}};
    co_await send(HttpResponseStart{200, {}, true});
    co_await send(HttpResponseBody{"body", true});
    co_await send(HttpResponseBody{"-end", false});
    co_await send(tricorn::HttpResponseTrailers{trailers});
  } else if (path == "/ignore-body") {
    co_await reply(send, 200, "ignored");
  } else if (path == "/chunks") {
    co_await send(HttpResponseStart{200, {}});
    int n = query_int(scope.query_string, "n", 3);
    int size = query_int(scope.query_string, "size", 0);  // 0: the 6-byte "piece;"
    const std::string piece = size > 0 ? std::string(static_cast<size_t>(size), 'p') : "piece;";
    for (int i = 0; i < n; ++i) co_await send(HttpResponseBody{piece, true});
    co_await send(HttpResponseBody{"end", false});
  } else if (path == "/status") {
    int status = query_int(scope.query_string, "code", 200);
    co_await send(HttpResponseStart{status, {}});
    co_await send(HttpResponseBody{status == 204 || status == 304 ? "" : "status"});
  } else if (path == "/own-fields") {
    // The app's own Date and Server fields replace ours; ?only=server keeps our Date.
    static constexpr Header both[] = {{"Server", "testapp/1"},
                                      {"Date", "Thu, 01 Jan 1970 00:00:00 GMT"}};
    const bool only_server = scope.query_string == "only=server";
    co_await send(HttpResponseStart{200, std::span(both, only_server ? 1 : 2)});
    co_await send(HttpResponseBody{"own"});
  } else if (path == "/state") {
    // (Not a conditional expression inside co_await: GCC 12 destroys its temporary
    // string twice.)
    std::string text = "no state";
    if (auto* state = scope.state ? std::any_cast<State>(scope.state.get()) : nullptr)
      text = state->started_by;
    co_await reply(send, 200, text);
  } else if (path.starts_with("/scope")) {
    std::string out;
    out += "method=" + std::string(scope.method) + "\n";
    out += "http_version=" + std::string(scope.http_version) + "\n";
    out += "scheme=" + std::string(scope.scheme) + "\n";
    out += "path=" + std::string(scope.path) + "\n";
    out += "raw_path=" + std::string(scope.raw_path) + "\n";
    out += "query_string=" + std::string(scope.query_string) + "\n";
    out += "root_path=" + std::string(scope.root_path) + "\n";
    out += "client=" + scope.client.host + ":" + std::to_string(scope.client.port) + "\n";
    out += "server=" + scope.server.host + ":" + std::to_string(scope.server.port) + "\n";
    for (const auto& h : scope.headers)
      out += "header=" + std::string(h.name) + ": " + std::string(h.value) + "\n";
    co_await reply(send, 200, out);
  } else {
    co_await reply(send, 404, "not found");
  }
}

}  // namespace

TRICORN_APP(app, testapp);
