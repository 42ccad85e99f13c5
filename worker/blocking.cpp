#include "worker/blocking.hpp"

#include "worker/socket.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>

namespace tricorn::worker {
namespace {

// Shared by the pool thread (the handler, reading the body) and the loop (this
// coroutine, receiving it). The mutex guards the body hand-over; `done` and the timer
// are touched on the loop only.
struct Bridge final : BodyReader {
  Bridge(ThreadPool& p, asio::any_io_executor ex)
      : pool(p), wake(ex, std::chrono::steady_clock::time_point::max()) {}

  size_t read(char* buffer, size_t size) override {  // on the pool thread
    std::unique_lock lock(mutex);
    while (pos == chunk.size() && !eof) {  // (a received piece may be empty)
      wanted = true;
      pool.post_to_loop([this] { wake.cancel(); });
      available.wait(lock, [&] { return !wanted; });
    }
    size_t n = std::min(size, chunk.size() - pos);
    std::memcpy(buffer, chunk.data() + pos, n);
    pos += n;
    return n;
  }

  ThreadPool& pool;
  std::mutex mutex;
  std::condition_variable available;
  std::string chunk;
  size_t pos = 0;
  bool eof = false;
  bool wanted = false;

  asio::steady_timer wake;
  bool done = false;
  SyncResponse response;
  std::exception_ptr error;
};

}  // namespace

asio::awaitable<void> call_blocking(ThreadPool& pool, SyncFunction handler, Scope& scope,
                                    Receive& receive, Send& send) {
  auto bridge = std::make_shared<Bridge>(pool, co_await asio::this_coro::executor);
  pool.submit([bridge, handler, &scope] {
    try {
      bridge->response = handler(scope, *bridge);
    } catch (...) {
      bridge->error = std::current_exception();
    }
    bridge->pool.post_to_loop([bridge] {
      bridge->done = true;
      bridge->wake.cancel();
    });
  });
  // Until the handler returns (it cannot be cancelled: the scope it reads stays valid
  // until then, even if the client has gone).
  for (;;) {
    bool wanted;
    {
      std::lock_guard lock(bridge->mutex);
      wanted = bridge->wanted;
    }
    if (wanted) {
      auto event = co_await receive();
      std::lock_guard lock(bridge->mutex);
      bridge->wanted = false;
      bridge->pos = 0;
      if (auto* r = std::get_if<HttpRequest>(&event)) {
        bridge->chunk.assign(r->body);
        bridge->eof = !r->more_body;
      } else {
        bridge->chunk.clear();
        bridge->eof = true;
      }
      bridge->available.notify_one();
      continue;
    }
    if (bridge->done) break;
    co_await bridge->wake.async_wait(use_nothrow);
  }
  if (bridge->error) std::rethrow_exception(bridge->error);
  std::vector<Header> headers;
  headers.reserve(bridge->response.headers.size());
  for (const auto& [name, value] : bridge->response.headers) headers.push_back({name, value});
  co_await send(HttpResponseStart{bridge->response.status, headers});
  co_await send(HttpResponseBody{bridge->response.body});
}

}  // namespace tricorn::worker
