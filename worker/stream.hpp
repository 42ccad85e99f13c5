// The byte stream a connection speaks over: a plain socket or TLS on one. A variant
// rather than a template, so each protocol is compiled once; both alternatives return
// the same awaitable types, so the dispatch costs a branch, not a coroutine frame.
#pragma once

#include "worker/socket.hpp"

#include <tricorn/app.hpp>

#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <memory>
#include <string_view>
#include <tuple>
#include <variant>

namespace tricorn::worker {

using TlsSocket = asio::ssl::stream<Socket>;

class Stream {
 public:
  explicit Stream(Socket socket) : s_(std::move(socket)) {}
  explicit Stream(std::unique_ptr<TlsSocket> tls) : s_(std::move(tls)) {}

  // Who is at the other end: the socket's peer, or the client a PROXY header named.
  // Host empty for unix sockets.
  const Address& peer() const { return peer_; }
  void set_peer(Address peer) { peer_ = std::move(peer); }

  template <typename Buffers>
  asio::awaitable<std::tuple<boost::system::error_code, size_t>> read_some(const Buffers& b) {
    if (auto* plain = std::get_if<Socket>(&s_)) {
      register_if_deferred(*plain);
      return plain->async_read_some(b, use_nothrow);
    }
    return std::get<1>(s_)->async_read_some(b, use_nothrow);
  }

  template <typename Buffers>
  asio::awaitable<std::tuple<boost::system::error_code, size_t>> write(const Buffers& b) {
    if (writes_until_nodelay_ && --writes_until_nodelay_ == 0) set_nodelay();
    if (auto* plain = std::get_if<Socket>(&s_)) {
      register_if_deferred(*plain);
      return asio::async_write(*plain, b, use_nothrow);
    }
    return asio::async_write(*std::get<1>(s_), b, use_nothrow);
  }

  // The socket, for an Asio operation started on it directly (see adopt_unregistered).
  Socket& socket_to_wait_on() {
    register_if_deferred(socket());
    return socket();
  }

  // One non-blocking send of `first` then `second`, where the socket is plain: how many
  // bytes it took (0 when it would block, and always over TLS). A response nearly always
  // fits the socket's buffer, and then this is its whole write: no Asio operation, no
  // turn of the event loop to complete one. What is left goes through write(), with its
  // deadline. An error comes back in `ec`.
  size_t write_now(std::string_view first, std::string_view second, boost::system::error_code& ec) {
    auto* plain = std::get_if<Socket>(&s_);
    if (!plain) return 0;
    if (writes_until_nodelay_ && --writes_until_nodelay_ == 0) set_nodelay();
    for (;;) {
      const ssize_t n = send_now(plain->native_handle(), first, second);
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        ec = boost::system::error_code(errno, asio::error::get_system_category());
      return 0;
    }
  }

  Socket& socket() {
    if (auto* plain = std::get_if<Socket>(&s_)) return *plain;
    return std::get<1>(s_)->next_layer();
  }
  bool is_tls() const { return s_.index() == 1; }
  TlsSocket* tls() { return is_tls() ? std::get<1>(s_).get() : nullptr; }
  Socket::executor_type executor() { return socket().get_executor(); }
  int native_handle() { return socket().native_handle(); }
  void cancel() {
    boost::system::error_code ignored;
    socket().cancel(ignored);
  }

  // TCP_NODELAY, set just before the second write: Nagle can hold back a write only
  // while an earlier one is unacknowledged, so a connection that writes once (a request
  // with Connection: close) never needs the system call; nginx sets it as late.
  void set_nodelay_before_second_write() { writes_until_nodelay_ = 2; }
  // Kept by a parked connection, which holds only the descriptor.
  int writes_until_nodelay() const { return writes_until_nodelay_; }
  void set_writes_until_nodelay(int n) { writes_until_nodelay_ = n; }
  void set_nodelay() {
    int one = 1;
    ::setsockopt(native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

 private:
  // One piece goes with send(2): the kernel copies no msghdr and iovec for it.
  static ssize_t send_now(int fd, std::string_view first, std::string_view second) {
    constexpr int kFlags = MSG_NOSIGNAL | MSG_DONTWAIT;
    if (second.empty()) return sys_send(fd, first.data(), first.size(), kFlags);
    iovec iov[2] = {{const_cast<char*>(first.data()), first.size()},
                    {const_cast<char*>(second.data()), second.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    return sys_sendmsg(fd, &msg, kFlags);
  }

  std::variant<Socket, std::unique_ptr<TlsSocket>> s_;
  Address peer_;
  int writes_until_nodelay_ = 0;  // 0: set already, or not a TCP socket
};

}  // namespace tricorn::worker
