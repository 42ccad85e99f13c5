#include "worker/lifespan.hpp"

#include "common/log.hpp"
#include "worker/dispatch.hpp"
#include "worker/socket.hpp"
#include "worker/worker.hpp"

#include <boost/asio/co_spawn.hpp>

#include <fmt/format.h>

namespace tricorn::worker {

using Clock = std::chrono::steady_clock;

Lifespan::Lifespan(Worker& worker)
    : worker_(worker),
      phase_changed_(worker.io(), Clock::time_point::max()),
      shutdown_asked_(worker.io(), Clock::time_point::max()) {
  scope_.type = ScopeType::lifespan;
  scope_.state = worker.state();
}

asio::awaitable<void> Lifespan::wait_for(asio::steady_timer& timer) {
  co_await timer.async_wait(use_nothrow);
}

asio::awaitable<std::optional<std::string>> Lifespan::startup() {
  asio::co_spawn(worker_.io(), run_app(), [](std::exception_ptr) {});
  while (phase_ == Phase::starting && !app_done_) co_await wait_for(phase_changed_);
  co_return startup_failure_;
}

asio::awaitable<void> Lifespan::shutdown() {
  if (app_done_) co_return;
  phase_ = Phase::stopping;
  shutdown_asked_.cancel();
  while (!app_done_ && phase_ == Phase::stopping) co_await wait_for(phase_changed_);
}

asio::awaitable<void> Lifespan::run_app() {
  auto outcome = co_await call_app(worker_, scope_, *this, *this);
  app_done_ = true;
  const bool required = worker_.config().lifespan == "on";
  if (phase_ == Phase::starting && !startup_failure_) {
    // ASGI: an app that fails before it says anything does not do lifespan.
    if (!outcome.failure.empty() && (required || sent_anything_))
      startup_failure_ = "lifespan startup failed: " + outcome.failure;
    else if (!outcome.failure.empty())
      log::info("ASGI 'lifespan' protocol appears unsupported ({})", outcome.failure);
  } else if (!outcome.failure.empty()) {
    log::error("Lifespan failed: {}", outcome.failure);
  }
  phase_changed_.cancel();
}

asio::awaitable<ReceiveEvent> Lifespan::operator()() {
  if (++receives_ == 1) co_return LifespanStartup{};
  while (phase_ != Phase::stopping && phase_ != Phase::done) co_await wait_for(shutdown_asked_);
  co_return LifespanShutdown{};
}

asio::awaitable<void> Lifespan::operator()(SendEvent event) {
  if (std::holds_alternative<LifespanStartupComplete>(event) && phase_ == Phase::starting) {
    phase_ = Phase::running;
  } else if (auto* f = std::get_if<LifespanStartupFailed>(&event); f && phase_ == Phase::starting) {
    startup_failure_ = f->message.empty() ? "lifespan startup failed" : std::string(f->message);
    phase_ = Phase::done;
  } else if (std::holds_alternative<LifespanShutdownComplete>(event) && phase_ == Phase::stopping) {
    phase_ = Phase::done;
  } else if (auto* f = std::get_if<LifespanShutdownFailed>(&event);
             f && phase_ == Phase::stopping) {
    log::error("Application shutdown failed: {}", f->message);
    phase_ = Phase::done;
  } else {
    throw ProtocolError("message not valid in the lifespan scope at this point");
  }
  sent_anything_ = true;
  phase_changed_.cancel();
  co_return;
}

}  // namespace tricorn::worker
