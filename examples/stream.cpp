// A chunked response produced over time: ?count=N pieces (default 5), ?interval=MS
// apart (default 100).
#include <tricorn/app.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <charconv>
#include <chrono>
#include <string>

namespace {

namespace asio = tricorn::asio;

int query_int(std::string_view query, std::string_view key, int fallback) {
  for (size_t pos = 0; pos < query.size();) {
    auto amp = query.find('&', pos);
    auto item = query.substr(pos, amp == std::string_view::npos ? amp : amp - pos);
    if (item.size() > key.size() && item.substr(0, key.size()) == key && item[key.size()] == '=') {
      int v = fallback;
      std::from_chars(item.data() + key.size() + 1, item.data() + item.size(), v);
      return v;
    }
    if (amp == std::string_view::npos) break;
    pos = amp + 1;
  }
  return fallback;
}

asio::awaitable<void> stream(tricorn::Scope& scope, tricorn::Receive&, tricorn::Send& send) {
  int count = query_int(scope.query_string, "count", 5);
  auto interval = std::chrono::milliseconds(query_int(scope.query_string, "interval", 100));
  static constexpr tricorn::Header headers[] = {{"content-type", "text/plain"}};
  co_await send(tricorn::HttpResponseStart{200, headers});
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 1; i <= count; ++i) {
    std::string line = "chunk " + std::to_string(i) + "\n";
    co_await send(tricorn::HttpResponseBody{line, true});
    timer.expires_after(interval);
    co_await timer.async_wait(asio::use_awaitable);
  }
  co_await send(tricorn::HttpResponseBody{"done\n", false});
}

}  // namespace

TRICORN_APP(app, stream);
