// The pieces of the write path and of accepted sockets that the integration tests reach
// only through timing: the output buffer's inline bytes, a write that the socket takes
// only in part, and a socket that enters epoll only when it first waits.
#include "worker/output_buffer.hpp"
#include "worker/stream.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace tricorn::worker {
namespace {

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + i % 26);
  return s;
}

std::string read_all(int fd, size_t n) {
  std::string got;
  char buf[65536];
  while (got.size() < n) {
    ssize_t r = ::read(fd, buf, sizeof buf);
    REQUIRE(r > 0);
    got.append(buf, static_cast<size_t>(r));
  }
  return got;
}

TEST_CASE(
    "OutputBuffer keeps its bytes inline, then grows, drops a written prefix, and "
    "gives grown memory back") {
  OutputBuffer out;
  out.append("HTTP/1.1 200 OK\r\n");
  CHECK(out.view() == "HTTP/1.1 200 OK\r\n");
  const std::string big = pattern(1000);  // past the 256 inline bytes
  out.append(big);
  CHECK(out.view() == "HTTP/1.1 200 OK\r\n" + big);
  out.drop_front(17);
  CHECK(out.view() == big);
  out.drop_front(big.size());
  CHECK(out.empty());
  out.release();
  out.append("again");
  CHECK(out.view() == "again");
}

struct Pair {
  int fds[2];
  Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0); }
  ~Pair() {
    for (int fd : fds)
      if (fd >= 0) ::close(fd);
  }
  int take(int i) { return std::exchange(fds[i], -1); }
};

// As the worker holds an accepted socket: non-blocking (accept4's SOCK_NONBLOCK), and
// not yet in epoll.
Socket unregistered_socket(asio::io_context& io, int fd) {
  REQUIRE(::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) == 0);
  Socket s(io);
  adopt_unregistered(s, Socket::protocol_type(AF_UNIX, 0), fd);
  return s;
}

TEST_CASE(
    "write_now writes what the socket takes and says how much; the rest is the "
    "caller's") {
  asio::io_context io;
  Pair p;
  int small = 4096;
  ::setsockopt(p.fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  Stream stream(unregistered_socket(io, p.take(0)));
  const std::string head = "head:", body = pattern(1 << 20);
  boost::system::error_code ec;
  const size_t n = stream.write_now(head, body, ec);
  CHECK_FALSE(ec);
  CHECK(n > head.size());
  CHECK(n < head.size() + body.size());  // a full socket takes part, without blocking
  const std::string all = head + body;
  CHECK(read_all(p.fds[1], n) == all.substr(0, n));
  CHECK(stream.write_now({}, "x", ec) == 1);  // room again once the peer read
}

TEST_CASE("write_now reports a closed peer as an error, without SIGPIPE") {
  asio::io_context io;
  Pair p;
  Stream stream(unregistered_socket(io, p.take(0)));
  ::close(p.take(1));
  boost::system::error_code ec;
  CHECK(stream.write_now("hello", {}, ec) == 0);
  CHECK(ec == boost::system::errc::broken_pipe);
}

TEST_CASE(
    "an unregistered socket is registered by its first wait and then reads what "
    "arrived before") {
  asio::io_context io;
  Pair p;
  Stream stream(unregistered_socket(io, p.take(0)));
  REQUIRE(::write(p.fds[1], "early", 5) == 5);  // before the socket is in epoll
  std::string got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        char buf[16];
        auto [ec, n] = co_await stream.read_some(asio::buffer(buf));
        REQUIRE_FALSE(ec);
        got.assign(buf, n);
        // Now it waits: only epoll can say when the next bytes come.
        auto [ec2, n2] = co_await stream.read_some(asio::buffer(buf));
        REQUIRE_FALSE(ec2);
        got.append(buf, n2);
      },
      asio::detached);
  io.poll();
  CHECK(got == "early");
  REQUIRE(::write(p.fds[1], "late", 4) == 4);
  io.run_for(std::chrono::seconds(5));
  CHECK(got == "earlylate");
}

}  // namespace
}  // namespace tricorn::worker
