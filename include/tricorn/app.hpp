// tricorn's application interface: the ASGI model with C++ types.
//
//   ASGI                                  tricorn
//   scope dict                            tricorn::Scope
//   await receive()                       co_await receive()  -> tricorn::ReceiveEvent
//   await send(event)                     co_await send(event), event a tricorn::SendEvent
//   async def app(scope, receive, send)   asio::awaitable<void> app(Scope&, Receive&, Send&)
//
// An application is a shared object that exports an entry with TRICORN_APP(symbol, fn);
// the server loads it with dlopen in every worker (or once in the master with --preload)
// and checks kAbiVersion before calling anything. Build apps with the same compiler,
// C++ standard library and Boost version as the server (see docs/apps.md).
//
// Lifetimes: everything a Scope or an event points to (string_views, spans) is owned by
// the server and stays valid until the app's coroutine returns, except a received body,
// which is valid until the next co_await receive(). Sent views need only live until the
// co_await send(...) completes.
#pragma once

// Asio recycles coroutine frames and handlers through a per-thread cache, this many
// blocks of each kind. Its default, 2, is fewer than the frames one request has alive at
// once (the app's, send()'s, a read's), so the rest went to malloc on every request. The
// number shapes Asio's per-thread state, which the server and its apps share, so it is
// part of kAbiVersion: include this header before any Boost.Asio header, or build with
// the tricorn::app CMake target, which defines it for every file.
#ifndef BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE
#define BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE 16
#endif
// What the cache misses goes to operator new (malloc), not aligned_alloc: glibc serves
// aligned_alloc on a slow path without its per-thread cache, and Asio asks for no more
// than the 16 bytes malloc aligns to anyway.
#ifndef BOOST_ASIO_DISABLE_STD_ALIGNED_ALLOC
#define BOOST_ASIO_DISABLE_STD_ALIGNED_ALLOC 1
#endif
#ifndef BOOST_ASIO_DISABLE_BOOST_ALIGN
#define BOOST_ASIO_DISABLE_BOOST_ALIGN 1
#endif

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#include <any>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tricorn {

namespace asio = boost::asio;

// Bumped whenever a type below changes layout; the Boost version is part of it because
// asio::awaitable's frame layout is, and so is Asio's frame cache (above).
inline constexpr std::uint32_t kInterfaceVersion = 3;
inline constexpr std::uint32_t kFrameCacheSize = BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE;
inline constexpr std::uint64_t kAbiVersion = (std::uint64_t{kInterfaceVersion} << 32) |
                                             (std::uint64_t{kFrameCacheSize} << 24) |
                                             std::uint64_t{BOOST_VERSION};

struct Header {
  std::string_view name;  // lower case for received headers, as in ASGI
  std::string_view value;
};

struct Address {
  std::string host;  // empty for unix sockets (ASGI: client/server may be None)
  std::uint16_t port = 0;
};

enum class ScopeType : std::uint8_t { http, websocket, lifespan };

struct Scope {
  ScopeType type = ScopeType::http;
  std::string_view asgi_version = "3.0";
  std::string_view spec_version = "2.3";
  std::string_view http_version;  // "1.0", "1.1" or "2"
  std::string_view method;        // upper case, as received
  std::string_view scheme;        // "http" or "https" ("ws" / "wss" for websocket)
  std::string_view path;          // percent-decoded
  std::string_view raw_path;      // as received, without the query
  std::string_view query_string;  // as received, without '?'
  std::string_view root_path;
  std::span<const Header> headers;
  std::span<const std::string_view> subprotocols;  // websocket: Sec-WebSocket-Protocol, in order
  Address client;
  Address server;
  // Lifespan state: set by the app during lifespan.startup, shared with every request
  // of the worker (ASGI's scope["state"]). Null when the app set none.
  std::shared_ptr<std::any> state;

  // First value of a header, by lower-case name; empty if absent.
  std::string_view header(std::string_view lower_name) const noexcept {
    for (const auto& h : headers)
      if (h.name == lower_name) return h.value;
    return {};
  }
};

// --- receive() events ---------------------------------------------------------------
struct HttpRequest {  // http.request
  std::string_view body;
  bool more_body = false;
};
struct HttpDisconnect {};    // http.disconnect
struct WebSocketConnect {};  // websocket.connect
struct WebSocketReceive {    // websocket.receive: {"text": data} or {"bytes": data}
  std::string_view data;
  bool text = false;
};
struct WebSocketDisconnect {  // websocket.disconnect
  int code = 1005;
  std::string_view reason;
};
struct LifespanStartup {};   // lifespan.startup
struct LifespanShutdown {};  // lifespan.shutdown

using ReceiveEvent = std::variant<HttpRequest, HttpDisconnect, WebSocketConnect, WebSocketReceive,
                                  WebSocketDisconnect, LifespanStartup, LifespanShutdown>;

// --- send() events ------------------------------------------------------------------
struct HttpResponseStart {  // http.response.start
  int status = 200;
  std::span<const Header> headers;
  bool trailers = false;
};
struct HttpResponseBody {  // http.response.body
  std::string_view body;
  bool more_body = false;
};
struct HttpResponseTrailers {  // http.response.trailers
  std::span<const Header> headers;
  bool more_trailers = false;
};
struct WebSocketAccept {         // websocket.accept
  std::string_view subprotocol;  // empty: none; else one the client offered
  std::span<const Header> headers;
};
struct WebSocketSend {  // websocket.send: {"text": data} or {"bytes": data}
  std::string_view data;
  bool text = false;
};
struct WebSocketClose {  // websocket.close; before accept it denies the handshake (403)
  int code = 1000;
  std::string_view reason;
};
struct LifespanStartupComplete {};
struct LifespanStartupFailed {
  std::string_view message;
};
struct LifespanShutdownComplete {};
struct LifespanShutdownFailed {
  std::string_view message;
};

using SendEvent =
    std::variant<HttpResponseStart, HttpResponseBody, HttpResponseTrailers, WebSocketAccept,
                 WebSocketSend, WebSocketClose, LifespanStartupComplete, LifespanStartupFailed,
                 LifespanShutdownComplete, LifespanShutdownFailed>;

class Receive {
 public:
  virtual asio::awaitable<ReceiveEvent> operator()() = 0;

 protected:
  ~Receive() = default;
};

class Send {
 public:
  // Throws tricorn::ProtocolError when the event is not valid at this point (a body
  // before the start, two starts, anything after the final body).
  virtual asio::awaitable<void> operator()(SendEvent event) = 0;

 protected:
  ~Send() = default;
};

struct ProtocolError : std::logic_error {
  using std::logic_error::logic_error;
};

// Thrown by send() once the client has gone (ASGI 2.4's ClientDisconnected): a closed
// connection, a reset stream, a websocket after its close.
struct ClientDisconnected : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The unhandled-scope convention of ASGI: an app that does not implement a scope type
// (lifespan, typically) throws this, and the server carries on without it.
struct UnsupportedScope : std::runtime_error {
  UnsupportedScope() : std::runtime_error("scope type not supported by the app") {}
};

using AppFunction = asio::awaitable<void> (*)(Scope& scope, Receive& receive, Send& send);

// --- blocking handlers ----------------------------------------------------------------
// A handler that blocks (a database driver without async, heavy computation) runs on
// the worker's thread pool (`threads`), as WSGI apps do under an ASGI server: request
// in, response out. Its event loop never waits for it. http scopes only.
class BodyReader {
 public:
  // Blocks until request body bytes are available; copies up to `size` of them into
  // `buffer`. Returns 0 at the end of the body (or when the client has gone).
  virtual size_t read(char* buffer, size_t size) = 0;
  std::string read_all();

 protected:
  ~BodyReader() = default;
};

struct SyncResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// The scope is valid for the call; the handler runs on a pool thread, so it must not
// touch the event loop or anything shared with coroutines.
using SyncFunction = SyncResponse (*)(const Scope& scope, BodyReader& body);

struct AppEntry {
  std::uint64_t abi_version;
  AppFunction call;  // null for a blocking handler
  const char* name;
  SyncFunction sync_call = nullptr;
};

inline std::string BodyReader::read_all() {
  std::string out;
  char chunk[16384];
  while (size_t n = read(chunk, sizeof chunk)) out.append(chunk, n);
  return out;
}

}  // namespace tricorn

// Exports FN as the app SYMBOL: `tricorn ./libhello.so:SYMBOL` (":app" is the default).
#define TRICORN_APP(symbol, fn)                                                        \
  extern "C" __attribute__((visibility("default"))) const ::tricorn::AppEntry symbol { \
    ::tricorn::kAbiVersion, &(fn), #fn                                                 \
  }

// Exports the blocking handler FN (a SyncFunction) as the app SYMBOL.
#define TRICORN_SYNC_APP(symbol, fn)                                                   \
  extern "C" __attribute__((visibility("default"))) const ::tricorn::AppEntry symbol { \
    ::tricorn::kAbiVersion, nullptr, #fn, &(fn)                                        \
  }
