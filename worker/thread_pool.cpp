#include "worker/thread_pool.hpp"

#include "common/log.hpp"
#include "worker/socket.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>

namespace tricorn::worker {

ThreadPool::ThreadPool(asio::io_context& io, unsigned threads) : io_(io) {
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) throw std::runtime_error("eventfd failed");
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { work(); });
  asio::co_spawn(io_, run_completions(), asio::detached);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  jobs_ready_.notify_all();
  // A handler still blocked at exit keeps its thread: the worker is ending anyway.
  for (auto& t : threads_) t.detach();
}

void ThreadPool::submit(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  jobs_ready_.notify_one();
}

void ThreadPool::post_to_loop(std::function<void()> fn) {
  bool first;
  {
    std::lock_guard lock(mutex_);
    first = completions_.empty();
    completions_.push_back(std::move(fn));
  }
  if (first) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(event_fd_, &one, sizeof one);
  }
}

void ThreadPool::work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock lock(mutex_);
      jobs_ready_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

asio::awaitable<void> ThreadPool::run_completions() {
  asio::posix::stream_descriptor wake(io_, ::dup(event_fd_));
  std::vector<std::function<void()>> batch;
  for (;;) {
    auto [ec] = co_await wake.async_wait(asio::posix::stream_descriptor::wait_read, use_nothrow);
    if (ec) co_return;
    std::uint64_t count;
    [[maybe_unused]] auto n = ::read(event_fd_, &count, sizeof count);
    {
      std::lock_guard lock(mutex_);
      batch.swap(completions_);
    }
    for (auto& fn : batch) fn();
    batch.clear();
  }
}

}  // namespace tricorn::worker
