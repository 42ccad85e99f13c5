// The smallest tricorn app: 13 bytes for every request.
#include <tricorn/app.hpp>

namespace {

tricorn::asio::awaitable<void> hello(tricorn::Scope&, tricorn::Receive&, tricorn::Send& send) {
  static constexpr tricorn::Header headers[] = {{"content-type", "text/plain"}};
  co_await send(tricorn::HttpResponseStart{200, headers});
  co_await send(tricorn::HttpResponseBody{"Hello, World!"});
}

}  // namespace

TRICORN_APP(app, hello);
