// Accepting a connection with one system call. Asio accepts with accept(2) and then
// makes the socket non-blocking with ioctl(FIONBIO) before its first read: two calls per
// connection where nginx makes one, accept4(SOCK_NONBLOCK). This is Asio's own accept
// operation, reduced to what tricorn needs and calling accept4: a reactor operation
// queued on the listening socket, performed at once when a connection is already waiting
// and otherwise when epoll reports one. It uses Asio's reactor interface (Boost 1.81,
// detail namespace); a change there fails to compile rather than misbehave.
#pragma once

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

namespace accept_detail {

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
      int fd = ::accept4(o->listener_, reinterpret_cast<sockaddr*>(&o->accepted_.address), &length,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
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

struct ListeningAccess : Listening {
  static auto& impl(Listening& l) { return (l.*&ListeningAccess::impl_).get_implementation(); }
};

}  // namespace accept_detail

// Completes with the accepted descriptor (non-blocking, close-on-exec) and the peer's
// address. The listening socket must already be non-blocking (it is shared with the
// other workers, which want the same). Closing it cancels the accept (operation_aborted).
template <typename Token>
auto async_accept4(Listening& listening, Token&& token) {
  return asio::async_initiate<Token, void(boost::system::error_code, Accepted)>(
      [&listening](auto handler) {
        using Op = accept_detail::Accept4Op<decltype(handler), Listening::executor_type>;
        auto& impl = accept_detail::ListeningAccess::impl(listening);
        auto& reactor = asio::use_service<asio::detail::reactor>(
            asio::query(listening.get_executor(), asio::execution::context));
        const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
        typename Op::ptr p = {asio::detail::addressof(handler), Op::ptr::allocate(handler),
                              nullptr};
        p.p = new (p.v) Op(impl.socket_, handler, listening.get_executor());
        reactor.start_op(asio::detail::reactor::read_op, impl.socket_, impl.reactor_data_, p.p,
                         is_continuation, true);
        p.v = p.p = nullptr;
      },
      token);
}

}  // namespace tricorn::worker
