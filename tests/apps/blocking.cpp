// A blocking handler (TRICORN_SYNC_APP) for the thread-pool tests: /sleep blocks its
// thread for ?ms= and reports when it ran (CLOCK_MONOTONIC, nanoseconds), /fast answers
// at once with the same clock, /echo reads the body as a stream and returns it.
#include <tricorn/app.hpp>

#include <charconv>
#include <chrono>
#include <string>
#include <thread>

#include <time.h>

namespace {

std::string now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::to_string(static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec);
}

tricorn::SyncResponse blocking(const tricorn::Scope& scope, tricorn::BodyReader& body) {
  tricorn::SyncResponse r;
  r.headers.emplace_back("content-type", "text/plain");
  if (scope.path == "/sleep") {
    int ms = 1000;
    auto q = scope.query_string;
    if (q.starts_with("ms=")) std::from_chars(q.data() + 3, q.data() + q.size(), ms);
    std::string start = now_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    r.body = start + " " + now_ns();
  } else if (scope.path == "/fast") {
    r.body = now_ns();
  } else if (scope.path == "/echo") {
    r.body = body.read_all();
  } else if (scope.path == "/throw") {
    throw std::runtime_error("the blocking handler failed on purpose");
  } else {
    r.status = 404;
    r.body = "not found";
  }
  return r;
}

}  // namespace

TRICORN_SYNC_APP(app, blocking);
