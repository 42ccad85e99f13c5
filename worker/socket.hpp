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

// What a connection needs to know about the listener that accepted it.
struct ListenerInfo {
  std::string scheme = "http";
  std::string server_host;  // empty for unix sockets
  unsigned short server_port = 0;
  bool is_unix = false;
};

}  // namespace tricorn::worker
