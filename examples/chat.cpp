// A chat room: GET / serves a page, /ws is a WebSocket whose every text message is
// broadcast to everyone connected to the same worker (run it with -w 1 to have one
// room). Open http://127.0.0.1:8000/ in two browser windows and type.
#include <tricorn/app.hpp>

#include <memory>
#include <string>
#include <vector>

namespace {

using namespace tricorn;

constexpr std::string_view kPage = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tricorn chat</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { list-style: none; padding: 0; border: 1px solid #ccc; min-height: 12rem; }
  #log li { padding: .25rem .5rem; border-bottom: 1px solid #eee; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #text { flex: 1; font: inherit; padding: .25rem; }
</style>
</head>
<body>
<h1>tricorn chat</h1>
<p id="status">connecting...</p>
<ul id="log"></ul>
<form id="form"><input id="text" autocomplete="off" placeholder="Say something">
<button id="send" type="submit">Send</button></form>
<script>
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  const status = document.getElementById("status");
  ws.onopen = () => { status.textContent = "connected"; };
  ws.onclose = () => { status.textContent = "disconnected"; };
  ws.onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = event.data;
    document.getElementById("log").appendChild(item);
  };
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    if (text.value) ws.send(text.value);
    text.value = "";
  };
</script>
</body>
</html>
)html";

// Everyone in the room, in this worker. A member is removed when its app coroutine
// ends; a broadcast checks membership right before each send, so it never sends to a
// member that has left.
std::vector<Send*>& room() {
  static std::vector<Send*> members;
  return members;
}

bool in_room(Send* member) {
  for (auto* m : room())
    if (m == member) return true;
  return false;
}

asio::awaitable<void> broadcast(std::string_view text) {
  const std::string message(text);  // the received view is only valid until receive()
  const std::vector<Send*> members = room();
  for (auto* member : members) {
    if (!in_room(member)) continue;
    try {
      co_await (*member)(WebSocketSend{message, true});
    } catch (const ClientDisconnected&) {
      // That member is leaving; its own coroutine removes it.
    }
  }
}

asio::awaitable<void> chat_socket(Receive& receive, Send& send) {
  if (!std::holds_alternative<WebSocketConnect>(co_await receive())) co_return;
  co_await send(WebSocketAccept{});
  room().push_back(&send);
  struct Leave {
    Send* me;
    ~Leave() { std::erase(room(), me); }
  } leave{&send};
  for (;;) {
    auto event = co_await receive();
    auto* message = std::get_if<WebSocketReceive>(&event);
    if (!message) break;  // websocket.disconnect
    if (message->text) co_await broadcast(message->data);
  }
}

asio::awaitable<void> chat(Scope& scope, Receive& receive, Send& send) {
  if (scope.type == ScopeType::lifespan) throw UnsupportedScope();
  if (scope.type == ScopeType::websocket) {
    if (scope.path != "/ws") {
      co_await send(WebSocketClose{});  // 403
      co_return;
    }
    co_return co_await chat_socket(receive, send);
  }
  if (scope.path != "/") {
    static constexpr Header headers[] = {{"content-type", "text/plain"}};
    co_await send(HttpResponseStart{404, headers});
    co_await send(HttpResponseBody{"not found\n"});
    co_return;
  }
  static constexpr Header headers[] = {{"content-type", "text/html; charset=utf-8"}};
  co_await send(HttpResponseStart{200, headers});
  co_await send(HttpResponseBody{kPage});
}

}  // namespace

TRICORN_APP(app, chat);
