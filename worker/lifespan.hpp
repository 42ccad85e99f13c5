// ASGI lifespan for one worker: lifespan.startup runs before the worker tells the
// master it is ready, lifespan.shutdown once its last connection is gone. The app's
// lifespan coroutine lives from one to the other; what it puts in scope.state is in
// every request's scope.
#pragma once

#include <tricorn/app.hpp>

#include <boost/asio/steady_timer.hpp>

#include <optional>
#include <string>

namespace tricorn::worker {

class Worker;

class Lifespan final : public Receive, public Send {
 public:
  explicit Lifespan(Worker& worker);

  // Runs the app's startup. nullopt: started (or the app does not do lifespan, which
  // is fine unless `lifespan: on`); otherwise why startup failed.
  asio::awaitable<std::optional<std::string>> startup();
  // Delivers lifespan.shutdown and waits for the app's answer.
  asio::awaitable<void> shutdown();

  asio::awaitable<ReceiveEvent> operator()() override;
  asio::awaitable<void> operator()(SendEvent event) override;

 private:
  enum class Phase : std::uint8_t { starting, running, stopping, done };
  asio::awaitable<void> run_app();
  asio::awaitable<void> wait_for(asio::steady_timer& timer);

  Worker& worker_;
  Scope scope_;
  Phase phase_ = Phase::starting;
  int receives_ = 0;
  bool sent_anything_ = false;
  std::optional<std::string> startup_failure_;
  bool app_done_ = false;
  asio::steady_timer phase_changed_;   // startup() and shutdown() wait here
  asio::steady_timer shutdown_asked_;  // the app's second receive() waits here
};

}  // namespace tricorn::worker
