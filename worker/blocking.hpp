// Runs a blocking handler (TRICORN_SYNC_APP) for one http request: the handler runs on a
// pool thread; this coroutine stays on the loop, feeds it the request body as the
// handler asks for it, and sends its response.
#pragma once

#include "worker/thread_pool.hpp"

#include <tricorn/app.hpp>

namespace tricorn::worker {

asio::awaitable<void> call_blocking(ThreadPool& pool, SyncFunction handler, Scope& scope,
                                    Receive& receive, Send& send);

}  // namespace tricorn::worker
