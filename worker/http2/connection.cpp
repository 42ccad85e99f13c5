// HTTP/2 over nghttp2. The session is fed with nghttp2_session_mem_recv and drained with
// nghttp2_session_mem_send, so the glue is bytes in, bytes out:
//   - the reader coroutine (run) reads from the stream and feeds the session;
//   - the writer coroutine gathers everything the session wants to send into one
//     buffer and writes it at once, whenever someone wakes it;
//   - each request stream runs the app in a coroutine of its own, which talks to the
//     session through its Http2Stream (the app's Receive and Send).
// Request bodies are flow-controlled by the app: a WINDOW_UPDATE is allowed only for
// bytes the app has taken with receive(). Responses are pulled by nghttp2 through a
// deferred data provider.
#include "worker/http2/connection.hpp"

#include "worker/http2/allocator.hpp"
#include "worker/reactor_ops.hpp"
#include "worker/runners.hpp"

#include "common/log.hpp"
#include "worker/access_log.hpp"
#include "worker/dispatch.hpp"
#include "worker/forwarded.hpp"
#include "worker/http1/parser.hpp"
#include "worker/watchdog.hpp"
#include "worker/websocket/session.hpp"
#include "worker/worker.hpp"

#include <nghttp2/nghttp2.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <unordered_map>
#include <utility>

namespace tricorn::worker::http2 {
namespace {

using config::seconds;
using tricorn::http1::iequals;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr size_t kReadBuffer = 16 * 1024;     // the size of Worker::http2_buffers()
constexpr size_t kSendWatermark = 64 * 1024;  // an app's send() waits above this
constexpr auto kShutdownNoticeDelay = 1s;     // between the GOAWAY notice and the final one
constexpr auto kLingerTime = 2s;

// Connection-specific fields have no place in HTTP/2 (RFC 9113 section 8.2.2).
// A case-insensitive comparison that mostly ends at the lengths (no call, no strlen).
bool is_field(std::string_view name, std::string_view lower) {
  return name.size() == lower.size() && iequals(name, lower);
}

bool is_connection_specific(std::string_view name) {
  using namespace std::string_view_literals;
  for (auto banned : {"connection"sv, "keep-alive"sv, "proxy-connection"sv, "transfer-encoding"sv,
                      "upgrade"sv, "http2-settings"sv})
    if (is_field(name, banned)) return true;
  return false;
}

// nghttp2 takes the bytes of response fields without copying (or lower-casing) them:
// names are lower-cased already, and every byte lives in the stream (its FieldLists and
// status text) until nghttp2 has packed the HEADERS frame. A stream is recycled only
// after nghttp2 has closed it, and nghttp2 never packs a frame for a closed stream, nor
// reads the bytes when it drops one.
nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

class Http2Connection;
class Http2Stream;

// Streams of one event loop waiting for reuse: an Asio service of the loop, so that it
// empties itself when the loop shuts down, while every service still exists (a pooled
// stream owns a timer of the loop). A stream released after that is deleted.
class StreamPool : public asio::execution_context::service {
 public:
  using key_type = StreamPool;
  static inline asio::execution_context::id id;
  explicit StreamPool(asio::execution_context& context) : service(context) {}
  ~StreamPool() override { shutdown(); }
  static StreamPool& of(const asio::any_io_executor& ex) {
    return asio::use_service<StreamPool>(asio::query(ex, asio::execution::context));
  }
  Http2Stream* take(const asio::any_io_executor& ex);
  void give(Http2Stream* s);
  size_t in_use() const { return in_use_; }

 private:
  void shutdown() override;
  static constexpr size_t kMaxPooled = 512;
  std::vector<Http2Stream*> free_;
  size_t in_use_ = 0;
  bool closed_ = false;
};

// A counted reference to a stream (one thread: a plain counter). The connection holds
// one while nghttp2 has the stream open, its app coroutine one while it runs; the last
// one gives the stream back to the worker's pool.
class StreamRef {
 public:
  StreamRef() = default;
  explicit StreamRef(Http2Stream* s);
  StreamRef(const StreamRef& other) : StreamRef(other.s_) {}
  StreamRef(StreamRef&& other) noexcept : s_(std::exchange(other.s_, nullptr)) {}
  StreamRef& operator=(StreamRef other) noexcept {
    std::swap(s_, other.s_);
    return *this;
  }
  ~StreamRef();
  // For a holder that keeps the count itself (the connection's list of open streams).
  static StreamRef adopt(Http2Stream* s) {
    StreamRef r;
    r.s_ = s;
    return r;
  }
  Http2Stream* release() { return std::exchange(s_, nullptr); }
  Http2Stream* operator->() const { return s_; }
  Http2Stream* get() const { return s_; }
  explicit operator bool() const { return s_ != nullptr; }

 private:
  Http2Stream* s_ = nullptr;
};

// A stream's app, run on the worker's reused coroutines (worker/runners.hpp).
struct StreamJob {
  static constexpr std::string_view kWhat = "HTTP/2 stream";
  StreamRef stream;
  std::shared_ptr<Http2Connection> connection;  // alive while its stream's app runs
  asio::awaitable<void> run();
};
using AppRunners = Runners<StreamJob>;

// Response fields (or trailers), copied out of the app's send() (its views end with
// the call): lower-cased names and values back to back in one buffer, whose capacity a
// recycled stream keeps.
class FieldList {
 public:
  void clear() {
    bytes_.clear();
    sizes_.clear();
  }
  void add(std::string_view name, std::string_view value) {
    size_t at = bytes_.size();
    bytes_.append(name).append(value);
    for (size_t i = at; i < at + name.size(); ++i)
      if (bytes_[i] >= 'A' && bytes_[i] <= 'Z') bytes_[i] = static_cast<char>(bytes_[i] + 32);
    sizes_.push_back(static_cast<std::uint32_t>(name.size()));
    sizes_.push_back(static_cast<std::uint32_t>(value.size()));
  }
  size_t size() const { return sizes_.size() / 2; }
  template <typename F>
  void for_each(F&& f) const {  // f(name, value)
    size_t at = 0;
    for (size_t i = 0; i < sizes_.size(); i += 2) {
      std::string_view name(bytes_.data() + at, sizes_[i]);
      std::string_view value(bytes_.data() + at + sizes_[i], sizes_[i + 1]);
      f(name, value);
      at += sizes_[i] + sizes_[i + 1];
    }
  }
  bool has(std::string_view name) const {
    bool found = false;
    for_each([&](std::string_view n, std::string_view) { found = found || n == name; });
    return found;
  }

 private:
  std::string bytes_;
  std::vector<std::uint32_t> sizes_;
};

// One request stream: the app's Receive and Send; for a WebSocket opened with extended
// CONNECT (RFC 8441), the session's Transport, its DATA frames carrying the frames.
// Streams are recycled within a worker (see StreamRef): the buffers and vectors below
// keep their capacity, so a stream of a warm worker allocates nothing of its own.
class Http2Stream final : public Receive, public Send, public websocket::Transport {
 public:
  // What a recycled stream keeps, outside the part destroyed and constructed anew: its
  // storage, emptied, and its timer (constructing one looks up Asio's timer service).
  struct Kept {
    explicit Kept(const asio::any_io_executor& ex) : wake(ex, Clock::time_point::max()) {}
    asio::steady_timer wake;
    std::vector<nghttp2_rcbuf*> held;
    std::vector<Header> headers;
    std::string decoded_path, body_in, body_out;
    FieldList response_fields, trailer_fields;
  };
  Http2Stream(StreamPool& pool, const asio::any_io_executor& ex, std::unique_ptr<Kept> kept = {});
  ~Http2Stream() { release_fields(); }
  Http2Stream(const Http2Stream&) = delete;
  Http2Stream& operator=(const Http2Stream&) = delete;
  static StreamRef open(Http2Connection& c, std::int32_t id);

  asio::awaitable<ReceiveEvent> operator()() override;
  asio::awaitable<void> operator()(SendEvent event) override;

  asio::awaitable<bool> accept(std::span<const Header> headers) override;
  asio::awaitable<void> deny(int status) override;
  asio::awaitable<std::string_view> read() override;
  asio::awaitable<bool> write(std::string_view bytes) override;
  asio::awaitable<void> finish() override;
  void abort() override { reset(NGHTTP2_CANCEL); }
  void on_drain() {
    if (websocket_) websocket_->on_drain();
  }

  // Called by the connection (from nghttp2 callbacks).
  void on_header(nghttp2_rcbuf* name, nghttp2_rcbuf* value);
  void on_data(std::string_view data);
  void on_end_stream() {
    end_stream_ = true;
    wake();
  }
  void on_close(std::uint32_t error_code) {
    closed_ = true;
    close_error_ = error_code;
    wake();
  }
  ssize_t read_body(uint8_t* buf, size_t length, uint32_t* flags);
  asio::awaitable<void> run_app();
  asio::awaitable<void> serve_websocket();
  void on_response_sent();
  void set_upgraded(std::unique_ptr<UpgradedRequest> request);

  std::int32_t id() const { return id_; }
  bool closed() const { return closed_; }
  // Response bytes are queued but the client has taken none of them for two whole
  // periods of the stall check: its flow-control window stays shut (a zero-window stall).
  bool stalled(std::uint64_t check) const {
    return !closed_ && !body_out_.empty() && progress_check_ + 3 <= check;
  }
  void reset(std::uint32_t error_code);

  // The connection's list of open streams.
  Http2Stream* prev_ = nullptr;
  Http2Stream* next_ = nullptr;

 private:
  friend class StreamRef;
  friend class StreamPool;
  std::unique_ptr<Kept> take_kept();
  void release_fields();
  bool build_scope();
  void wake() { wake_.cancel(); }
  asio::awaitable<void> wait();
  void submit_response(bool end_stream);
  void start_response(const HttpResponseStart& start);
  // Queues a body piece; true when the app must then wait for the client (wait_to_send).
  bool queue_body(const HttpResponseBody& body);
  asio::awaitable<void> wait_to_send();
  void send_trailers(const HttpResponseTrailers& trailers);
  void respond_simple(int status);

  int refs_ = 0;
  StreamPool* pool_;
  std::unique_ptr<Kept> kept_;
  Http2Connection* c_ = nullptr;
  std::int32_t id_ = 0;
  asio::steady_timer& wake_;  // never expires: cancel() wakes waiters

  // Request. Field names and values are nghttp2's own buffers, kept (not copied) until
  // the stream is recycled.
  std::vector<nghttp2_rcbuf*>& held_;
  std::vector<Header>& headers_;  // views into held_ (and the upgraded request)
  std::string_view method_, scheme_, authority_, path_, protocol_;
  std::unique_ptr<UpgradedRequest> upgraded_;  // for an h2c upgrade: what the views see
  websocket::Session* websocket_ = nullptr;
  size_t header_bytes_ = 0;
  bool headers_too_large_ = false;
  std::string& decoded_path_;
  Scope scope_;
  std::string& body_in_;
  std::uint64_t received_ = 0;
  bool body_too_large_ = false;
  size_t delivered_ = 0;  // bytes of body_in_ handed to the app, consumed at its next receive
  bool end_stream_ = false;
  bool end_delivered_ = false;
  bool closed_ = false;
  std::uint32_t close_error_ = 0;

  // Response.
  using Response = ResponseStage;
  Response response_ = Response::none;
  int status_ = 0;
  char status_text_[4] = {};  // :status, which nghttp2 reads when it packs the HEADERS
  FieldList& response_fields_;
  FieldList& trailer_fields_;
  bool trailers_expected_ = false;
  bool trailers_ready_ = false;
  std::string& body_out_;
  size_t body_out_pos_ = 0;
  bool body_out_eof_ = false;
  bool deferred_ = false;
  // The stall check's count when the app last queued bytes into an empty queue or
  // nghttp2 last took some: a counter, not a clock read per stream.
  std::uint64_t progress_check_ = 0;
  void note_progress();
  std::uint64_t body_bytes_ = 0;  // response body bytes the app sent
};

class Http2Connection final : public worker::Connection,
                              public std::enable_shared_from_this<Http2Connection> {
 public:
  Http2Connection(Worker& worker, Stream stream, const ListenerInfo& listener)
      : worker_(worker),
        stream_(std::move(stream)),
        listener_(listener),
        idle_watchdog_(stream_),
        send_watchdog_(stream_),
        writer_wake_(stream_.executor()),
        writer_exit_(stream_.executor()),
        notice_timer_(stream_.executor()),
        stream_pool_(StreamPool::of(stream_.executor())),
        runners_(AppRunners::of(stream_.executor())) {}
  ~Http2Connection() {
    while (streams_) forget(streams_);
    if (session_) nghttp2_session_del(session_);
  }

  asio::awaitable<void> run(std::string received, std::unique_ptr<UpgradedRequest> upgraded);
  void on_drain() override;
  void on_heartbeat(Clock::time_point now) override;

  Worker& worker() { return worker_; }
  const ListenerInfo& listener() const { return listener_; }
  std::uint64_t stall_checks() const { return stall_checks_; }
  const Address& client() const { return client_; }
  bool forwarding_trusted() const { return forwarding_trusted_; }
  nghttp2_session* session() { return session_; }
  bool open() const { return !closing_; }
  Socket::executor_type executor() { return stream_.executor(); }
  StreamPool& stream_pool() { return stream_pool_; }
  void wake_writer() {
    write_requested_ = true;
    if (writer_waiting_) writer_wake_.cancel();
  }
  // The list of open streams: nghttp2 knows them by id (their user data); the list is
  // for walking them all, and holds one count of each.
  void add_stream(StreamRef s);
  void forget(Http2Stream* s);
  template <typename F>
  void for_each_stream(F&& f) {  // f may close (forget) any stream, not only its own
    std::vector<StreamRef> open;
    open.reserve(stream_count_);
    for (Http2Stream* s = streams_; s; s = s->next_) open.emplace_back(s);
    for (auto& s : open) f(s.get());
  }

 private:
  bool create_session();
  bool feed(const char* data, size_t size);
  asio::awaitable<void> write_loop();
  void start_stream_app(StreamRef s);
  Http2Stream* stream_of(std::int32_t id);
  void update_idle_deadline();
  asio::awaitable<size_t> read_some(std::unique_ptr<char[]>& buf, bool& failed);

  // nghttp2 callbacks.
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_header(nghttp2_session*, const nghttp2_frame* f, nghttp2_rcbuf* name,
                       nghttp2_rcbuf* value, uint8_t flags, void* self);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* self);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* self);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self);

  Worker& worker_;
  Stream stream_;
  const ListenerInfo& listener_;
  Watchdog idle_watchdog_;  // the reader's: no stream open for http2_idle_timeout
  Watchdog send_watchdog_;  // the writer's: the client not taking bytes
  asio::steady_timer writer_wake_;
  asio::steady_timer writer_exit_;
  asio::steady_timer notice_timer_;
  std::uint64_t stall_checks_ = 0;  // every half send_timeout, from the heartbeat
  Clock::time_point next_stall_check_;
  StreamPool& stream_pool_;
  AppRunners& runners_;
  nghttp2_session* session_ = nullptr;
  Http2Stream* streams_ = nullptr;
  size_t stream_count_ = 0;
  Http2Stream* last_looked_up_ = nullptr;  // nghttp2 calls back a few times per frame
  // After Upgrade: h2c, stream 1's app waits for the client's SETTINGS: by then the
  // client has read the 101 (curl 7.88 keeps only 32 KiB that arrive behind it) and its
  // settings apply to the response.
  StreamRef upgraded_stream_;
  Address client_;
  bool forwarding_trusted_ = false;
  std::string out_;
  bool write_requested_ = false;
  bool writer_waiting_ = false;
  bool writer_done_ = true;  // until the writer starts
  bool closing_ = false;
  bool draining_ = false;
};

// --- the connection -------------------------------------------------------------------

asio::awaitable<void> Http2Connection::run(std::string received,
                                           std::unique_ptr<UpgradedRequest> upgraded) {
  worker_.track(this);
  if (auto* m = worker_.counters()) m->add(m->connections[int(metrics::Protocol::http2)], 1);
  struct Finish {
    Http2Connection* c;
    ~Finish() {
      if (auto* m = c->worker_.counters())
        m->add(m->connections[int(metrics::Protocol::http2)], -1);
      c->closing_ = true;
      c->idle_watchdog_.stop();
      c->send_watchdog_.stop();
      c->notice_timer_.cancel();
      Http2Connection* self = c;
      self->for_each_stream([self](Http2Stream* s) {
        s->on_close(NGHTTP2_CANCEL);
        self->forget(s);
      });
      c->worker_.untrack(c);
    }
  } finish{this};
  client_ = stream_.peer();
  forwarding_trusted_ = worker_.trusts_forwarding_from(client_.host);
  next_stall_check_ = Clock::now() + seconds(worker_.config().send_timeout) / 2;
  if (!create_session()) co_return;
  if (upgraded) {
    int rv = nghttp2_session_upgrade2(
        session_, reinterpret_cast<const uint8_t*>(upgraded->settings.data()),
        upgraded->settings.size(), upgraded->method == "HEAD", nullptr);
    if (rv != 0) {
      log::debug("h2c upgrade refused: {}", nghttp2_strerror(rv));
      co_return;
    }
    auto s = Http2Stream::open(*this, 1);
    s->set_upgraded(std::move(upgraded));
    add_stream(s);
    upgraded_stream_ = std::move(s);  // started once the client's SETTINGS arrive
  }
  // The writer runs before the first bytes are fed: if they already hold an attack,
  // the GOAWAY they earn must still be written.
  writer_done_ = false;
  asio::co_spawn(executor(), write_loop(), [self = shared_from_this()](std::exception_ptr) {});
  bool healthy = feed(received.data(), received.size());
  if (healthy && worker_.draining()) on_drain();
  wake_writer();

  std::unique_ptr<char[]> buf;
  while (healthy && !closing_ &&
         (nghttp2_session_want_read(session_) || nghttp2_session_want_write(session_))) {
    update_idle_deadline();
    bool failed = false;
    size_t n = co_await read_some(buf, failed);
    idle_watchdog_.clear();
    if (failed) {
      if (idle_watchdog_.expired() && !closing_) {
        // Idle for http2_idle_timeout: say goodbye properly, then close.
        nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
        wake_writer();
      }
      break;
    }
    if (!feed(buf.get(), n)) break;
  }
  if (!buf) buf = worker_.http2_buffers().take();
  // Let the writer flush what is queued (a GOAWAY, the last responses), then close.
  closing_ = true;
  wake_writer();
  if (!writer_done_) {
    writer_exit_.expires_at(Clock::time_point::max());
    co_await writer_exit_.async_wait(use_nothrow);
  }
  // Lingering close: the writer has shut our side down; read until the peer closes (or
  // briefly) so unread input does not turn into a reset that destroys the GOAWAY.
  idle_watchdog_.set(Clock::now() + kLingerTime, shared_from_this());
  for (size_t total = 0; total < kReadBuffer * 64;) {
    auto [ec, n] = co_await stream_.read_some(asio::buffer(buf.get(), kReadBuffer));
    if (ec) break;
    total += n;
  }
  worker_.http2_buffers().give(std::move(buf));
}

bool Http2Connection::create_session() {
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);  // the app's receive() decides
#ifdef TRICORN_HAVE_STREAM_RESET_RATE_LIMIT
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);  // Rapid Reset (CVE-2023-44487)
#endif
#ifdef TRICORN_HAVE_MAX_CONTINUATIONS
  nghttp2_option_set_max_continuations(opt, 8);  // CONTINUATION flood (CVE-2024-27316)
#endif
  int rv;
  {
    SharedFrameBuffer shared;  // write_loop drains the session to the end, copying
    rv = nghttp2_session_server_new3(&session_, cbs, this, opt, pooled_memory());
  }
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) return false;
  const auto& c = worker_.config();
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
       static_cast<uint32_t>(c.http2_max_concurrent_streams)},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(c.http2_initial_window_size)},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, static_cast<uint32_t>(c.http2_max_frame_size)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(c.http2_max_header_list_size)},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // WebSocket over HTTP/2 (RFC 8441)
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  // The connection window covers several streams' uploads at once; each stream's own
  // window is what bounds a slow app.
  int32_t connection_window = std::max(c.http2_initial_window_size * 4, 1 << 20);
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, connection_window);
  return true;
}

bool Http2Connection::feed(const char* data, size_t size) {
  if (size == 0) return true;
  auto rv = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data), size);
  wake_writer();
  if (rv < 0) {
    // Fatal for the connection. nghttp2 leaves the GOAWAY to us: floods get
    // ENHANCE_YOUR_CALM, anything else PROTOCOL_ERROR; the writer flushes it.
    int code = rv == NGHTTP2_ERR_FLOODED
#ifdef TRICORN_HAVE_MAX_CONTINUATIONS
                       || rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
#endif
                   ? NGHTTP2_ENHANCE_YOUR_CALM
                   : NGHTTP2_PROTOCOL_ERROR;
    if (rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC) nghttp2_session_terminate_session(session_, code);
    log::debug("HTTP/2 connection from {} closed: {}", client_.host,
               nghttp2_strerror(static_cast<int>(rv)));
    wake_writer();
    return false;
  }
  return true;
}

asio::awaitable<void> Http2Connection::write_loop() {
  for (;;) {
    write_requested_ = false;
    const uint8_t* data;
    ssize_t n;
    // To the end, copying as it goes: the frame buffer is shared (allocator.hpp).
    while (session_ && (n = nghttp2_session_mem_send(session_, &data)) > 0)
      out_.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    if (!out_.empty()) {
      boost::system::error_code ec;
      size_t written = stream_.write_now(out_, {}, ec);
      if (!ec && written < out_.size()) {
        send_watchdog_.set(Clock::now() + seconds(worker_.config().send_timeout),
                           shared_from_this());
        size_t n;
        std::tie(ec, n) =
            co_await stream_.write(asio::buffer(out_.data() + written, out_.size() - written));
        send_watchdog_.clear();
        written += n;
      }
      if (auto* m = worker_.counters()) m->add(m->bytes_out, written);
      out_.clear();
      if (ec) break;
      continue;  // more may have been queued while we wrote
    }
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) break;
    if (closing_) break;
    if (write_requested_) continue;
    writer_waiting_ = true;
    writer_wake_.expires_at(Clock::time_point::max());
    co_await writer_wake_.async_wait(use_nothrow);
    writer_waiting_ = false;
  }
  writer_done_ = true;
  writer_exit_.cancel();
  closing_ = true;
  boost::system::error_code ignored;
  stream_.socket().shutdown(asio::socket_base::shutdown_send, ignored);
  stream_.cancel();  // wakes the reader
}

// send_timeout for each stream: a client that reads the socket but never opens a
// stream's flow-control window would otherwise hold the stream, its queued body and its
// app forever. The stream is reset (CANCEL) and the app's send() fails; the connection
// and its other streams go on. Checked every half send_timeout: a stream that made no
// progress since before the check two checks ago has stalled for at least send_timeout,
// so a stall ends within 1.5 x send_timeout (and three heartbeats, at most 3 s). The
// checks ride on the worker's heartbeat, which visits every connection: a coroutine and
// a timer per connection had cost an idle one about a kilobyte.
void Http2Connection::on_heartbeat(Clock::time_point now) {
  if (closing_ || now < next_stall_check_) return;
  next_stall_check_ = now + seconds(worker_.config().send_timeout) / 2;
  const std::uint64_t check = ++stall_checks_;
  for_each_stream([&](Http2Stream* s) {
    if (!s->stalled(check)) return;
    log::info("HTTP/2 stream {} from {} reset: its flow-control window stayed closed for {}s",
              s->id(), client_.host, worker_.config().send_timeout);
    s->reset(NGHTTP2_CANCEL);
  });
}

// Reads into a buffer the read takes from the worker's pool only once there is something
// to read (see worker/reactor_ops.hpp), so a connection waiting for frames holds no
// buffer; over TLS it keeps one and reads through OpenSSL. failed: EOF, an error, or the
// idle watchdog.
asio::awaitable<size_t> Http2Connection::read_some(std::unique_ptr<char[]>& buf, bool& failed) {
  size_t n = 0;
  boost::system::error_code ec;
  if (stream_.is_tls()) {
    if (!buf) buf = worker_.http2_buffers().take();
    std::tie(ec, n) = co_await stream_.read_some(asio::buffer(buf.get(), kReadBuffer));
  } else {
    worker_.http2_buffers().give(std::move(buf));
    PooledRead read;
    std::tie(ec, read) = co_await async_read_pooled(stream_.socket(), worker_.reactor(),
                                                    worker_.http2_buffers(), use_nothrow);
    buf = std::move(read.buffer);
    n = read.bytes;
  }
  failed = ec.failed();
  if (!failed)
    if (auto* m = worker_.counters()) m->add(m->bytes_in, n);
  co_return n;
}

void Http2Connection::update_idle_deadline() {
  if (stream_count_ == 0)
    idle_watchdog_.set(Clock::now() + seconds(worker_.config().http2_idle_timeout),
                       shared_from_this());
}

// Graceful stop in two steps (RFC 9113 section 6.8): a GOAWAY with the largest stream
// id tells the client to stop opening streams; a round trip later, the final GOAWAY
// names the last stream we will process. Streams already open run to completion.
void Http2Connection::on_drain() {
  if (draining_ || closing_ || !session_) return;
  draining_ = true;
  for_each_stream([](Http2Stream* s) { s->on_drain(); });
  nghttp2_submit_shutdown_notice(session_);
  wake_writer();
  notice_timer_.expires_after(kShutdownNoticeDelay);
  notice_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (ec || self->closing_) return;
    nghttp2_submit_goaway(self->session_, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(self->session_), NGHTTP2_NO_ERROR,
                          nullptr, 0);
    self->wake_writer();
  });
}

void Http2Connection::add_stream(StreamRef s) {
  nghttp2_session_set_stream_user_data(session_, s->id(), s.get());
  Http2Stream* p = s.release();  // the list's count
  p->prev_ = nullptr;
  p->next_ = streams_;
  if (streams_) streams_->prev_ = p;
  streams_ = p;
  ++stream_count_;
  if (auto* m = worker_.counters()) m->add(m->http2_streams, 1);
}

void Http2Connection::forget(Http2Stream* s) {
  if (!s->prev_ && streams_ != s) return;  // not (or no longer) in the list
  if (session_) nghttp2_session_set_stream_user_data(session_, s->id(), nullptr);
  if (last_looked_up_ == s) last_looked_up_ = nullptr;
  if (s->prev_)
    s->prev_->next_ = s->next_;
  else
    streams_ = s->next_;
  if (s->next_) s->next_->prev_ = s->prev_;
  s->prev_ = s->next_ = nullptr;
  --stream_count_;
  if (auto* m = worker_.counters()) m->add(m->http2_streams, -1);
  StreamRef::adopt(s);  // gives the list's count back
}

Http2Stream* Http2Connection::stream_of(std::int32_t id) {
  if (last_looked_up_ && last_looked_up_->id() == id) return last_looked_up_;
  last_looked_up_ = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session_, id));
  return last_looked_up_;
}

void Http2Connection::start_stream_app(StreamRef s) {
  runners_.run(executor(), {std::move(s), shared_from_this()});
}

asio::awaitable<void> StreamJob::run() {
  return stream->run_app();  // no frame of its own
}

int Http2Connection::on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  c->add_stream(Http2Stream::open(*c, f->hd.stream_id));
  return 0;
}

int Http2Connection::on_header(nghttp2_session*, const nghttp2_frame* f, nghttp2_rcbuf* name,
                               nghttp2_rcbuf* value, uint8_t, void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (auto* s = c->stream_of(f->hd.stream_id)) s->on_header(name, value);
  return 0;
}

int Http2Connection::on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if (f->hd.type == NGHTTP2_SETTINGS && !(f->hd.flags & NGHTTP2_FLAG_ACK) && c->upgraded_stream_)
    c->start_stream_app(std::exchange(c->upgraded_stream_, StreamRef()));
  auto* s = c->stream_of(f->hd.stream_id);
  if (!s) return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) s->on_end_stream();
    c->start_stream_app(StreamRef(s));
  } else if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
             (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    s->on_end_stream();  // the last DATA, or trailers (which ASGI does not carry)
  }
  return 0;
}

int Http2Connection::on_data_chunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data,
                                   size_t len, void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if (auto* s = c->stream_of(id))
    s->on_data({reinterpret_cast<const char*>(data), len});
  else
    nghttp2_session_consume(c->session_, id, len);  // nobody will read it
  return 0;
}

int Http2Connection::on_frame_send(nghttp2_session*, const nghttp2_frame* f, void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
    if (auto* s = c->stream_of(f->hd.stream_id)) s->on_response_sent();
  return 0;
}

int Http2Connection::on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code,
                                     void* self) {
  auto* c = static_cast<Http2Connection*>(self);
  if (auto* s = c->stream_of(id)) {
    s->on_close(error_code);
    c->forget(s);
  }
  return 0;
}

// --- a stream -------------------------------------------------------------------------

StreamRef::StreamRef(Http2Stream* s) : s_(s) {
  if (s_) ++s_->refs_;
}

StreamRef::~StreamRef() {
  if (s_ && --s_->refs_ == 0) s_->pool_->give(s_);
}

Http2Stream* StreamPool::take(const asio::any_io_executor& ex) {
  ++in_use_;
  if (free_.empty()) return new Http2Stream(*this, ex);
  Http2Stream* s = free_.back();
  free_.pop_back();
  return s;
}

// A stream comes back empty: everything but its storage is constructed anew.
void StreamPool::give(Http2Stream* s) {
  --in_use_;
  if (closed_ || free_.size() >= kMaxPooled) {
    delete s;
    return;
  }
  auto kept = s->take_kept();
  const auto ex = kept->wake.get_executor();  // before the argument that moves `kept`
  s->~Http2Stream();
  new (s) Http2Stream(*this, ex, std::move(kept));
  free_.push_back(s);
}

void StreamPool::shutdown() {
  closed_ = true;
  for (auto* s : free_) delete s;
  free_.clear();
}

// wake_ never expires: cancel() wakes every coroutine waiting on it (the app's
// receive() and send() may both wait, for a WebSocket), and each re-checks its condition.
Http2Stream::Http2Stream(StreamPool& pool, const asio::any_io_executor& ex,
                         std::unique_ptr<Kept> kept)
    : pool_(&pool),
      kept_(kept ? std::move(kept) : std::make_unique<Kept>(ex)),
      wake_(kept_->wake),
      held_(kept_->held),
      headers_(kept_->headers),
      decoded_path_(kept_->decoded_path),
      body_in_(kept_->body_in),
      response_fields_(kept_->response_fields),
      trailer_fields_(kept_->trailer_fields),
      body_out_(kept_->body_out) {}

StreamRef Http2Stream::open(Http2Connection& c, std::int32_t id) {
  Http2Stream* s = c.stream_pool().take(c.executor());
  s->c_ = &c;
  s->id_ = id;
  return StreamRef(s);
}

std::unique_ptr<Http2Stream::Kept> Http2Stream::take_kept() {
  release_fields();
  headers_.clear();
  decoded_path_.clear();
  body_in_.clear();
  body_out_.clear();
  response_fields_.clear();
  trailer_fields_.clear();
  return std::move(kept_);  // the references stay valid: the caller owns it now
}

void Http2Stream::release_fields() {
  for (auto* rc : held_) nghttp2_rcbuf_decref(rc);
  held_.clear();
}

void Http2Stream::on_header(nghttp2_rcbuf* name_buf, nghttp2_rcbuf* value_buf) {
  auto view = [](nghttp2_rcbuf* rc) {
    auto b = nghttp2_rcbuf_get_buf(rc);
    return std::string_view(reinterpret_cast<const char*>(b.base), b.len);
  };
  const auto name = view(name_buf), value = view(value_buf);
  header_bytes_ += name.size() + value.size() + 32;  // RFC 9113 section 6.5.2
  // nghttp2 advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it: an HPACK
  // bomb would grow this list without bound. Past the limit, keep nothing and answer 431.
  if (header_bytes_ > static_cast<size_t>(c_->worker().config().http2_max_header_list_size)) {
    headers_too_large_ = true;
    headers_.clear();
    method_ = scheme_ = authority_ = path_ = protocol_ = {};
    release_fields();
    return;
  }
  if (headers_too_large_) return;
  if (name.starts_with(':')) {
    std::string_view* pseudo = name == ":method"      ? &method_
                               : name == ":scheme"    ? &scheme_
                               : name == ":authority" ? &authority_
                               : name == ":path"      ? &path_
                               : name == ":protocol"  ? &protocol_
                                                      : nullptr;
    if (!pseudo) return;
    nghttp2_rcbuf_incref(value_buf);
    held_.push_back(value_buf);
    *pseudo = value;
    return;
  }
  nghttp2_rcbuf_incref(name_buf);
  nghttp2_rcbuf_incref(value_buf);
  held_.push_back(name_buf);
  held_.push_back(value_buf);
  headers_.push_back({name, value});
}

void Http2Stream::on_data(std::string_view data) {
  received_ += data.size();
  const auto limit = c_->worker().config().limit_request_body;
  if (limit && received_ > limit) {
    // Over limit_request_body: the app sees the client gone; run_app answers 413 if
    // nothing was sent, and the stream is reset.
    body_too_large_ = true;
    nghttp2_session_consume(c_->session(), id_, data.size());
  } else {
    body_in_.append(data);
  }
  wake();
}

void Http2Stream::set_upgraded(std::unique_ptr<UpgradedRequest> r) {
  upgraded_ = std::move(r);
  method_ = upgraded_->method;
  path_ = upgraded_->target;
  scheme_ = "http";
  for (const auto& [name, value] : upgraded_->headers)
    if (!is_connection_specific(name)) headers_.push_back({name, value});
  body_in_ = std::move(upgraded_->body);
  end_stream_ = true;
}

bool Http2Stream::build_scope() {
  // ASGI apps look for Host; HTTP/2 carries it as :authority.
  if (!authority_.empty() && !std::any_of(headers_.begin(), headers_.end(),
                                          [](const Header& h) { return h.name == "host"; }))
    headers_.push_back({"host", authority_});
  std::string_view target = path_;
  auto q = target.find('?');
  scope_.type = ScopeType::http;
  scope_.http_version = "2";
  scope_.method = method_;
  scope_.scheme = scheme_.empty() ? std::string_view(c_->listener().scheme) : scheme_;
  scope_.raw_path = target.substr(0, q);
  scope_.query_string = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
  scope_.root_path = c_->worker().config().root_path;
  scope_.headers = headers_;
  scope_.client = c_->client();
  if (c_->forwarding_trusted()) apply_forwarded(scope_, c_->worker().forwarded_trusted());
  if (!c_->listener().is_unix)
    scope_.server = {c_->listener().server_host, c_->listener().server_port};
  scope_.state = c_->worker().state();
  if (scope_.raw_path.find('%') == std::string_view::npos) {
    scope_.path = scope_.raw_path;
    return true;
  }
  if (!tricorn::http1::percent_decode(scope_.raw_path, decoded_path_)) return false;
  scope_.path = decoded_path_;
  return true;
}

asio::awaitable<void> Http2Stream::run_app() {
  if (closed_) co_return;  // reset before it started: nothing to do (Rapid Reset)
  const auto started = Clock::now();
  struct Count {  // every answer of this stream, whichever way it leaves
    Http2Stream* s;
    Clock::time_point started;
    ~Count() {
      if (auto* m = s->c_->worker().counters(); m && s->status_ && s->protocol_.empty())
        m->count_request(s->method_, s->status_, Clock::now() - started);
    }
  } count{this, started};
  if (headers_too_large_) {
    respond_simple(431);
    co_return;
  }
  if (!build_scope()) {
    respond_simple(400);
    co_return;
  }
  const auto limit = c_->worker().config().limit_request_body;
  std::uint64_t declared = 0;
  for (const auto& h : headers_)
    if (h.name == "content-length")
      std::from_chars(h.value.data(), h.value.data() + h.value.size(), declared);
  if (limit && declared > limit) {
    respond_simple(413);
    co_return;
  }
  if (method_ == "CONNECT" && protocol_ == "websocket") {
    co_await serve_websocket();
    co_return;
  }
  AppOutcome outcome;  // as call_app, without its coroutine frame per stream
  try {
    co_await c_->worker().run_app(scope_, *this, *this);
  } catch (const ClientGone&) {
    outcome.client_gone = true;
  } catch (const std::exception& e) {
    outcome.failure = e.what();
  }
  c_->worker().on_request_done();
  if (log::access_enabled())
    write_access_log(c_->worker().config(),
                     {scope_, path_, "HTTP/2", status_, body_bytes_, Clock::now() - started});
  if (body_too_large_ && (response_ == Response::none || response_ == Response::started)) {
    respond_simple(413);
    co_return;
  }
  if (outcome.client_gone || closed_) co_return;
  if (!outcome.failure.empty() || response_ != Response::complete) {
    if (outcome.failure.empty())
      outcome.failure = response_ == Response::none
                            ? "the app returned without a response"
                            : "the app returned before the response was complete";
    log_app_failure(scope_, path_, outcome.failure);
    if (response_ == Response::none || response_ == Response::started)
      respond_simple(500);
    else
      reset(NGHTTP2_INTERNAL_ERROR);
  }
}

// RFC 8441: the CONNECT's headers are the handshake; 200 accepts it.
asio::awaitable<void> Http2Stream::serve_websocket() {
  if (scope_.header("sec-websocket-version") != "13") {
    respond_simple(400);
    co_return;
  }
  scope_.method = "GET";  // the same websocket scope as over HTTP/1.1
  auto session = std::make_shared<websocket::Session>(c_->worker(), scope_, *this, "");
  websocket_ = session.get();
  auto* m = c_->worker().counters();
  if (m) m->add(m->connections[int(metrics::Protocol::websocket)], 1);
  co_await session->run(path_);
  if (m) m->add(m->connections[int(metrics::Protocol::websocket)], -1);
  websocket_ = nullptr;
  c_->worker().on_request_done();
}

asio::awaitable<bool> Http2Stream::accept(std::span<const Header> headers) {
  if (closed_ || !c_->open()) co_return false;
  start_response(HttpResponseStart{200, headers});
  submit_response(false);
  c_->wake_writer();
  co_return true;
}

asio::awaitable<void> Http2Stream::deny(int status) {
  respond_simple(status);
  co_return;
}

asio::awaitable<std::string_view> Http2Stream::read() {
  for (;;) {
    auto event = co_await (*this)();
    auto* r = std::get_if<HttpRequest>(&event);
    if (!r || (r->body.empty() && !r->more_body)) co_return std::string_view();
    if (!r->body.empty()) co_return r->body;
  }
}

asio::awaitable<bool> Http2Stream::write(std::string_view bytes) {
  try {
    if (queue_body(HttpResponseBody{bytes, true})) co_await wait_to_send();
  } catch (const ClientGone&) {
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> Http2Stream::finish() {
  if (closed_ || !c_->open()) co_return;
  try {
    queue_body(HttpResponseBody{{}, false});
  } catch (const ClientGone&) {
  }
}

// Called once the frame that ends our side of the stream is sent. A client still
// sending a body nobody will read is told to stop (RFC 9113 section 8.1), but only now:
// a RST_STREAM submitted earlier would make nghttp2 drop the queued response.
void Http2Stream::on_response_sent() {
  if (!end_stream_ && !closed_)
    nghttp2_submit_rst_stream(c_->session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_NO_ERROR);
}

asio::awaitable<void> Http2Stream::wait() {
  co_await wake_.async_wait(use_nothrow);
}

// --- Receive ----------------------------------------------------------------------------

asio::awaitable<ReceiveEvent> Http2Stream::operator()() {
  // What the app took last time is consumed now: only now may the client send more.
  if (delivered_ > 0) {
    body_in_.erase(0, delivered_);
    if (c_->open() && !closed_) {
      nghttp2_session_consume(c_->session(), id_, delivered_);
      c_->wake_writer();
    }
    delivered_ = 0;
  }
  for (;;) {
    if (body_too_large_) co_return HttpDisconnect{};
    if (closed_ && !(end_stream_ && !end_delivered_)) co_return HttpDisconnect{};
    if (response_ == Response::complete) co_return HttpDisconnect{};
    if (!body_in_.empty()) {
      delivered_ = body_in_.size();
      bool more = !end_stream_;
      if (!more) end_delivered_ = true;
      co_return HttpRequest{body_in_, more};
    }
    if (end_stream_ && !end_delivered_) {
      end_delivered_ = true;
      co_return HttpRequest{{}, false};
    }
    co_await wait();  // data, the end of the stream, a reset, or the response completing
  }
}

// --- Send -------------------------------------------------------------------------------

asio::awaitable<void> Http2Stream::operator()(SendEvent event) {
  if (closed_ || !c_->open()) throw ClientGone("stream closed");
  if (body_too_large_ && response_ == Response::none) co_return;  // the server answers 413
  if (auto* start = std::get_if<HttpResponseStart>(&event))
    start_response(*start);
  else if (auto* body = std::get_if<HttpResponseBody>(&event)) {
    if (queue_body(*body)) co_await wait_to_send();
  } else if (auto* trailers = std::get_if<HttpResponseTrailers>(&event))
    send_trailers(*trailers);
  else
    throw ProtocolError("lifespan message sent in an http scope");
}

void Http2Stream::start_response(const HttpResponseStart& start) {
  check_start(response_, start);
  status_ = start.status;
  trailers_expected_ = start.trailers;
  response_fields_.clear();
  bool has_date = false, has_server = false;
  for (const auto& h : start.headers) {
    if (is_connection_specific(h.name)) continue;
    has_date = has_date || is_field(h.name, "date");
    has_server = has_server || is_field(h.name, "server");
    response_fields_.add(h.name, h.value);  // names lower-cased, as HTTP/2 wants
  }
  if (!has_date) response_fields_.add("date", c_->worker().http_date());
  if (!has_server) response_fields_.add("server", "tricorn");
  response_ = Response::started;
}

// The fields as nghttp2 takes them (the array is copied, the bytes not: see make_nv), on
// the stack for any usual count.
template <typename F>
void with_nv(const FieldList& fields, std::string_view status, F&& submit) {
  constexpr size_t kOnStack = 32;
  nghttp2_nv stack[kOnStack];
  std::vector<nghttp2_nv> heap;
  const size_t n = fields.size() + (status.empty() ? 0 : 1);
  nghttp2_nv* nva = stack;
  if (n > kOnStack) {
    heap.resize(n);
    nva = heap.data();
  }
  size_t i = 0;
  if (!status.empty()) nva[i++] = make_nv(":status", status);
  fields.for_each(
      [&](std::string_view name, std::string_view value) { nva[i++] = make_nv(name, value); });
  submit(nva, i);
}

void Http2Stream::submit_response(bool end_stream) {
  auto [status_end, ec] = std::to_chars(status_text_, status_text_ + sizeof status_text_, status_);
  nghttp2_data_provider provider{};
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void*) -> ssize_t {
    return static_cast<Http2Stream*>(source->ptr)->read_body(buf, length, flags);
  };
  with_nv(response_fields_, {status_text_, static_cast<size_t>(status_end - status_text_)},
          [&](const nghttp2_nv* nva, size_t n) {
            nghttp2_submit_response(c_->session(), id_, nva, n, end_stream ? nullptr : &provider);
          });
  response_ = Response::head_sent;
}

void Http2Stream::note_progress() {
  progress_check_ = c_->stall_checks();
}

// No coroutine of its own: a send() that need not wait (almost all) costs one frame.
bool Http2Stream::queue_body(const HttpResponseBody& body) {
  check_body(response_);
  const bool bodyless = method_ == "HEAD" || status_ == 204 || status_ == 304;
  const bool last = !body.more_body;
  if (response_ == Response::started) {
    if (last && !trailers_expected_ && !bodyless && !response_fields_.has("content-length")) {
      char length[24];
      auto [end, ec] = std::to_chars(length, length + sizeof length, body.body.size());
      response_fields_.add("content-length", {length, static_cast<size_t>(end - length)});
    }
    bool headers_only = last && !trailers_expected_ && (bodyless || body.body.empty());
    submit_response(headers_only);
    if (headers_only) {
      response_ = Response::complete;
      c_->wake_writer();
      wake();
      return false;
    }
  }
  if (!bodyless) {
    body_bytes_ += body.body.size();
    if (body_out_.empty()) note_progress();
    body_out_.append(body.body);
  }
  if (last) {
    body_out_eof_ = true;
    response_ = trailers_expected_ ? Response::body_done : Response::complete;
  }
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(c_->session(), id_);
  }
  c_->wake_writer();
  return !last && body_out_.size() - body_out_pos_ > kSendWatermark;
}

// Backpressure: the app waits while the client (or its window) holds the data back.
asio::awaitable<void> Http2Stream::wait_to_send() {
  while (body_out_.size() - body_out_pos_ > kSendWatermark) {
    if (closed_ || !c_->open()) throw ClientGone("stream closed");
    co_await wait();
  }
}

void Http2Stream::send_trailers(const HttpResponseTrailers& trailers) {
  check_trailers(response_, trailers_expected_, trailers);
  for (const auto& h : trailers.headers) trailer_fields_.add(h.name, h.value);
  if (trailers.more_trailers) return;
  trailers_ready_ = true;
  response_ = Response::complete;
  if (deferred_) {
    deferred_ = false;
    nghttp2_session_resume_data(c_->session(), id_);
  }
  c_->wake_writer();
}

// nghttp2 pulls the response body from here as the peer's window allows.
ssize_t Http2Stream::read_body(uint8_t* buf, size_t length, uint32_t* flags) {
  size_t available = body_out_.size() - body_out_pos_;
  size_t n = std::min(available, length);
  std::memcpy(buf, body_out_.data() + body_out_pos_, n);
  body_out_pos_ += n;
  if (body_out_pos_ == body_out_.size()) {
    body_out_.clear();
    body_out_pos_ = 0;
  }
  if (n > 0) {
    note_progress();
    wake();  // an app waiting on backpressure may go on
  }
  bool drained = body_out_.empty();
  if (drained && body_out_eof_) {
    if (trailers_expected_ && !trailers_ready_) {
      if (n > 0) return static_cast<ssize_t>(n);
      deferred_ = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers_expected_) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      with_nv(trailer_fields_, {}, [&](const nghttp2_nv* nva, size_t n) {
        nghttp2_submit_trailer(c_->session(), id_, nva, n);
      });
    }
    return static_cast<ssize_t>(n);
  }
  if (n == 0) {
    deferred_ = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

void Http2Stream::reset(std::uint32_t error_code) {
  if (closed_ || !c_->open()) return;
  nghttp2_submit_rst_stream(c_->session(), NGHTTP2_FLAG_NONE, id_, error_code);
  c_->wake_writer();
}

void Http2Stream::respond_simple(int status) {
  if (closed_ || !c_->open()) return;
  response_fields_.clear();
  response_fields_.add("content-type", "text/plain; charset=utf-8");
  response_fields_.add("date", c_->worker().http_date());
  response_fields_.add("server", "tricorn");
  status_ = status;
  trailers_expected_ = false;
  body_out_ = fmt::format("{}\n", status);
  note_progress();
  body_out_pos_ = 0;
  body_out_eof_ = true;
  response_fields_.add("content-length", std::to_string(body_out_.size()));
  submit_response(false);
  response_ = Response::complete;
  c_->wake_writer();
}

}  // namespace

size_t streams_in_use(Worker& worker) {
  return asio::use_service<StreamPool>(worker.io()).in_use();
}

void start_connection(Worker& worker, Stream stream, const ListenerInfo& listener,
                      std::string received, std::unique_ptr<UpgradedRequest> upgraded) {
  auto c = std::make_shared<Http2Connection>(worker, std::move(stream), listener);
  asio::co_spawn(c->executor(), c->run(std::move(received), std::move(upgraded)),
                 [c](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     log::error("HTTP/2 connection closed on an error: {}", ex.what());
                   }
                 });
}

bool decode_base64url(std::string_view in, std::string& out) {
  out.clear();
  unsigned buffer = 0;
  int bits = 0;
  for (char ch : in) {
    int v;
    if (ch >= 'A' && ch <= 'Z')
      v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z')
      v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9')
      v = ch - '0' + 52;
    else if (ch == '-' || ch == '+')
      v = 62;
    else if (ch == '_' || ch == '/')
      v = 63;
    else if (ch == '=')
      break;
    else
      return false;
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return true;
}

}  // namespace tricorn::worker::http2
