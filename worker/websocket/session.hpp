// WebSocket (RFC 6455) for the app, over whatever carried the handshake: an HTTP/1.1
// connection after `Upgrade: websocket`, or an HTTP/2 stream opened with extended
// CONNECT (RFC 8441). The protocols implement Transport (bytes in, bytes out); the
// session does the framing, the close handshake, pings, and the ASGI websocket messages.
//
// Reading happens when the app calls receive(): a client is held back by TCP (or its
// HTTP/2 window) while the app does not read, and pings sent to it are answered then.
// Writes are serialised: the app's own send() calls, sends from other coroutines (a
// chat broadcasting to this client), pongs and close frames never interleave.
#pragma once

#include "worker/socket.hpp"
#include "worker/websocket/frame.hpp"

#include <tricorn/app.hpp>

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tricorn::worker {
class Worker;
}

namespace tricorn::worker::websocket {

class Transport {
 public:
  // Completes the handshake: 101 (HTTP/1.1) or 200 (HTTP/2) with these headers.
  // False: the client has gone.
  virtual asio::awaitable<bool> accept(std::span<const Header> headers) = 0;
  // Refuses the handshake with an HTTP response of this status.
  virtual asio::awaitable<void> deny(int status) = 0;
  // The next bytes from the client, valid until the next read(); empty: it has gone.
  virtual asio::awaitable<std::string_view> read() = 0;
  // False: the client has gone. Never called again before the previous call returned.
  virtual asio::awaitable<bool> write(std::string_view bytes) = 0;
  // No more output: the connection will be closed, or the stream ended.
  virtual asio::awaitable<void> finish() = 0;
  // Drops the connection (resets the stream) now; a pending read() returns empty.
  virtual void abort() = 0;

 protected:
  ~Transport() = default;
};

// Does an HTTP/1.1 request with `Upgrade: websocket` make a valid opening handshake?
// (RFC 6455 section 4.2.1.) The status to answer with when it does not: 400, or 426
// for a version other than 13.
struct HandshakeCheck {
  int error_status = 0;
  std::string_view why;
};
HandshakeCheck check_http1_handshake(const Scope& scope);

// The Sec-WebSocket-Accept value for a Sec-WebSocket-Key.
std::string accept_key(std::string_view key);

class Session final : public Receive, public Send, public std::enable_shared_from_this<Session> {
 public:
  // `scope` is the request's; run() turns it into a websocket scope. `key` is the
  // client's Sec-WebSocket-Key (empty on HTTP/2, which has none).
  Session(Worker& worker, Scope& scope, Transport& transport, std::string_view key);

  // Runs the app, then completes the close handshake. Returns when the transport is done.
  asio::awaitable<void> run(std::string_view target_for_log);
  // The worker is retiring: after the drain window, close with 1001.
  void on_drain();

  asio::awaitable<ReceiveEvent> operator()() override;
  asio::awaitable<void> operator()(SendEvent event) override;

 private:
  enum class State : std::uint8_t { connecting, connect_delivered, open, closed };
  using Clock = std::chrono::steady_clock;

  asio::awaitable<void> accept(const WebSocketAccept& accept);
  asio::awaitable<void> close(int code, std::string_view reason);
  asio::awaitable<ReceiveEvent> next_message();
  asio::awaitable<bool> handle_control(const Frame& frame);
  asio::awaitable<ReceiveEvent> fail(int code, std::string_view why);
  asio::awaitable<bool> read_more();
  asio::awaitable<bool> send_frame(Opcode opcode, std::string_view payload);
  asio::awaitable<void> ping_loop();
  asio::awaitable<void> wait_for_peer_close();
  void arm_close_deadline();
  WebSocketDisconnect disconnect() const { return {close_code_, close_reason_}; }

  Worker& worker_;
  Scope& scope_;
  Transport& transport_;
  std::string key_;
  std::vector<std::string_view> subprotocols_;
  State state_ = State::connecting;
  bool accepted_ = false;
  bool denied_ = false;
  bool finished_ = false;

  // Input: bytes not yet parsed, the message being assembled, the one handed out.
  std::string in_;
  size_t in_pos_ = 0;
  std::string message_;
  Opcode message_opcode_ = Opcode::continuation;  // continuation: none in progress
  Utf8Validator utf8_;
  std::string delivered_;

  // The close handshake.
  bool close_sent_ = false;
  bool close_received_ = false;
  bool peer_gone_ = false;
  int close_code_ = 1005;
  std::string close_reason_;
  asio::steady_timer close_deadline_;

  // Output.
  bool writing_ = false;
  asio::steady_timer write_turn_;  // senders wait here while another one writes
  std::string frame_out_;

  asio::steady_timer ping_timer_;
  Clock::time_point last_pong_;
  asio::steady_timer drain_timer_;
};

}  // namespace tricorn::worker::websocket
