// Threads for blocking handlers (`threads`), started in the worker after the fork and
// only for an app that has a blocking handler. Jobs go to the threads through a locked
// queue; what a thread hands back to the event loop goes through another one and an
// eventfd the loop waits on, so the loop itself never blocks on the pool and takes its
// lock only when the pool has something for it.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tricorn::worker {

namespace asio = boost::asio;

class ThreadPool {
 public:
  ThreadPool(asio::io_context& io, unsigned threads);
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool();

  // From the loop: runs `job` on a pool thread.
  void submit(std::function<void()> job);
  // From a pool thread: runs `fn` on the loop's thread.
  void post_to_loop(std::function<void()> fn);

 private:
  void work();
  asio::awaitable<void> run_completions();

  asio::io_context& io_;
  int event_fd_ = -1;
  std::mutex mutex_;
  std::condition_variable jobs_ready_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::function<void()>> completions_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tricorn::worker
