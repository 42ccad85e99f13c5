// Two builds of one app (TRICORN_TEST_VERSION "a" and "b"): a reload that swaps the
// file must switch the responses from one to the other.
#include <tricorn/app.hpp>

namespace {

tricorn::asio::awaitable<void> version(tricorn::Scope&, tricorn::Receive&, tricorn::Send& send) {
  co_await send(tricorn::HttpResponseStart{200, {}});
  co_await send(tricorn::HttpResponseBody{"version " TRICORN_TEST_VERSION});
}

}  // namespace

TRICORN_APP(app, version);
