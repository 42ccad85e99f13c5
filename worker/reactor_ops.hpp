// Two socket operations of our own on Asio's reactor, where Asio's cost a system call or
// a buffer that nginx does without. Each is a reactor operation queued on the socket,
// performed at once when it can complete and otherwise when epoll reports the socket
// ready, exactly as Asio's own operations are; they use Asio's reactor interface (Boost
// 1.81, detail namespace), and a change there fails to compile rather than misbehave.
//
// async_accept4: Asio accepts with accept(2) and then makes the socket non-blocking with
//   ioctl(FIONBIO) before its first read, two calls where accept4(SOCK_NONBLOCK) is one.
// async_read_pooled: a read that takes its buffer from the worker's pool only when it is
//   performed, and gives it back when there is nothing to read. A connection waiting for
//   its next request (or an HTTP/2 connection waiting for frames) then holds no buffer,
//   and waiting costs no system call: the other ways are a buffer per idle connection
//   (async_read_some) or an epoll_ctl per wait (async_wait re-arms the descriptor).
#pragma once

#include "worker/buffer_pool.hpp"
#include "worker/socket.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/memory.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/error.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace tricorn::worker {

// The listening socket, held in a plain socket object: nothing but async_accept4 is
// ever started on it, and closing it cancels that.
using Listening = Socket;

struct Accepted {
  int fd = -1;
  sockaddr_storage address{};  // the peer
};

// A read into a pool buffer: what async_read_pooled hands over.
struct PooledRead {
  size_t bytes = 0;
  std::unique_ptr<char[]> buffer;  // the pool's size; null when nothing was read
};

// One recv into a buffer from `pool`, taken for the call and given back unless bytes
// came: true with them in `read`; false with `ec` set at EOF or on an error, or with
// `ec` clear when there is nothing to read yet. MSG_DONTWAIT: it never blocks, whatever
// state the descriptor is in.
inline bool read_pooled_now(int fd, BufferPool& pool, PooledRead& read,
                            boost::system::error_code& ec) {
  if (!read.buffer) read.buffer = pool.take();
  for (;;) {
    const ssize_t n = sys_recv(fd, read.buffer.get(), pool.size(), MSG_DONTWAIT);
    if (n > 0) {
      read.bytes = static_cast<size_t>(n);
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0)
      ec = asio::error::eof;
    else if (errno != EAGAIN && errno != EWOULDBLOCK)
      ec = boost::system::error_code(errno, asio::error::get_system_category());
    pool.give(std::move(read.buffer));
    return false;
  }
}

namespace reactor_detail {

template <typename Handler, typename IoExecutor>
class Accept4Op : public asio::detail::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(Accept4Op);

  Accept4Op(int listener, Handler& handler, const IoExecutor& io_ex)
      : reactor_op(boost::system::error_code(), &Accept4Op::do_perform, &Accept4Op::do_complete),
        listener_(listener),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<Accept4Op*>(base);
    for (;;) {
      socklen_t length = sizeof o->accepted_.address;
      // Without glibc's cancellation-point wrapper (see sys_recv in worker/socket.hpp).
      int fd = static_cast<int>(::syscall(SYS_accept4, o->listener_, &o->accepted_.address, &length,
                                          SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (fd >= 0) {
        o->accepted_.fd = fd;
        return done;
      }
      // A peer that reset before it was accepted is skipped, as Asio does by default.
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
      o->ec_ = boost::system::error_code(errno, asio::error::get_system_category());
      return done;
    }
  }

  static void do_complete(void* owner, asio::detail::operation* base,
                          const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<Accept4Op*>(base);
    ptr p = {asio::detail::addressof(o->handler_), o, o};
    asio::detail::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // The handler is moved out so that the operation's memory is freed before the upcall.
    asio::detail::binder2<Handler, boost::system::error_code, Accepted> handler(o->handler_, o->ec_,
                                                                                o->accepted_);
    p.h = asio::detail::addressof(handler.handler_);
    p.reset();
    if (owner) {
      asio::detail::fenced_block b(asio::detail::fenced_block::half);
      w.complete(handler, handler.handler_);
    } else if (handler.arg2_.fd >= 0) {
      ::close(handler.arg2_.fd);  // the event loop is being destroyed: nobody will serve it
    }
  }

 private:
  int listener_;
  Handler handler_;
  asio::detail::handler_work<Handler, IoExecutor> work_;
  Accepted accepted_;
};

template <typename Handler, typename IoExecutor>
class PooledReadOp : public asio::detail::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(PooledReadOp);

  PooledReadOp(int fd, BufferPool& pool, Handler& handler, const IoExecutor& io_ex)
      : reactor_op(boost::system::error_code(), &PooledReadOp::do_perform,
                   &PooledReadOp::do_complete),
        fd_(fd),
        pool_(pool),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<PooledReadOp*>(base);
    if (read_pooled_now(o->fd_, o->pool_, o->read_, o->ec_))
      // A short read drained the socket: like Asio's own read, tell the reactor not to
      // try the next read before epoll says there is data.
      return o->read_.bytes < o->pool_.size() ? done_and_exhausted : done;
    return o->ec_ ? done_and_exhausted : not_done;
  }

  static void do_complete(void* owner, asio::detail::operation* base,
                          const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<PooledReadOp*>(base);
    ptr p = {asio::detail::addressof(o->handler_), o, o};
    asio::detail::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    asio::detail::move_binder2<Handler, boost::system::error_code, PooledRead> handler(
        0, std::move(o->handler_), o->ec_, std::move(o->read_));
    p.h = asio::detail::addressof(handler.handler_);
    p.reset();
    if (owner) {
      asio::detail::fenced_block b(asio::detail::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  int fd_;
  BufferPool& pool_;
  Handler handler_;
  asio::detail::handler_work<Handler, IoExecutor> work_;
  PooledRead read_;
};

template <template <typename, typename> class Op>
struct Completion;
template <>
struct Completion<Accept4Op> {
  using signature = void(boost::system::error_code, Accepted);
};
template <>
struct Completion<PooledReadOp> {
  using signature = void(boost::system::error_code, PooledRead);
};

// Starts Op on the socket the way Asio starts its own reactor operations.
template <template <typename, typename> class Op, typename Token, typename... Args>
auto start_reactor_op(Socket& socket, asio::detail::reactor& reactor, Token&& token,
                      Args&... args) {
  return asio::async_initiate<Token, typename Completion<Op>::signature>(
      [&socket, &reactor, &args...](auto handler) {
        using TheOp = Op<decltype(handler), Socket::executor_type>;
        register_if_deferred(socket, reactor);
        auto& impl = SocketAccess::impl(socket);
        const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
        typename TheOp::ptr p = {asio::detail::addressof(handler), TheOp::ptr::allocate(handler),
                                 nullptr};
        p.p = new (p.v) TheOp(impl.socket_, args..., handler, socket.get_executor());
        // As Asio's start_op: the operation calls the socket directly, so it must not block.
        // (A socket from async_accept4 is non-blocking already, and says so.)
        namespace ops = asio::detail::socket_ops;
        if ((impl.state_ & ops::non_blocking) ||
            ops::set_internal_non_blocking(impl.socket_, impl.state_, true, p.p->ec_))
          reactor.start_op(asio::detail::reactor::read_op, impl.socket_, impl.reactor_data_, p.p,
                           is_continuation, true);
        else
          reactor.post_immediate_completion(p.p, is_continuation);
        p.v = p.p = nullptr;
      },
      token);
}

}  // namespace reactor_detail

// Completes with the accepted descriptor (non-blocking, close-on-exec) and the peer's
// address. The listening socket must already be non-blocking (it is shared with the
// other workers, which want the same). Closing it cancels the accept (operation_aborted).
// `reactor` is the socket's event loop's (Worker::reactor(): looked up once, since Asio's
// use_service compares type names on every call).
template <typename Token>
auto async_accept4(Listening& listening, asio::detail::reactor& reactor, Token&& token) {
  return reactor_detail::start_reactor_op<reactor_detail::Accept4Op>(listening, reactor,
                                                                     std::forward<Token>(token));
}

// Completes with the bytes read and the buffer holding them (eof: the peer closed).
// The socket must be non-blocking in Asio's state (adopt_accepted, or any earlier
// operation). A deadline cancels it like any operation on the socket.
template <typename Token>
auto async_read_pooled(Socket& socket, asio::detail::reactor& reactor, BufferPool& pool,
                       Token&& token) {
  return reactor_detail::start_reactor_op<reactor_detail::PooledReadOp>(
      socket, reactor, std::forward<Token>(token), pool);
}

}  // namespace tricorn::worker
