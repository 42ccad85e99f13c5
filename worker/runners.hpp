// Coroutines kept and reused within a worker, to run one job after another: an HTTP/2
// stream's app, an HTTP/1.1 connection. co_spawn per job made a coroutine "thread" for
// each (its entry frame, a dispatch to start, a post and a dispatch to end). A runner
// runs a job, then waits for the next; a job starts on a waiting runner by resuming it,
// at once, as co_spawn would have started a new one. Runners beyond kMaxIdle end.
//
// Job: movable; `co_await job.run()` runs it; assigning Job{} lets go of what it holds.
// An exception that escapes a job is logged, and the runner goes on.
#pragma once

#include "common/log.hpp"
#include "worker/socket.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <string_view>
#include <vector>

namespace tricorn::worker {

template <typename Job>
class Runners : public asio::execution_context::service {
 public:
  using key_type = Runners;
  static inline asio::execution_context::id id;
  explicit Runners(asio::execution_context& context) : service(context) {}
  static Runners& of(const asio::any_io_executor& ex) {
    return asio::use_service<Runners>(asio::query(ex, asio::execution::context));
  }

  void run(const asio::any_io_executor& ex, Job job) {
    if (idle_.empty()) {
      asio::co_spawn(ex, runner(std::move(job)), [](std::exception_ptr e) {
        if (e) log_failure("runner", e);
      });
      return;
    }
    Waiting resume = std::move(idle_.back());
    idle_.pop_back();
    std::move(resume)(std::move(job));
  }

 private:
  static constexpr size_t kMaxIdle = 256;
  // What `co_await next()` leaves behind: Asio's handler that resumes the runner (Boost
  // 1.81's detail namespace, as worker/reactor_ops.hpp).
  using Waiting = asio::detail::awaitable_handler<asio::any_io_executor, Job>;

  asio::awaitable<void> runner(Job job) {
    for (;;) {
      try {
        co_await job.run();
      } catch (...) {
        log_failure(Job::kWhat, std::current_exception());
      }
      job = {};  // what it held goes now, not when the next job comes
      if (closed_ || idle_.size() >= kMaxIdle) co_return;
      job = co_await next();
    }
  }

  asio::awaitable<Job> next() {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(Job)>(
        [this](Waiting resume) { idle_.push_back(std::move(resume)); }, asio::use_awaitable);
  }

  // A socket error is how a connection ends (debug); anything else is a failure.
  static void log_failure(std::string_view what, std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const boost::system::system_error& ex) {
      log::debug("{} closed: {}", what, ex.what());
    } catch (const std::exception& ex) {
      log::error("{} closed on an error: {}", what, ex.what());
    }
  }

  void shutdown() override {
    closed_ = true;
    idle_.clear();  // their frames are destroyed with the event loop
  }

  std::vector<Waiting> idle_;
  bool closed_ = false;
};

}  // namespace tricorn::worker
