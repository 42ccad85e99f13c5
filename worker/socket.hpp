// The socket type connections use: generic, so TCP over IPv4/IPv6 and unix sockets share
// one code path.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

namespace tricorn::worker {

namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;

// Expected failures (EOF, resets, cancellation by a deadline) come back as values.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// recv, send and sendmsg for the request path, without glibc's wrappers: those make
// each a thread cancellation point by switching asynchronous cancellation on and off
// around the call, about 60 instructions per keep-alive request (a fifth of what the
// request's two system calls cost in user space). A worker never cancels a thread.
// Same results: -1 with errno on failure.
inline ssize_t sys_recv(int fd, void* buf, size_t size, int flags) {
  return ::syscall(SYS_recvfrom, fd, buf, size, flags, nullptr, nullptr);
}
inline ssize_t sys_send(int fd, const void* buf, size_t size, int flags) {
  return ::syscall(SYS_sendto, fd, buf, size, flags, nullptr, 0);
}
inline ssize_t sys_sendmsg(int fd, const msghdr* msg, int flags) {
  return ::syscall(SYS_sendmsg, fd, msg, flags);
}

// A socket Asio did not open itself (an accepted one included) is one Asio takes for a
// possible duplicate of another descriptor, so it removes it from epoll before closing it;
// and it makes it non-blocking with ioctl(FIONBIO) before its first operation: a system
// call each per connection. A socket from accept4(SOCK_NONBLOCK) is neither a duplicate
// (closing the only descriptor of a socket takes it out of epoll) nor blocking. This sets
// Asio's state to say so; it reaches into the reactive socket service of Boost 1.81 (a
// changed layout would not compile).
struct SocketAccess : Socket {
  static auto& impl(Socket& s) { return (s.*&SocketAccess::impl_).get_implementation(); }
};

inline void adopt_accepted(Socket& socket) {
  namespace ops = asio::detail::socket_ops;
  auto& state = SocketAccess::impl(socket).state_;
  state = (state & ~ops::possible_dup) | ops::internal_non_blocking;
}

// An accepted socket that Asio holds without registering it with the reactor: a new
// connection whose request has arrived, is answered at once and closed never waits, and
// then never needs its epoll_ctl(ADD) (nor the kernel's removal from the set at close).
// The first operation that must wait registers it (register_if_deferred); an unregistered
// socket is one that is open with no reactor state, which Asio's close, cancel and
// release accept as they are. The descriptor must be non-blocking already (accept4's
// SOCK_NONBLOCK), as Asio's state then says. Epoll reports a descriptor that is already readable
// when it is added, so nothing that arrived before is missed.
inline void adopt_unregistered(Socket& socket, Socket::protocol_type protocol, int fd) {
  namespace ops = asio::detail::socket_ops;
  auto& impl = SocketAccess::impl(socket);
  impl.socket_ = fd;
  impl.state_ = ops::stream_oriented | ops::internal_non_blocking;
  impl.protocol_ = protocol;
}

// A registration that fails leaves no reactor state: the operation then fails
// (bad_descriptor) and the connection closes.
inline bool is_deferred(Socket& socket) {
  auto& impl = SocketAccess::impl(socket);
  return impl.socket_ != asio::detail::invalid_socket && !impl.reactor_data_;
}
inline void register_if_deferred(Socket& socket, asio::detail::reactor& reactor) {
  auto& impl = SocketAccess::impl(socket);
  if (is_deferred(socket)) reactor.register_descriptor(impl.socket_, impl.reactor_data_);
}
// For callers without the reactor at hand: looked up (a walk of the loop's services)
// only for a socket that still needs it, once per connection at most.
inline void register_if_deferred(Socket& socket) {
  if (is_deferred(socket))
    register_if_deferred(socket, asio::use_service<asio::detail::reactor>(
                                     asio::query(socket.get_executor(), asio::execution::context)));
}

// The family and protocol the socket was opened with, which Asio keeps (no system call).
inline Socket::protocol_type protocol_of(Socket& socket) {
  return SocketAccess::impl(socket).protocol_;
}

// What a connection needs to know about the listener that accepted it.
struct ListenerInfo {
  std::string scheme = "http";
  std::string server_host;  // empty for unix sockets
  unsigned short server_port = 0;
  bool is_unix = false;
};

}  // namespace tricorn::worker
