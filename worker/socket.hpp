// The socket type connections use: generic, so TCP over IPv4/IPv6 and unix sockets share
// one code path.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <string>

namespace tricorn::worker {

namespace asio = boost::asio;
using Socket = asio::generic::stream_protocol::socket;

// Expected failures (EOF, resets, cancellation by a deadline) come back as values.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// Asio takes a socket it did not open itself (an accepted one included) for a possible
// duplicate of another descriptor, and so removes it from epoll before closing it: a
// system call per connection. An accepted socket has no duplicate, and closing the only
// descriptor of a socket takes it out of epoll anyway. This clears Asio's flag; it
// reaches into the reactive socket service of Boost 1.81 (a changed layout would not
// compile), and the state bits are checked where Asio reads them, in destroy/close.
inline void forget_possible_dup(Socket& socket) {
  struct Access : Socket {
    static auto& state(Socket& s) { return (s.*&Access::impl_).get_implementation().state_; }
  };
  Access::state(socket) &= ~asio::detail::socket_ops::possible_dup;
}

// What a connection needs to know about the listener that accepted it.
struct ListenerInfo {
  std::string scheme = "http";
  std::string server_host;  // empty for unix sockets
  unsigned short server_port = 0;
  bool is_unix = false;
};

}  // namespace tricorn::worker
