#include "worker/websocket/session.hpp"

#include "common/log.hpp"
#include "worker/dispatch.hpp"
#include "worker/worker.hpp"

#include <boost/asio/co_spawn.hpp>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <fmt/format.h>

#include <algorithm>

namespace tricorn::worker::websocket {

using config::seconds;
using tricorn::http1::iequals;
using namespace std::chrono_literals;

namespace {

constexpr auto kCloseTimeout = 5s;  // for the peer's answer to our close frame
constexpr size_t kReadCompactAt = 64 * 1024;

// A Sec-WebSocket-Key is the base64 of 16 bytes: 22 characters and "==".
bool is_valid_key(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  return std::all_of(key.begin(), key.begin() + 22,
                     [](unsigned char c) { return std::isalnum(c) || c == '+' || c == '/'; });
}

}  // namespace

HandshakeCheck check_http1_handshake(const Scope& scope) {
  if (scope.method != "GET") return {400, "websocket handshake with a method other than GET"};
  if (!tricorn::http1::list_has_token(scope.header("connection"), "upgrade"))
    return {400, "websocket handshake without Connection: upgrade"};
  if (scope.header("sec-websocket-version") != "13")
    return {426, "websocket handshake with a version other than 13"};
  if (!is_valid_key(scope.header("sec-websocket-key")))
    return {400, "websocket handshake without a valid Sec-WebSocket-Key"};
  return {};
}

std::string accept_key(std::string_view key) {
  static constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  std::string input = std::string(key) + std::string(kGuid);
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  unsigned char encoded[4 * ((SHA_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(encoded, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<const char*>(encoded), static_cast<size_t>(n));
}

Session::Session(Worker& worker, Scope& scope, Transport& transport, std::string_view key)
    : worker_(worker),
      scope_(scope),
      transport_(transport),
      key_(key),
      close_deadline_(worker.io()),
      write_turn_(worker.io(), Clock::time_point::max()),
      ping_timer_(worker.io()),
      drain_timer_(worker.io()) {}

asio::awaitable<void> Session::run(std::string_view target_for_log) {
  // The ASGI websocket scope: the request's, with the websocket scheme and the offered
  // subprotocols.
  scope_.type = ScopeType::websocket;
  scope_.scheme = scope_.scheme == "https" ? "wss" : "ws";
  for (auto item : tricorn::http1::split_list(scope_.header("sec-websocket-protocol")))
    if (!item.empty()) subprotocols_.push_back(item);
  scope_.subprotocols = subprotocols_;

  auto outcome = co_await call_app(worker_, scope_, *this, *this);
  if (!outcome.failure.empty()) log_app_failure(scope_, target_for_log, outcome.failure);
  if (!accepted_) {
    // ASGI: an app that ends (or closes) before accepting denies the handshake.
    if (!denied_) co_await transport_.deny(outcome.failure.empty() ? 403 : 500);
    state_ = State::closed;
    denied_ = true;
  } else if (!close_sent_ && !peer_gone_) {
    co_await close(outcome.failure.empty() ? kNormal : kInternalError, "");
  }
  if (accepted_ && close_sent_ && !close_received_ && !peer_gone_) co_await wait_for_peer_close();
  // A send from another coroutine (a broadcast) may still be writing: let it finish,
  // and refuse any later one, before the transport goes away.
  while (writing_) co_await write_turn_.async_wait(use_nothrow);
  finished_ = true;
  ping_timer_.cancel();
  drain_timer_.cancel();
  close_deadline_.cancel();
  if (!peer_gone_) co_await transport_.finish();
}

void Session::on_drain() {
  if (finished_) return;
  // The same drain window as an idle HTTP/1.1 connection: a message on its way is
  // still received; then the client hears 1001.
  drain_timer_.expires_after(seconds(std::min(worker_.config().keepalive, 2.0)));
  drain_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->finished_ || self->close_sent_ || self->state_ != State::open) return;
    asio::co_spawn(self->worker_.io(), self->close(kGoingAway, "server shutting down"),
                   [self](std::exception_ptr) {});
  });
}

// --- Receive ----------------------------------------------------------------------------

asio::awaitable<ReceiveEvent> Session::operator()() {
  switch (state_) {
    case State::connecting: state_ = State::connect_delivered; co_return WebSocketConnect{};
    case State::connect_delivered: throw ProtocolError("websocket.receive before websocket.accept");
    case State::closed: co_return disconnect();
    case State::open: break;
  }
  if (close_received_ || peer_gone_) co_return disconnect();
  co_return co_await next_message();
}

// Reads frames until a whole data message is in, answering control frames on the way.
asio::awaitable<ReceiveEvent> Session::next_message() {
  const std::uint64_t max_size = worker_.config().ws_max_size;
  delivered_.clear();
  for (;;) {
    auto parsed = parse_frame(in_.data() + in_pos_, in_.size() - in_pos_,
                              max_size - std::min<std::uint64_t>(max_size, message_.size()));
    if (parsed.kind == ParseOutcome::error) co_return co_await fail(parsed.close_code, parsed.why);
    if (parsed.kind == ParseOutcome::incomplete) {
      if (!co_await read_more()) co_return disconnect();
      continue;
    }
    in_pos_ += parsed.size;
    const Frame& f = parsed.frame;
    if (is_control(f.opcode)) {
      if (!co_await handle_control(f) || close_received_ || peer_gone_) co_return disconnect();
      continue;
    }
    const bool continuing = message_opcode_ != Opcode::continuation;
    if (f.opcode == Opcode::continuation && !continuing)
      co_return co_await fail(kProtocolError, "continuation frame without a message");
    if (f.opcode != Opcode::continuation && continuing)
      co_return co_await fail(kProtocolError, "new message inside a fragmented one");
    if (!continuing) {
      message_opcode_ = f.opcode;
      utf8_.reset();
    }
    if (message_opcode_ == Opcode::text && !utf8_.feed(f.payload))
      co_return co_await fail(kInvalidPayload, "invalid UTF-8 in a text message");
    message_.append(f.payload);
    if (!f.fin) continue;
    if (message_opcode_ == Opcode::text && !utf8_.complete())
      co_return co_await fail(kInvalidPayload, "text message ends inside a UTF-8 sequence");
    const bool text = message_opcode_ == Opcode::text;
    message_opcode_ = Opcode::continuation;
    delivered_.swap(message_);
    message_.clear();
    co_return WebSocketReceive{delivered_, text};
  }
}

// Ping is answered, pong noted, close answered and recorded. False: the peer is gone.
asio::awaitable<bool> Session::handle_control(const Frame& f) {
  if (f.opcode == Opcode::ping) co_return co_await send_frame(Opcode::pong, f.payload);
  if (f.opcode == Opcode::pong) {
    last_pong_ = Clock::now();
    co_return true;
  }
  // Close: a code and a UTF-8 reason, or nothing.
  int code = kNoStatus;
  std::string_view reason;
  if (f.payload.size() == 1) {
    co_await fail(kProtocolError, "close frame with a one-byte payload");
    co_return true;
  }
  if (f.payload.size() >= 2) {
    code =
        (static_cast<unsigned char>(f.payload[0]) << 8) | static_cast<unsigned char>(f.payload[1]);
    reason = f.payload.substr(2);
    if (!is_valid_close_code(code)) {
      co_await fail(kProtocolError, "invalid close code");
      co_return true;
    }
    if (!valid_utf8(reason)) {
      co_await fail(kInvalidPayload, "close reason is not UTF-8");
      co_return true;
    }
  }
  close_received_ = true;
  close_code_ = code;
  close_reason_ = reason;
  close_deadline_.cancel();
  if (!close_sent_) {
    // Echo the code (section 5.5.1), then the session ends.
    close_sent_ = true;
    co_await send_frame(Opcode::close, close_payload(code == kNoStatus ? kNormal : code, ""));
  }
  state_ = State::closed;
  co_return true;
}

// Fails the connection (section 7.1.7): a close frame with the code, then the end.
asio::awaitable<ReceiveEvent> Session::fail(int code, std::string_view why) {
  log::debug("WebSocket from {} closed with {}: {}", scope_.client.host, code, why);
  if (!close_sent_) {
    close_sent_ = true;
    co_await send_frame(Opcode::close, close_payload(code, ""));
  }
  close_code_ = code;
  close_reason_.clear();
  peer_gone_ = true;  // nothing more is read from a peer that broke the protocol
  state_ = State::closed;
  co_return disconnect();
}

asio::awaitable<bool> Session::read_more() {
  if (in_pos_ == in_.size()) {
    in_.clear();
    in_pos_ = 0;
  } else if (in_pos_ >= kReadCompactAt) {
    in_.erase(0, in_pos_);
    in_pos_ = 0;
  }
  auto bytes = co_await transport_.read();
  if (bytes.empty()) {
    peer_gone_ = true;
    state_ = State::closed;
    if (!close_received_) close_code_ = close_sent_ ? close_code_ : kAbnormal;
    co_return false;
  }
  in_.append(bytes);
  co_return true;
}

// --- Send -------------------------------------------------------------------------------

asio::awaitable<void> Session::operator()(SendEvent event) {
  // Another coroutine may send to this session (a chat broadcasting): keep it alive
  // until that send returns, even if this session's own app and connection end meanwhile.
  auto keep_alive = shared_from_this();
  if (auto* a = std::get_if<WebSocketAccept>(&event)) {
    if (state_ != State::connecting && state_ != State::connect_delivered)
      throw ProtocolError(accepted_ ? "websocket.accept sent twice"
                                    : "websocket.accept after the handshake was denied");
    co_await accept(*a);
  } else if (auto* s = std::get_if<WebSocketSend>(&event)) {
    if (state_ == State::connecting || state_ == State::connect_delivered)
      throw ProtocolError("websocket.send before websocket.accept");
    if (close_sent_ || peer_gone_) throw ClientDisconnected("websocket closed");
    if (s->text && !valid_utf8(s->data)) throw ProtocolError("websocket.send text is not UTF-8");
    if (!co_await send_frame(s->text ? Opcode::text : Opcode::binary, s->data))
      throw ClientDisconnected("websocket closed");
  } else if (auto* c = std::get_if<WebSocketClose>(&event)) {
    if (state_ == State::connecting || state_ == State::connect_delivered) {
      co_await transport_.deny(403);
      state_ = State::closed;
      denied_ = true;
      co_return;
    }
    if (close_sent_ || peer_gone_) co_return;
    if (c->code != kNormal && !is_valid_close_code(c->code))
      throw ProtocolError(fmt::format("invalid websocket close code {}", c->code));
    co_await close(c->code, c->reason);
  } else {
    throw ProtocolError("only websocket messages may be sent in a websocket scope");
  }
}

asio::awaitable<void> Session::accept(const WebSocketAccept& a) {
  if (!a.subprotocol.empty() &&
      std::find(subprotocols_.begin(), subprotocols_.end(), a.subprotocol) == subprotocols_.end())
    throw ProtocolError(fmt::format("subprotocol '{}' was not offered", a.subprotocol));
  check_fields(a.headers, "websocket.accept header");
  std::vector<Header> headers;
  std::string accept;
  if (!key_.empty()) {
    accept = accept_key(key_);
    headers.push_back({"sec-websocket-accept", accept});
  }
  if (!a.subprotocol.empty()) headers.push_back({"sec-websocket-protocol", a.subprotocol});
  headers.insert(headers.end(), a.headers.begin(), a.headers.end());
  if (!co_await transport_.accept(headers)) {
    peer_gone_ = true;
    state_ = State::closed;
    close_code_ = kAbnormal;
    throw ClientDisconnected("client left during the websocket handshake");
  }
  state_ = State::open;
  accepted_ = true;
  last_pong_ = Clock::now();
  if (worker_.config().ws_ping_interval > 0)
    asio::co_spawn(worker_.io(), ping_loop(), [self = shared_from_this()](std::exception_ptr) {});
}

// Our close frame; the peer's answer is awaited by whoever reads next (the app's
// receive(), or run() once the app is done), bounded by the close deadline.
asio::awaitable<void> Session::close(int code, std::string_view reason) {
  if (close_sent_ || peer_gone_) co_return;
  close_sent_ = true;
  close_code_ = code;
  close_reason_ = reason;
  arm_close_deadline();
  co_await send_frame(Opcode::close, close_payload(code, reason));
}

void Session::arm_close_deadline() {
  close_deadline_.expires_after(kCloseTimeout);
  close_deadline_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->close_received_ || self->peer_gone_) return;
    self->transport_.abort();  // the peer never answered our close
  });
}

asio::awaitable<void> Session::wait_for_peer_close() {
  while (!close_received_ && !peer_gone_) {
    auto ev = co_await next_message();  // data after our close is read and dropped
    if (std::holds_alternative<WebSocketDisconnect>(ev)) break;
  }
}

asio::awaitable<bool> Session::send_frame(Opcode opcode, std::string_view payload) {
  while (writing_) co_await write_turn_.async_wait(use_nothrow);
  if (finished_ || (peer_gone_ && opcode != Opcode::close)) co_return false;
  writing_ = true;
  frame_out_.clear();
  append_header(frame_out_, opcode, payload.size());
  frame_out_.append(payload);
  bool ok = co_await transport_.write(frame_out_);
  writing_ = false;
  write_turn_.cancel();  // the next sender, if any, goes on
  if (!ok) peer_gone_ = true;
  co_return ok;
}

// Pings every ws_ping_interval; a pong must come within ws_ping_timeout, else the
// connection is dropped and the app hears 1011 (as Uvicorn's websockets does).
asio::awaitable<void> Session::ping_loop() {
  const auto& c = worker_.config();
  std::uint32_t counter = 0;
  while (!finished_ && !close_sent_ && !peer_gone_) {
    ping_timer_.expires_after(seconds(c.ws_ping_interval));
    if (auto [ec] = co_await ping_timer_.async_wait(use_nothrow); ec || finished_) co_return;
    if (close_sent_ || peer_gone_) co_return;
    const auto sent = Clock::now();
    std::string payload = fmt::format("{:08x}", ++counter);
    if (!co_await send_frame(Opcode::ping, payload)) co_return;
    ping_timer_.expires_after(seconds(c.ws_ping_timeout));
    if (auto [ec] = co_await ping_timer_.async_wait(use_nothrow); ec || finished_) co_return;
    if (last_pong_ < sent && !close_received_ && !peer_gone_) {
      log::info("WebSocket from {}: no pong within {}s, closing", scope_.client.host,
                c.ws_ping_timeout);
      close_code_ = kInternalError;
      close_reason_ = "keepalive ping timeout";
      close_sent_ = true;
      peer_gone_ = true;
      state_ = State::closed;
      transport_.abort();
      co_return;
    }
  }
}

}  // namespace tricorn::worker::websocket
