// Streams the request body back as it arrives: each piece read is one piece written,
// so a slow reader slows the upload down instead of filling memory.
#include <tricorn/app.hpp>

#include <string>

namespace {

using tricorn::asio::awaitable;

awaitable<void> echo(tricorn::Scope& scope, tricorn::Receive& receive, tricorn::Send& send) {
  std::string type(scope.header("content-type"));
  if (type.empty()) type = "application/octet-stream";
  const tricorn::Header headers[] = {{"content-type", type}};
  co_await send(tricorn::HttpResponseStart{200, headers});
  for (;;) {
    auto event = co_await receive();
    auto* request = std::get_if<tricorn::HttpRequest>(&event);
    if (!request) co_return;  // the client is gone
    co_await send(tricorn::HttpResponseBody{request->body, request->more_body});
    if (!request->more_body) co_return;
  }
}

}  // namespace

TRICORN_APP(app, echo);
