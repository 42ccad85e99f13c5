// A deadline for whatever a connection is waiting on: when it passes, the stream's
// pending operations are cancelled and expired() turns true. Setting a deadline costs
// a store; the timer is re-armed only when it fires early or must fire sooner (Asio's
// "watchdog" pattern), so a busy connection does not touch the timer per request. The
// timer itself is made when first armed: a connection that never waits (a new
// connection whose request is already there, answered and closed) never makes one, and
// making one looks up Asio's timer service.
#pragma once

#include "worker/stream.hpp"

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <memory>
#include <optional>

namespace tricorn::worker {

class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::time_point kNever = Clock::time_point::max();

  explicit Watchdog(Stream& stream) : stream_(&stream) {}

  // `owner` is kept alive while the timer is armed (the connection object).
  void set(Clock::time_point deadline, const std::shared_ptr<void>& owner) {
    deadline_ = deadline;
    expired_ = false;
    if (deadline_ == kNever || stopped_) return;
    if (!armed_)
      arm(owner);
    else if (deadline_ < armed_for_)
      timer_->cancel();  // the handler re-arms sooner
  }
  void clear() { deadline_ = kNever; }
  bool expired() const { return expired_; }
  Clock::time_point deadline() const { return deadline_; }
  void stop() {
    stopped_ = true;
    if (armed_) timer_->cancel();
  }
  void retarget(Stream& stream) { stream_ = &stream; }

 private:
  void arm(std::shared_ptr<void> owner) {
    armed_ = true;
    armed_for_ = deadline_;
    if (!timer_) timer_.emplace(stream_->executor());
    timer_->expires_at(deadline_);
    timer_->async_wait([this, owner = std::move(owner)](boost::system::error_code) mutable {
      armed_ = false;
      if (stopped_ || deadline_ == kNever) return;
      if (Clock::now() >= deadline_) {
        expired_ = true;
        stream_->cancel();
        return;
      }
      arm(std::move(owner));
    });
  }

  Stream* stream_;
  std::optional<asio::steady_timer> timer_;
  Clock::time_point deadline_ = kNever;
  Clock::time_point armed_for_ = kNever;
  bool armed_ = false;
  bool expired_ = false;
  bool stopped_ = false;
};

}  // namespace tricorn::worker
