// One HTTP/1.1 connection: a coroutine that reads a request head, hands the request to
// the app, and loops while the connection is kept alive. The connection object is the
// app's Receive and Send, so the app's messages come straight back here.
//
// Buffer: one per connection, holding [next request head][its body bytes][pipelined
// bytes]. The head's bytes do not move while its app runs (the Scope points into them),
// so body bytes are read into the space after the head.
//
// Output: responses are appended to out_ and written when the connection next waits
// for input (or a streamed body asks to be flushed), so that all responses produced
// from one read of pipelined requests go out in one write.
#include "worker/http1/connection.hpp"

#include "common/log.hpp"
#include "worker/access_log.hpp"
#include "worker/dispatch.hpp"
#include "worker/forwarded.hpp"
#include "worker/http1/parser.hpp"
#include "worker/http2/connection.hpp"
#include "worker/output_buffer.hpp"
#include "worker/reactor_ops.hpp"
#include "worker/runners.hpp"
#include "worker/watchdog.hpp"
#include "worker/websocket/session.hpp"
#include "worker/worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstring>
#include <ctime>
#include <deque>
#include <optional>
#include <vector>

namespace tricorn::worker::http1 {
namespace {

using config::seconds;
using tricorn::http1::iequals;
using namespace std::chrono_literals;
using tricorn::http1::BodyKind;
using tricorn::http1::ChunkedDecoder;
using tricorn::http1::Limits;
using tricorn::http1::ParseResult;
using tricorn::http1::RequestHead;
using tricorn::http1::ScanState;
using Clock = std::chrono::steady_clock;

constexpr size_t kInitialBuffer = BufferPool::kSize;
constexpr size_t kBodyRoom = 8 * 1024;        // free space kept after a head for body reads
constexpr size_t kLargeBodyRead = 64 * 1024;  // see read_large_body
// An idle keep-alive connection is parked after kParkAfter << its park shift (see the
// parking section): new connections soon, busy ones up to 1.28 s.
constexpr Clock::duration kParkAfter = 10ms;
constexpr std::uint8_t kParkShifts = 8;
constexpr Clock::duration park_delay(std::uint8_t shift) {
  return kParkAfter * (1 << shift);
}
constexpr size_t kDiscardLimit = 64 * 1024;  // unread body we read and drop to keep alive
constexpr size_t kCopyLimit = 16 * 1024;     // larger response pieces are written, not copied
constexpr std::uint64_t kUpgradeBodyLimit = 1024 * 1024;  // read whole before an h2c upgrade
constexpr auto kLingerTime = 2s;
constexpr std::uint32_t kLingerDiscardLimit = 1024 * 1024;  // dropped while lingering at most

// Each status we name, as its whole HTTP/1.1 status line: one copy per response.
std::string_view known_status_line(int status) {
  switch (status) {
    case 100: return "HTTP/1.1 100 Continue\r\n";
    case 101: return "HTTP/1.1 101 Switching Protocols\r\n";
    case 200: return "HTTP/1.1 200 OK\r\n";
    case 201: return "HTTP/1.1 201 Created\r\n";
    case 202: return "HTTP/1.1 202 Accepted\r\n";
    case 204: return "HTTP/1.1 204 No Content\r\n";
    case 206: return "HTTP/1.1 206 Partial Content\r\n";
    case 301: return "HTTP/1.1 301 Moved Permanently\r\n";
    case 302: return "HTTP/1.1 302 Found\r\n";
    case 303: return "HTTP/1.1 303 See Other\r\n";
    case 304: return "HTTP/1.1 304 Not Modified\r\n";
    case 307: return "HTTP/1.1 307 Temporary Redirect\r\n";
    case 308: return "HTTP/1.1 308 Permanent Redirect\r\n";
    case 400: return "HTTP/1.1 400 Bad Request\r\n";
    case 401: return "HTTP/1.1 401 Unauthorized\r\n";
    case 403: return "HTTP/1.1 403 Forbidden\r\n";
    case 404: return "HTTP/1.1 404 Not Found\r\n";
    case 405: return "HTTP/1.1 405 Method Not Allowed\r\n";
    case 408: return "HTTP/1.1 408 Request Timeout\r\n";
    case 409: return "HTTP/1.1 409 Conflict\r\n";
    case 411: return "HTTP/1.1 411 Length Required\r\n";
    case 413: return "HTTP/1.1 413 Content Too Large\r\n";
    case 414: return "HTTP/1.1 414 URI Too Long\r\n";
    case 415: return "HTTP/1.1 415 Unsupported Media Type\r\n";
    case 417: return "HTTP/1.1 417 Expectation Failed\r\n";
    case 422: return "HTTP/1.1 422 Unprocessable Content\r\n";
    case 426: return "HTTP/1.1 426 Upgrade Required\r\n";
    case 429: return "HTTP/1.1 429 Too Many Requests\r\n";
    case 431: return "HTTP/1.1 431 Request Header Fields Too Large\r\n";
    case 500: return "HTTP/1.1 500 Internal Server Error\r\n";
    case 501: return "HTTP/1.1 501 Not Implemented\r\n";
    case 502: return "HTTP/1.1 502 Bad Gateway\r\n";
    case 503: return "HTTP/1.1 503 Service Unavailable\r\n";
    case 504: return "HTTP/1.1 504 Gateway Timeout\r\n";
    case 505: return "HTTP/1.1 505 HTTP Version Not Supported\r\n";
    default: return {};
  }
}

std::string_view reason_phrase(int status) {
  constexpr size_t kBefore = std::string_view("HTTP/1.1 200 ").size();
  const auto line = known_status_line(status);
  return line.empty() ? "Unknown" : line.substr(kBefore, line.size() - kBefore - 2);
}

void append_decimal(OutputBuffer& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append({buf, static_cast<size_t>(end - buf)});
}

void append_hex(OutputBuffer& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, 16);
  out.append({buf, static_cast<size_t>(end - buf)});
}

class Http1Connection final : public worker::Connection,
                              public Receive,
                              public Send,
                              public websocket::Transport,
                              public std::enable_shared_from_this<Http1Connection> {
 public:
  // A parked connection comes back with what it had: the requests it has served and the
  // bytes that woke it.
  struct Resumed {
    std::uint64_t requests = 0;
    PooledRead read;
    std::uint8_t park_shift = 0;
  };

  Http1Connection(Worker& worker, Stream stream, const ListenerInfo& listener, Resumed resumed)
      : worker_(worker),
        stream_(std::move(stream)),
        listener_(listener),
        lot_(worker.parking_lot()),
        watchdog_(stream_),
        limits_{static_cast<size_t>(worker.config().limit_request_line),
                static_cast<size_t>(worker.config().limit_request_fields),
                static_cast<size_t>(worker.config().limit_request_field_size)},
        requests_(resumed.requests) {
    park_shift_ = resumed.park_shift;
    if (resumed.read.buffer) {
      buf_ = std::move(resumed.read.buffer);
      cap_ = kInitialBuffer;
      end_ = resumed.read.bytes;
      last_read_short_ = end_ < cap_;
    }
  }

  asio::awaitable<void> run();
  Socket::executor_type executor() { return stream_.executor(); }
  void on_drain() override;
  // The parking lot's: its read ends, and the connection parks (see read_request).
  void request_park() {
    park_requested_ = true;
    stream_.cancel();
  }

  // The lot's list of keep-alive connections waiting for a request, oldest first.
  Http1Connection* idle_prev_ = nullptr;
  Http1Connection* idle_next_ = nullptr;
  Clock::time_point idle_since_;
  std::uint8_t park_shift_ = 0;  // parked after park_delay(park_shift_) idle
  asio::awaitable<ReceiveEvent> operator()() override;
  asio::awaitable<void> operator()(SendEvent event) override;

  // websocket::Transport: after the 101, the connection carries frames both ways.
  asio::awaitable<bool> accept(std::span<const Header> headers) override;
  asio::awaitable<void> deny(int status) override;
  asio::awaitable<std::string_view> read() override;
  asio::awaitable<bool> write(std::string_view bytes) override;
  asio::awaitable<void> finish() override;
  void abort() override;

 private:
  using Response = ResponseStage;
  enum class Framing : std::uint8_t { none, length, chunked, until_close };
  enum class Wait : std::uint8_t { idle, head, body, send, linger, forever };

  // The request loop.
  enum class Next : std::uint8_t { request, close, http2, more, error, park };
  Next parse_buffered();
  asio::awaitable<Next> read_request(Next next);
  bool starts_with_preface(bool& complete) const;
  bool upgrade_offers(std::string_view protocol) const;
  bool wants_h2c_upgrade() const;
  asio::awaitable<void> serve_websocket();
  asio::awaitable<void> upgrade_to_h2c();
  void hand_off_to_http2(std::unique_ptr<http2::UpgradedRequest> upgraded);
  std::string_view scope_header(std::string_view name) const;
  asio::awaitable<bool> serve_unusual_request(bool scope_ok);
  void note_app_outcome(bool client_gone, std::string_view failure);
  asio::awaitable<void> finish_response();
  asio::awaitable<void> respond_error(int status, std::string_view reason,
                                      std::string_view extra_headers = {});
  asio::awaitable<void> linger_close();
  bool needs_linger();
  bool build_scope();
  bool over_body_limit() const;
  void reset_request_state();

  // Socket I/O with deadlines.
  asio::awaitable<size_t> read_some(Wait wait);
  bool flushed_now();
  asio::awaitable<void> flush(std::string_view extra = {});
  void set_deadline(Wait wait);
  Clock::time_point drain_deadline() const;

  // Buffer management.
  bool make_room_for_head();
  void release_buffer();
  Clock::time_point begin_idle_wait();
  std::optional<size_t> take_idle_read(const boost::system::error_code& ec, PooledRead& read);
  size_t read_first_now();
  bool may_park() const;
  void park();
  void note_read(size_t n, size_t space);
  void make_room_for_body();
  void rebase_head(const char* old_base, const char* new_base);

  // The app's side.
  asio::awaitable<ReceiveEvent> receive_body();
  asio::awaitable<ReceiveEvent> read_large_body();
  asio::awaitable<ReceiveEvent> wait_for_disconnect();
  void start_response(const HttpResponseStart& start);
  std::string_view queue_body(const HttpResponseBody& body);
  void end_piece(bool had_data);
  void send_trailers(const HttpResponseTrailers& trailers);
  void commit_head(std::string_view first_body, bool more_body);
  void write_access_log();
  void count_response(std::string_view method);
  void count_bytes(std::atomic<std::uint64_t> metrics::WorkerCounters::*field, size_t n) {
    if (auto* m = worker_.counters()) m->add(m->*field, n);
  }
  void count_connection(metrics::Protocol p, int d) {
    if (auto* m = worker_.counters()) m->add(m->connections[static_cast<int>(p)], d);
  }

  Worker& worker_;
  Stream stream_;
  const ListenerInfo& listener_;
  ParkingLot& lot_;
  Watchdog watchdog_;
  bool finished_ = false;
  bool handed_off_ = false;          // the stream now belongs to an HTTP/2 connection
  bool peer_closed_ = false;         // a read saw EOF
  bool client_asked_close_ = false;  // the current request said Connection: close
  bool waiting_idle_ = false;
  bool parking_ = false;             // the idle wait gave up: park() takes over
  bool park_requested_ = false;      // by the lot, which cancelled the read
  bool last_read_short_ = false;     // the last read left no bytes in the socket
  bool forwarding_trusted_ = false;  // the peer may set the client and scheme by header
  Limits limits_;
  websocket::Session* websocket_ = nullptr;  // while the connection carries one
  std::unique_ptr<char[]> tunnel_buf_;       // its read buffer
  std::unique_ptr<char[]> body_buf_;         // a large request body's (read_large_body)

  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;
  size_t begin_ = 0;     // start of the current request
  size_t end_ = 0;       // end of the bytes read
  size_t body_pos_ = 0;  // next unread body byte (after the current head)

  RequestHead head_;
  ScanState scan_;
  ParseResult parse_error_{};  // when parse_buffered says Next::error
  Scope scope_;
  std::string decoded_path_;
  Address client_;
  bool client_forwarded_ = false;  // scope_.client is another than client_
  std::uint64_t requests_ = 0;

  // Per request.
  bool keep_alive_ = true;
  bool body_done_ = false;
  bool empty_body_due_ = false;  // a request without a body still gets one http.request
  bool continue_sent_ = false;
  bool disconnected_ = false;
  int body_error_status_ = 0;
  std::uint64_t body_remaining_ = 0;
  std::uint64_t chunked_received_ = 0;
  ChunkedDecoder chunked_;
  Response response_ = Response::none;
  Framing framing_ = Framing::none;
  bool trailers_expected_ = false;
  bool head_request_ = false;
  bool no_body_status_ = false;
  int status_ = 0;
  std::optional<std::uint64_t> app_content_length_;
  std::uint64_t body_bytes_sent_ = 0;
  Clock::time_point request_start_;
  Clock::time_point head_started_ = Clock::now();
  bool request_started_at_head_ = false;  // see reset_request_state
  Clock::time_point idle_deadline_;       // keep-alive (or drain) end of this idle wait
  OutputBuffer head_out_;                 // the response head until its framing is known
  OutputBuffer out_;                      // bytes waiting to be written
};

void launch(Worker& worker, Stream stream, const ListenerInfo& listener,
            Http1Connection::Resumed resumed);

// A connection, served on the worker's reused coroutines (worker/runners.hpp).
struct ConnectionJob {
  static constexpr std::string_view kWhat = "Connection";
  std::shared_ptr<Http1Connection> connection;
  asio::awaitable<void> run() { return connection->run(); }  // no frame of its own
};
using ConnectionRunners = Runners<ConnectionJob>;

}  // namespace

// --- parking ---------------------------------------------------------------------------
//
// A keep-alive connection idle for kParkAfter is parked, as nginx keeps an idle
// connection: its coroutine and object end, its socket leaves Asio (and Asio's state for
// it, 168 bytes, goes back to Asio's pool), and what it needs between requests stays in
// a 104-byte record of the worker's ParkingLot: the descriptor, its peer, the requests it
// has served, its deadline. The lot watches its parked sockets with an epoll set of its
// own, itself one descriptor of the event loop. When bytes arrive, the lot reads them
// and a connection is made anew around them; at the keep-alive deadline the lot shuts
// down the sending side and reads until the client closes (a lingering close), as the
// connection would have. Parking costs two epoll_ctl calls and waking three more system
// calls, against a connection idle for kParkAfter at least.
//
// The lot also keeps the list of connections waiting idle, in the order they began, and
// one timer for the list and the records' deadlines: a busy keep-alive connection joins
// and leaves the list per request (a few stores) and sets no timer of its own.
//
// How long an idle connection waits before it is parked adapts per connection. A new
// connection is parked after kParkAfter (10 ms): its frames, object and buffers lie
// between the records of longer-lived ones, and a burst of thousands of connections that
// then stay idle would otherwise hold the burst's memory for as long as they stay. A
// connection woken within 8 times its delay doubles it, up to 1.28 s: under a load of
// many busy connections (wrk -c 3000 leaves each idle about 50 ms between requests) each
// is parked a few times and then no more, where a fixed short delay parked every request.
// One list per delay keeps each in the order of its deadlines.
class ParkingLot : public asio::execution_context::service, public worker::Connection {
 public:
  using key_type = ParkingLot;
  static inline asio::execution_context::id id;
  explicit ParkingLot(asio::execution_context& context)
      : service(context),
        io_(static_cast<asio::io_context&>(context)),
        runners_(asio::use_service<ConnectionRunners>(context)),
        timer_(io_),
        events_(io_) {}
  void attach(Worker& worker);
  // The worker's HTTP/1.1 connection runners, looked up once (use_service takes a lock
  // and walks the loop's services).
  ConnectionRunners& runners() { return runners_; }

  void enter(Http1Connection* c, Clock::time_point since);
  void leave(Http1Connection* c);
  // Takes the stream's socket: parked, or closed when it cannot be.
  void park(Stream& stream, const ListenerInfo& listener, std::uint64_t requests,
            std::uint8_t park_shift, Clock::time_point idle_since, Clock::time_point deadline);
  void on_drain() override;

 private:
  enum class State : std::uint8_t { free, waiting, lingering };
  static constexpr std::uint32_t kNone = ~std::uint32_t{0};
  struct Record {
    int fd = -1;
    State state = State::free;
    std::uint8_t writes_until_nodelay = 0;
    std::uint8_t park_shift = 0;
    std::uint32_t prev = kNone;  // in its list (waiting or lingering); next: or the free list
    std::uint32_t next = kNone;
    std::uint32_t discarded = 0;  // bytes read and dropped while lingering
    Socket::protocol_type protocol{0, 0};
    std::uint64_t requests = 0;
    Clock::time_point deadline;
    Clock::time_point idle_since;
    const ListenerInfo* listener = nullptr;
    Address peer;
  };
  struct List {
    std::uint32_t head = kNone;
    std::uint32_t tail = kNone;
  };

  struct IdleList {
    Http1Connection* head = nullptr;
    Http1Connection* tail = nullptr;
  };

  bool open_events();
  void wait_for_events();
  void on_events();
  void on_ready(std::uint32_t i, std::unique_ptr<char[]>& buffer);
  void resume(std::uint32_t i, std::unique_ptr<char[]> buffer, size_t bytes);
  void expire(std::uint32_t i);
  void close(std::uint32_t i);
  void release(std::uint32_t i);  // the record, not the descriptor
  void link(List& list, std::uint32_t i);
  void unlink(List& list, std::uint32_t i);
  void arm();
  void sweep();
  void shutdown() override;

  asio::io_context& io_;
  ConnectionRunners& runners_;
  Worker* worker_ = nullptr;
  asio::steady_timer timer_;
  asio::posix::stream_descriptor events_;  // the lot's epoll set
  bool armed_ = false;
  bool closed_ = false;
  unsigned generation_ = 0;
  Clock::time_point armed_for_;
  IdleList idle_[kParkShifts];
  // A deque: it grows by blocks, without the copy and the momentary double size of a
  // vector's growth, and a record stays where it is.
  std::deque<Record> records_;
  std::uint32_t free_ = kNone;
  List waiting_, lingering_;
};

namespace {

asio::awaitable<void> Http1Connection::run() {
  worker_.track(this);
  count_connection(metrics::Protocol::http1, 1);
  struct Finish {
    Http1Connection* c;
    ~Finish() {
      c->count_connection(metrics::Protocol::http1, -1);
      c->finished_ = true;
      c->watchdog_.stop();
      c->release_buffer();
      c->worker_.untrack(c);
    }
  } finish{this};
  client_ = stream_.peer();
  scope_.client = client_;
  if (!listener_.is_unix) scope_.server = {listener_.server_host, listener_.server_port};
  scope_.state = worker_.state();
  forwarding_trusted_ = worker_.trusts_forwarding_from(client_.host);
  // A request already buffered (pipelined, or read with the previous one) is served
  // without a coroutine call of its own: the common path allocates only the app's
  // frame and one per send(), which Asio's frame cache recycles.
  for (;;) {
    scan_ = {};
    client_asked_close_ = false;
    auto next = parse_buffered();
    if (next == Next::more || next == Next::error) next = co_await read_request(next);
    if (next == Next::http2) hand_off_to_http2(nullptr);
    if (next == Next::park) park();
    if (next != Next::request) break;
    make_room_for_body();
    reset_request_state();
    {
      struct Count {  // every answer of this request, whichever way it leaves
        Http1Connection* c;
        ~Count() {
          if (c->status_ && c->status_ != 101 && !c->handed_off_)
            c->count_response(c->head_.method);
        }
      } count{this};
      bool served = false;
      if (bool scope_ok = build_scope(); !scope_ok || over_body_limit() || !head_.upgrade.empty())
        served = co_await serve_unusual_request(scope_ok);
      if (!served) {
        bool client_gone = false;
        std::string failure;
        try {
          co_await worker_.run_app(scope_, *this, *this);
        } catch (const ClientGone&) {
          client_gone = true;
        } catch (const std::exception& e) {
          failure = e.what();
        }
        note_app_outcome(client_gone, failure);
        if (!client_gone) {
          if (response_ != Response::complete || (keep_alive_ && !body_done_))
            co_await finish_response();
          if (log::access_enabled()) write_access_log();
        }
      }
    }
    if (handed_off_) break;
    ++requests_;
    worker_.on_request_done();
    if (!keep_alive_) break;
    begin_ = body_pos_;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  if (handed_off_) co_return;
  if (!flushed_now()) co_await flush();
  if (needs_linger()) {
    co_await linger_close();
  } else {
    // Closed now, not when the last reference to this object goes (a loop turn later,
    // when the watchdog's cancelled wait has run): by then the client has often closed
    // its end first, and the FIN we would send last is processed on our CPU.
    boost::system::error_code ignored;
    stream_.socket().close(ignored);
  }
}

// A lingering close protects a response from the reset that unread input would cause.
// It is not needed when the client asked to close and nothing of it is left unread:
// the client will send nothing more, and waiting for its FIN costs a loop turn per
// connection. "Nothing left" is known without a system call when the last read came
// back short of the space offered (nginx decides the same way); over TLS the socket is
// asked, since OpenSSL reads ahead.
bool Http1Connection::needs_linger() {
  if (peer_closed_) return false;
  if (!client_asked_close_ || !body_done_ || body_pos_ < end_) return true;
  if (!stream_.is_tls()) return !last_read_short_;  // nginx's rule: no system call
  int pending = 0;
  return ::ioctl(stream_.native_handle(), FIONREAD, &pending) != 0 || pending > 0;
}

// Is a whole request head buffered (or the HTTP/2 preface, on a connection's first
// bytes)? Next::more: not yet; Next::error: a malformed head (see parse_error_).
Http1Connection::Next Http1Connection::parse_buffered() {
  bool preface_complete = false;
  if (requests_ == 0 && starts_with_preface(preface_complete))
    return preface_complete ? Next::http2 : Next::more;
  if (begin_ == end_) return Next::more;
  auto r = tricorn::http1::parse_request(buf_.get() + begin_, end_ - begin_, limits_, head_, scan_);
  if (r.kind == ParseResult::complete) return Next::request;
  if (r.kind == ParseResult::incomplete) return Next::more;
  parse_error_ = r;
  return Next::error;
}

// Reads until a whole request head is buffered, starting from what parse_buffered
// said. Next::close: the connection is done (closed by the peer, timed out, or answered
// with an error).
//
// The wait for a next request (or a connection's first) is awaited here, not in a
// coroutine of its own: on a keep-alive connection it is every request's wait, and a
// nested coroutine costs a frame and a resumption each time. Its read takes a buffer
// from the worker's pool only once there is something to read: an idle keep-alive
// connection holds no buffer, and waiting costs no system call (see
// worker/reactor_ops.hpp). Over TLS the connection keeps its buffer and reads through
// OpenSSL, which may hold decrypted bytes the socket no longer shows as readable.
asio::awaitable<Http1Connection::Next> Http1Connection::read_request(Next next) {
  for (;; next = parse_buffered()) {
    if (next == Next::error) {
      co_await respond_error(parse_error_.status, parse_error_.reason);
      count_response({});
      co_return Next::close;
    }
    if (next != Next::more) co_return next;
    const bool idle = begin_ == end_;
    if (!idle && !make_room_for_head()) {
      co_await respond_error(431, "request head too large");
      count_response({});
      co_return Next::close;
    }
    size_t n = 0;  // 0: EOF, an error, a timeout, or the connection parks
    if (!idle) {
      n = co_await read_some(Wait::head);
    } else {
      if (!flushed_now()) co_await flush();
      if (requests_ == 0 && !buf_ && !stream_.is_tls()) n = read_first_now();
      if (n == 0) {
        const auto idle_since = begin_idle_wait();
        struct Done {
          Http1Connection* c;
          ~Done() { c->waiting_idle_ = false; }
        } done{this};
        if (stream_.is_tls()) {
          make_room_for_head();
          n = co_await read_some(Wait::idle);
        } else {
          set_deadline(Wait::idle);
          release_buffer();  // nothing is in it: the read brings one
          for (;;) {
            const bool parkable = may_park();
            park_requested_ = false;
            if (parkable) lot_.enter(this, idle_since);
            auto [ec, read] = co_await async_read_pooled(stream_.socket(), worker_.reactor(),
                                                         worker_.buffers(), use_nothrow);
            if (parkable) lot_.leave(this);
            if (auto bytes = take_idle_read(ec, read)) {
              n = *bytes;
              break;
            }
          }
        }
      }
    }
    if (n == 0) {
      if (parking_) co_return Next::park;
      if (watchdog_.expired() && !idle) {
        co_await respond_error(408, "request head not received in time");
        count_response({});
      }
      co_return Next::close;
    }
    if (idle && requests_ > 0) {
      head_started_ = Clock::now();
      request_started_at_head_ = true;
    }
  }
}

// HTTP/2 with prior knowledge: the client's first bytes are the connection preface.
bool Http1Connection::starts_with_preface(bool& complete) const {
  size_t have = end_ - begin_;
  if (have == 0 || stream_.is_tls()) return false;  // over TLS, ALPN decides
  size_t n = std::min(have, http2::kClientPreface.size());
  if (std::memcmp(buf_.get() + begin_, http2::kClientPreface.data(), n) != 0) return false;
  complete = n == http2::kClientPreface.size();
  return true;
}

// Does the Upgrade field (present only when Connection names it) list `protocol`?
bool Http1Connection::upgrade_offers(std::string_view protocol) const {
  return tricorn::http1::list_has_token(head_.upgrade, protocol);
}

bool Http1Connection::wants_h2c_upgrade() const {
  if (stream_.is_tls() || head_.upgrade.empty()) return false;
  const bool h2c = upgrade_offers("h2c");
  // A body must be read whole before switching; a large or chunked one is served over
  // HTTP/1.1 instead, which RFC 9113 allows (the server may ignore Upgrade).
  return h2c && !scope_header("http2-settings").empty() &&
         (head_.body == BodyKind::none ||
          (head_.body == BodyKind::length && head_.content_length <= kUpgradeBodyLimit));
}

// Upgrade: h2c (RFC 7540 section 3.2): read the body, answer 101, and hand the
// connection and this request (as stream 1) to HTTP/2.
asio::awaitable<void> Http1Connection::upgrade_to_h2c() {
  auto upgraded = std::make_unique<http2::UpgradedRequest>();
  if (!http2::decode_base64url(scope_header("http2-settings"), upgraded->settings)) {
    co_await respond_error(400, "malformed HTTP2-Settings");
    co_return;
  }
  while (!body_done_) {
    auto ev = co_await receive_body();
    auto* r = std::get_if<HttpRequest>(&ev);
    if (!r) co_return;  // the client went away
    upgraded->body.append(r->body);
  }
  upgraded->method = head_.method;
  upgraded->target =
      head_.query.empty() ? std::string(head_.path) : fmt::format("{}?{}", head_.path, head_.query);
  for (const auto& h : head_.headers) upgraded->headers.emplace_back(h.name, h.value);
  out_ += "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
  co_await flush();
  hand_off_to_http2(std::move(upgraded));
}

void Http1Connection::hand_off_to_http2(std::unique_ptr<http2::UpgradedRequest> upgraded) {
  size_t from = upgraded ? body_pos_ : begin_;
  std::string received(buf_.get() + from, end_ - from);
  handed_off_ = true;
  http2::start_connection(worker_, std::move(stream_), listener_, std::move(received),
                          std::move(upgraded));
}

std::string_view Http1Connection::scope_header(std::string_view name) const {
  for (const auto& h : head_.headers)
    if (h.name == name) return h.value;
  return {};
}

void Http1Connection::reset_request_state() {
  client_asked_close_ = !head_.keep_alive;
  keep_alive_ = head_.keep_alive && worker_.config().keepalive > 0;
  body_done_ = head_.body == BodyKind::none;
  empty_body_due_ = body_done_;
  continue_sent_ = false;
  disconnected_ = false;
  body_error_status_ = 0;
  body_remaining_ = head_.body == BodyKind::length ? head_.content_length : 0;
  chunked_received_ = 0;
  chunked_.reset();
  response_ = Response::none;
  framing_ = Framing::none;
  trailers_expected_ = false;
  head_request_ = head_.method == "HEAD";
  no_body_status_ = false;
  status_ = 0;
  app_content_length_.reset();
  body_bytes_sent_ = 0;
  head_out_.clear();
  body_buf_.reset();  // a large body's buffer goes back to the heap with its request
  // A head that came with the read that waited for it began when that read returned
  // (the clock was read then); one found in the buffer begins now.
  request_start_ = std::exchange(request_started_at_head_, false) ? head_started_ : Clock::now();
}

bool Http1Connection::over_body_limit() const {
  const auto limit = worker_.config().limit_request_body;
  return limit && head_.body == BodyKind::length && head_.content_length > limit;
}

// The requests the app does not simply answer: a malformed path, a body over
// limit_request_body (refused before the app, and before a client waiting for 100
// Continue sends it), an Upgrade. Returns false when the app serves it after all (an
// Upgrade to a protocol the server does not act on).
asio::awaitable<bool> Http1Connection::serve_unusual_request(bool scope_ok) {
  if (!scope_ok) {
    co_await respond_error(400, "malformed percent-encoding in the path");
    co_return true;
  }
  if (over_body_limit()) {
    co_await respond_error(413, "request body over limit_request_body");
    co_return true;
  }
  if (upgrade_offers("websocket")) {
    if (auto check = websocket::check_http1_handshake(scope_); check.error_status)
      co_await respond_error(check.error_status, check.why,
                             check.error_status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "");
    else
      co_await serve_websocket();
    co_return true;
  }
  if (wants_h2c_upgrade()) {
    co_await upgrade_to_h2c();
    co_return true;
  }
  co_return false;
}

void Http1Connection::note_app_outcome(bool client_gone, std::string_view failure) {
  if (client_gone) {
    keep_alive_ = false;
    disconnected_ = true;  // nothing more can reach this client
    return;
  }
  if ((!failure.empty() || response_ != Response::complete) && !body_error_status_)
    log_app_failure(scope_, head_.target,
                    !failure.empty() ? failure
                    : response_ == Response::none
                        ? "the app returned without a response"
                        : "the app returned before the response was complete");
}

// After the app: answer for it if it did not, and decide whether the connection can
// carry another request.
asio::awaitable<void> Http1Connection::finish_response() {
  if (response_ == Response::none || response_ == Response::started) {
    // Nothing reached out_ yet, so the client can still get a clean error.
    head_out_.clear();
    response_ = Response::none;
    int status = body_error_status_ ? body_error_status_ : 500;
    co_await respond_error(status, body_error_status_ ? "bad request body" : "");
    keep_alive_ = false;
    co_return;
  }
  if (response_ != Response::complete) keep_alive_ = false;  // truncated: only a close tells
  if (!keep_alive_ || body_done_) co_return;
  // The app did not read the whole body. Drop a small rest to keep the connection;
  // a large one, or one the client waits to be asked for, costs less as a close.
  bool waiting_for_continue = head_.expect_continue && !continue_sent_;
  if (waiting_for_continue || body_error_status_ || disconnected_ ||
      (head_.body == BodyKind::length && body_remaining_ > kDiscardLimit)) {
    keep_alive_ = false;
    co_return;
  }
  std::uint64_t discarded = 0;
  while (!body_done_ && discarded <= kDiscardLimit && !disconnected_) {
    auto ev = co_await receive_body();
    if (auto* r = std::get_if<HttpRequest>(&ev)) discarded += r->body.size();
  }
  if (!body_done_ || body_error_status_) keep_alive_ = false;
}

asio::awaitable<void> Http1Connection::respond_error(int status, std::string_view reason,
                                                     std::string_view extra_headers) {
  if (!reason.empty()) log::debug("Invalid request from {}: {} ({})", client_.host, status, reason);
  status_ = status;
  keep_alive_ = false;
  auto body = fmt::format("{} {}\n", status, reason_phrase(status));
  out_ += fmt::format(
      "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: tricorn\r\nConnection: close\r\n"
      "{}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{}",
      status, reason_phrase(status), worker_.http_date(), extra_headers, body.size(), body);
  response_ = Response::complete;
  co_return;
}

// Closing with unread input makes the kernel send a reset, which can destroy the
// response the client has not read yet. Shut down our side and read until the peer
// closes (or a short deadline) first.
asio::awaitable<void> Http1Connection::linger_close() {
  boost::system::error_code ec;
  stream_.socket().shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) co_return;
  begin_ = end_ = 0;
  if (!buf_) {
    buf_ = worker_.buffers().take();
    cap_ = kInitialBuffer;
  }
  set_deadline(Wait::linger);
  for (size_t total = 0; total < 1024 * 1024;) {
    auto [rec, n] = co_await stream_.read_some(asio::buffer(buf_.get(), cap_));
    if (rec) break;
    total += n;
  }
  stream_.socket().close(ec);
}

bool Http1Connection::build_scope() {
  scope_.type = ScopeType::http;
  scope_.http_version = head_.version_minor == 0 ? "1.0" : "1.1";
  scope_.method = head_.method;
  scope_.scheme = listener_.scheme;
  scope_.raw_path = head_.path;
  scope_.query_string = head_.query;
  scope_.root_path = worker_.config().root_path;
  scope_.headers = {head_.headers.data(), head_.headers.size()};
  if (forwarding_trusted_) {
    if (client_forwarded_) scope_.client = client_;  // the previous request's was rewritten
    client_forwarded_ = apply_forwarded(scope_, worker_.forwarded_trusted());
  }
  if (head_.path.find('%') == std::string_view::npos) {
    scope_.path = head_.path;
    return true;
  }
  if (!tricorn::http1::percent_decode(head_.path, decoded_path_)) return false;
  scope_.path = decoded_path_;
  return true;
}

// --- socket I/O -------------------------------------------------------------------------

void Http1Connection::set_deadline(Wait wait) {
  const auto& c = worker_.config();
  auto deadline = Watchdog::kNever;
  switch (wait) {
    case Wait::idle: deadline = idle_deadline_; break;
    case Wait::head:
      // One deadline for the whole head, counted from its first byte (from the accept
      // for a connection's first request): a client sending a byte at a time gains
      // nothing.
      deadline = head_started_ + seconds(c.header_timeout);
      break;
    case Wait::body: deadline = Clock::now() + seconds(c.body_timeout); break;
    case Wait::send: deadline = Clock::now() + seconds(c.send_timeout); break;
    case Wait::linger: deadline = Clock::now() + kLingerTime; break;
    case Wait::forever: break;
  }
  watchdog_.set(deadline, shared_from_this());
}

// Reads into the free space at the end of the buffer. Returns 0 on EOF, error or timeout.
asio::awaitable<size_t> Http1Connection::read_some(Wait wait) {
  if (!flushed_now()) co_await flush();
  set_deadline(wait);
  const size_t space = cap_ - end_;
  auto [ec, n] = co_await stream_.read_some(asio::buffer(buf_.get() + end_, space));
  watchdog_.clear();
  if (ec == asio::error::eof) peer_closed_ = true;
  if (ec) co_return 0;
  note_read(n, space);
  co_return n;
}

// flush() without a coroutine frame when the socket takes all of out_ at once, as it
// nearly always does: true when nothing is left to write. What it could not write, or an
// error, is left to flush(), which waits with a deadline (and finds the error again).
bool Http1Connection::flushed_now() {
  if (out_.empty()) return true;
  boost::system::error_code ec;
  const size_t n = stream_.write_now(out_.view(), {}, ec);
  count_bytes(&metrics::WorkerCounters::bytes_out, n);
  out_.drop_front(n);
  return out_.empty();
}

asio::awaitable<void> Http1Connection::flush(std::string_view extra) {
  if (out_.empty() && extra.empty()) co_return;
  std::string_view first = out_.view();
  boost::system::error_code ec;
  size_t written = stream_.write_now(first, extra, ec);
  if (!ec && written < first.size() + extra.size()) {
    const size_t from_first = std::min(written, first.size());
    first.remove_prefix(from_first);
    extra.remove_prefix(written - from_first);
    set_deadline(Wait::send);
    std::array<asio::const_buffer, 2> buffers{asio::buffer(first), asio::buffer(extra)};
    auto [wec, n] = co_await stream_.write(buffers);
    watchdog_.clear();
    ec = wec;
    written += n;
  }
  out_.clear();
  count_bytes(&metrics::WorkerCounters::bytes_out, written);
  if (ec) {
    disconnected_ = true;
    throw ClientGone(watchdog_.expired() ? "send timeout" : ec.message());
  }
}

void Http1Connection::on_drain() {
  // An idle connection gets the drain window; a busy one closes after its response,
  // which will carry Connection: close; a WebSocket is closed with 1001.
  if (websocket_) {
    websocket_->on_drain();
  } else if (waiting_idle_) {
    idle_deadline_ = std::min(idle_deadline_, drain_deadline());
    set_deadline(Wait::idle);
  }
}

// An idle connection of a draining worker is closed after a short window (at most 2 s,
// or keepalive when shorter), so requests already on their way are still answered.
Clock::time_point Http1Connection::drain_deadline() const {
  return Clock::now() + seconds(std::min(worker_.config().keepalive, 2.0));
}

// --- WebSocket ----------------------------------------------------------------------

asio::awaitable<void> Http1Connection::serve_websocket() {
  keep_alive_ = false;  // whatever happens, the connection ends with the session
  tunnel_buf_ = worker_.buffers().take();
  auto session = std::make_shared<websocket::Session>(worker_, scope_, *this,
                                                      scope_.header("sec-websocket-key"));
  websocket_ = session.get();
  count_connection(metrics::Protocol::http1, -1);
  count_connection(metrics::Protocol::websocket, 1);
  co_await session->run(head_.target);
  count_connection(metrics::Protocol::websocket, -1);
  count_connection(metrics::Protocol::http1, 1);
  websocket_ = nullptr;
  worker_.buffers().give(std::move(tunnel_buf_));
}

asio::awaitable<bool> Http1Connection::accept(std::span<const Header> headers) {
  status_ = 101;
  out_ += "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n";
  for (const auto& h : headers) out_.append(h.name).append(": ").append(h.value).append("\r\n");
  out_ += "\r\n";
  response_ = Response::head_sent;
  try {
    co_await flush();
  } catch (const ClientGone&) {
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> Http1Connection::deny(int status) {
  co_await respond_error(status, "websocket handshake refused by the app");
}

// Frames the client sent right behind the handshake are in the request buffer; later
// ones are read into the session's buffer. No deadline: the session's pings decide
// when a quiet client is gone.
asio::awaitable<std::string_view> Http1Connection::read() {
  if (body_pos_ < end_) {
    std::string_view early(buf_.get() + body_pos_, end_ - body_pos_);
    body_pos_ = end_;
    co_return early;
  }
  auto [ec, n] = co_await stream_.read_some(asio::buffer(tunnel_buf_.get(), BufferPool::kSize));
  if (ec == asio::error::eof) peer_closed_ = true;
  if (ec) co_return std::string_view();
  count_bytes(&metrics::WorkerCounters::bytes_in, n);
  co_return std::string_view(tunnel_buf_.get(), n);
}

asio::awaitable<bool> Http1Connection::write(std::string_view bytes) {
  set_deadline(Wait::send);
  auto [ec, n] = co_await stream_.write(asio::buffer(bytes));
  watchdog_.clear();
  count_bytes(&metrics::WorkerCounters::bytes_out, n);
  co_return !ec;
}

asio::awaitable<void> Http1Connection::finish() {
  response_ = Response::complete;
  co_return;
}

void Http1Connection::abort() {
  boost::system::error_code ignored;
  stream_.socket().shutdown(asio::socket_base::shutdown_both, ignored);
  peer_closed_ = true;  // nothing to linger for
}

// --- buffer -------------------------------------------------------------------------

// The deadline of a wait for the next request: keep-alive (header_timeout before the
// first request), or the drain window. Returns when the wait began.
Clock::time_point Http1Connection::begin_idle_wait() {
  const auto& c = worker_.config();
  const auto now = Clock::now();
  idle_deadline_ = now + seconds(requests_ == 0 ? c.header_timeout : c.keepalive);
  if (worker_.draining()) idle_deadline_ = std::min(idle_deadline_, drain_deadline());
  waiting_idle_ = true;
  return now;
}

// What an idle read ended with: the bytes read (0 at EOF, on an error, at the deadline,
// or when the parking lot takes the connection), or nothing when the lot asked to park
// it but the drain began meanwhile, and the wait goes on to the drain's deadline.
std::optional<size_t> Http1Connection::take_idle_read(const boost::system::error_code& ec,
                                                      PooledRead& read) {
  if (ec == asio::error::operation_aborted && std::exchange(park_requested_, false) &&
      !watchdog_.expired()) {
    if (!may_park()) return std::nullopt;
    parking_ = true;
    watchdog_.clear();
    return 0;
  }
  watchdog_.clear();
  if (ec == asio::error::eof) peer_closed_ = true;
  if (ec) return 0;
  buf_ = std::move(read.buffer);
  cap_ = kInitialBuffer;
  note_read(read.bytes, cap_);
  return read.bytes;
}

// A new connection's request has usually arrived by the time it is accepted: read it
// with one recv before any deadline is set, since a deadline arms a timer that would be
// cancelled a moment later. 0 when nothing is there yet (or the peer is already gone,
// which the waiting read then finds out).
size_t Http1Connection::read_first_now() {
  PooledRead read;
  boost::system::error_code ignored;
  if (!read_pooled_now(stream_.native_handle(), worker_.buffers(), read, ignored)) return 0;
  buf_ = std::move(read.buffer);
  cap_ = kInitialBuffer;
  note_read(read.bytes, cap_);
  return read.bytes;
}

void Http1Connection::note_read(size_t n, size_t space) {
  count_bytes(&metrics::WorkerCounters::bytes_in, n);
  end_ += n;
  last_read_short_ = n < space;
}

void Http1Connection::release_buffer() {
  if (!buf_) return;
  if (cap_ == kInitialBuffer) worker_.buffers().give(std::move(buf_));
  buf_.reset();  // a buffer grown for a large head goes back to the heap
  cap_ = begin_ = end_ = 0;
}

bool Http1Connection::make_room_for_head() {
  if (!buf_) {
    buf_ = worker_.buffers().take();
    cap_ = kInitialBuffer;
  }
  if (end_ < cap_) return true;
  if (begin_ > 0) {
    std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    scan_.pos -= std::min(scan_.pos, begin_);
    scan_.line_start -= std::min(scan_.line_start, begin_);
    begin_ = 0;
    return true;
  }
  size_t max_head = limits_.request_line + 2 + limits_.fields * (limits_.field_size + 2) + 2;
  if (cap_ >= max_head + kBodyRoom) return false;
  size_t bigger = std::min(cap_ * 2, max_head + kBodyRoom);
  auto next = std::make_unique<char[]>(bigger);
  std::memcpy(next.get(), buf_.get(), end_);
  buf_ = std::move(next);
  cap_ = bigger;
  return true;
}

// Ensures space after the head for body reads, moving the head (and re-pointing its
// views) when needed. Called before the scope is built.
void Http1Connection::make_room_for_body() {
  size_t head_end = begin_ + head_.head_size;
  body_pos_ = head_end;
  if (head_.body == BodyKind::none || end_ > head_end || cap_ - head_end >= kBodyRoom) return;
  const char* old_base = buf_.get() + begin_;
  size_t used = end_ - begin_;
  if (cap_ - used >= kBodyRoom) {
    std::memmove(buf_.get(), old_base, used);
  } else {
    size_t bigger = used + kBodyRoom;
    auto next = std::make_unique<char[]>(bigger);
    std::memcpy(next.get(), old_base, used);
    buf_ = std::move(next);
    cap_ = bigger;
  }
  rebase_head(old_base, buf_.get());
  begin_ = 0;
  end_ = used;
  body_pos_ = head_.head_size;
}

void Http1Connection::rebase_head(const char* old_base, const char* new_base) {
  auto move = [&](std::string_view& v) {
    if (v.data() >= old_base && v.data() < old_base + head_.head_size)
      v = std::string_view(new_base + (v.data() - old_base), v.size());
  };
  for (auto* v :
       {&head_.method, &head_.target, &head_.path, &head_.query, &head_.host, &head_.upgrade})
    move(*v);
  for (auto& h : head_.headers) {
    move(h.name);
    move(h.value);
  }
}

// --- Receive ------------------------------------------------------------------------

asio::awaitable<ReceiveEvent> Http1Connection::operator()() {
  if (response_ == Response::complete || disconnected_) co_return HttpDisconnect{};
  if (std::exchange(empty_body_due_, false)) co_return HttpRequest{{}, false};
  if (!body_done_) co_return co_await receive_body();
  co_return co_await wait_for_disconnect();
}

asio::awaitable<ReceiveEvent> Http1Connection::receive_body() {
  if (head_.expect_continue && !continue_sent_ && response_ == Response::none &&
      body_pos_ == end_) {
    out_ += "HTTP/1.1 100 Continue\r\n\r\n";
    continue_sent_ = true;
  }
  for (;;) {
    if (body_pos_ < end_) {
      if (head_.body == BodyKind::length) {
        size_t n = static_cast<size_t>(std::min<std::uint64_t>(body_remaining_, end_ - body_pos_));
        std::string_view data(buf_.get() + body_pos_, n);
        body_pos_ += n;
        body_remaining_ -= n;
        body_done_ = body_remaining_ == 0;
        co_return HttpRequest{data, !body_done_};
      }
      auto st = chunked_.step(buf_.get() + body_pos_, end_ - body_pos_);
      body_pos_ += st.consumed;
      chunked_received_ += st.data.size();
      const auto limit = worker_.config().limit_request_body;
      if (limit && chunked_received_ > limit) st.error_status = 413;
      if (st.error_status) {
        body_error_status_ = st.error_status;
        keep_alive_ = false;
        disconnected_ = true;
        co_return HttpDisconnect{};
      }
      if (st.done) {
        body_done_ = true;
        co_return HttpRequest{{}, false};
      }
      if (!st.data.empty()) co_return HttpRequest{st.data, true};
    }
    // Everything buffered was handed out: read the next piece where the body started.
    body_pos_ = end_ = begin_ + head_.head_size;
    if (head_.body == BodyKind::length && body_remaining_ > cap_ - end_)
      co_return co_await read_large_body();
    if (co_await read_some(Wait::body) == 0) {
      disconnected_ = true;
      keep_alive_ = false;
      co_return HttpDisconnect{};
    }
  }
}

// A body larger than the room after the head is read in pieces of up to 64 KiB, into a
// buffer of the request's own (the head cannot move: the app's scope points into it),
// and never more than what is left of the body, so no byte of a following request lands
// there. Eight times fewer reads than the room after an 8 KiB head allows (and, for an
// app that streams the body back, fewer writes). Chunked bodies, whose end is known
// only once it is read, keep the connection's buffer.
asio::awaitable<ReceiveEvent> Http1Connection::read_large_body() {
  if (!body_buf_) body_buf_ = std::make_unique_for_overwrite<char[]>(kLargeBodyRead);
  const size_t want = static_cast<size_t>(std::min<std::uint64_t>(body_remaining_, kLargeBodyRead));
  if (!flushed_now()) co_await flush();
  set_deadline(Wait::body);
  auto [ec, n] = co_await stream_.read_some(asio::buffer(body_buf_.get(), want));
  watchdog_.clear();
  if (ec == asio::error::eof) peer_closed_ = true;
  if (ec) {
    disconnected_ = true;
    keep_alive_ = false;
    co_return HttpDisconnect{};
  }
  count_bytes(&metrics::WorkerCounters::bytes_in, n);
  last_read_short_ = n < want;
  body_remaining_ -= n;
  body_done_ = body_remaining_ == 0;
  co_return HttpRequest{{body_buf_.get(), n}, !body_done_};
}

// ASGI: once the body is read, receive() blocks until the client goes away (or the
// response is complete). Bytes that arrive meanwhile are pipelined requests: keep them.
asio::awaitable<ReceiveEvent> Http1Connection::wait_for_disconnect() {
  if (!flushed_now()) co_await flush();
  for (;;) {
    if (end_ == cap_) {
      // No room to keep pipelined bytes: just wait for readability and peek.
      auto [ec] = co_await stream_.socket_to_wait_on().async_wait(asio::socket_base::wait_read,
                                                                  use_nothrow);
      char probe;
      if (ec || ::recv(stream_.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT) == 0) break;
      asio::steady_timer pause(stream_.executor(), 100ms);
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    if (co_await read_some(Wait::forever) == 0) break;
  }
  disconnected_ = true;
  keep_alive_ = false;
  co_return HttpDisconnect{};
}

// --- Send ---------------------------------------------------------------------------

asio::awaitable<void> Http1Connection::operator()(SendEvent event) {
  // The request body was refused (malformed, or over limit_request_body) and the app
  // was told the client is gone: the server answers with the error, not the app.
  if (body_error_status_ && response_ == Response::none) co_return;
  if (auto* start = std::get_if<HttpResponseStart>(&event)) {
    start_response(*start);
  } else if (auto* body = std::get_if<HttpResponseBody>(&event)) {
    // A piece too large to copy is written from the app's memory before send returns;
    // a streamed piece is written now, so a slow client slows the app down instead of
    // filling memory.
    std::string_view large = queue_body(*body);
    if (!large.empty()) {
      co_await flush(large);
      end_piece(true);
    }
    if (body->more_body && !flushed_now()) co_await flush();
  } else if (auto* trailers = std::get_if<HttpResponseTrailers>(&event)) {
    send_trailers(*trailers);
  } else {
    throw ProtocolError("lifespan message sent in an http scope");
  }
}

void Http1Connection::start_response(const HttpResponseStart& start) {
  check_start(response_, start);
  status_ = start.status;
  no_body_status_ = status_ == 204 || status_ == 304;
  trailers_expected_ = start.trailers;
  head_out_.clear();
  if (auto line = known_status_line(status_); !line.empty()) {
    head_out_.append(line);
  } else {
    head_out_.append("HTTP/1.1 ");
    append_decimal(head_out_, static_cast<std::uint64_t>(status_));
    head_out_.append(" Unknown\r\n");
  }
  bool has_date = false, has_server = false;
  for (const auto& h : start.headers) {
    if (iequals(h.name, "content-length")) {
      std::uint64_t n = 0;
      auto [end, ec] = std::from_chars(h.value.data(), h.value.data() + h.value.size(), n);
      if (ec != std::errc{} || end != h.value.data() + h.value.size())
        throw ProtocolError(fmt::format("invalid content-length '{}'", h.value));
      app_content_length_ = n;
      continue;  // written by commit_head, once framing is decided
    }
    if (iequals(h.name, "transfer-encoding")) continue;  // framing is ours
    if (iequals(h.name, "connection")) {
      if (h.value.find("close") != std::string_view::npos) keep_alive_ = false;
      continue;
    }
    has_date = has_date || iequals(h.name, "date");
    has_server = has_server || iequals(h.name, "server");
    head_out_.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  if (!has_date && !has_server) {
    head_out_.append(worker_.date_and_server_fields());
  } else {
    if (!has_date) head_out_.append(worker_.date_field());
    if (!has_server) head_out_.append("server: tricorn\r\n");
  }
  response_ = Response::started;
}

void Http1Connection::commit_head(std::string_view first_body, bool more_body) {
  // A client waiting for 100 Continue will not send the body now that the final
  // response has begun, so the connection cannot carry another request.
  if (worker_.draining() || (head_.expect_continue && !continue_sent_ && !body_done_))
    keep_alive_ = false;
  if (no_body_status_) {
    framing_ = Framing::none;
  } else if (app_content_length_) {
    framing_ = Framing::length;
    head_out_.append("content-length: ");
    append_decimal(head_out_, *app_content_length_);
    head_out_.append("\r\n");
  } else if (!more_body && !trailers_expected_) {
    framing_ = Framing::length;
    app_content_length_ = first_body.size();
    head_out_.append("content-length: ");
    append_decimal(head_out_, first_body.size());
    head_out_.append("\r\n");
  } else if (head_.version_minor >= 1) {
    framing_ = Framing::chunked;
    head_out_.append("transfer-encoding: chunked\r\n");
  } else {
    framing_ = Framing::until_close;
    keep_alive_ = false;
  }
  if (!keep_alive_)
    head_out_.append("connection: close\r\n");
  else if (head_.version_minor == 0)
    head_out_.append("connection: keep-alive\r\n");
  head_out_.append("\r\n");
  out_ += head_out_;
  response_ = Response::head_sent;
}

// http.response.body up to writing: checks, framing, and the piece itself when it is
// small enough to copy into out_. Returns a piece too large to copy, which the caller
// writes and then ends with end_piece.
std::string_view Http1Connection::queue_body(const HttpResponseBody& body) {
  check_body(response_);
  if (response_ == Response::started) commit_head(body.body, body.more_body);
  const bool bodyless = head_request_ || no_body_status_;
  if (framing_ == Framing::length && !bodyless &&
      body_bytes_sent_ + body.body.size() > *app_content_length_) {
    keep_alive_ = false;
    throw ProtocolError("response body longer than its content-length");
  }
  body_bytes_sent_ += body.body.size();
  if (!body.more_body) {
    if (framing_ == Framing::length && !bodyless && body_bytes_sent_ < *app_content_length_)
      keep_alive_ = false;  // short body: only a close ends the message
    response_ = trailers_expected_ ? Response::body_done : Response::complete;
  }
  const std::string_view data = bodyless ? std::string_view() : body.body;
  if (data.empty()) {
    end_piece(false);
    return {};
  }
  if (framing_ == Framing::chunked) {
    append_hex(out_, data.size());
    out_ += "\r\n";
  }
  if (data.size() > kCopyLimit) return data;
  out_.append(data);
  end_piece(true);
  return {};
}

// After a piece of body: its chunk's CRLF, and the last chunk when the body is done.
void Http1Connection::end_piece(bool had_data) {
  const bool chunked = framing_ == Framing::chunked && !head_request_ && !no_body_status_;
  if (!chunked) return;
  if (had_data) out_ += "\r\n";
  if (response_ == Response::complete && !trailers_expected_) out_ += "0\r\n\r\n";
}

void Http1Connection::send_trailers(const HttpResponseTrailers& trailers) {
  check_trailers(response_, trailers_expected_, trailers);
  if (framing_ == Framing::chunked && !head_request_) {
    out_ += "0\r\n";
    for (const auto& h : trailers.headers) {
      out_.append(h.name).append(": ").append(h.value).append("\r\n");
    }
    if (!trailers.more_trailers) out_ += "\r\n";
  }
  if (!trailers.more_trailers) response_ = Response::complete;
}

void Http1Connection::count_response(std::string_view method) {
  if (auto* m = worker_.counters())
    m->count_request(method, status_, Clock::now() - request_start_);
}

void Http1Connection::write_access_log() {
  worker::write_access_log(
      worker_.config(), {scope_, head_.target, head_.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1",
                         status_, body_bytes_sent_, Clock::now() - request_start_});
}

// The memory of connection objects (with their shared_ptr count), recycled: at 1.2 KB
// they are past glibc's per-thread cache, and a new connection per request otherwise
// paid malloc's slow path twice. Raw blocks only, so one list per thread suffices (a
// worker's connections live on its event loop's thread).
template <typename T>
struct RecyclingAllocator {
  using value_type = T;
  RecyclingAllocator() = default;
  template <typename U>
  RecyclingAllocator(const RecyclingAllocator<U>&) {}
  T* allocate(size_t n) {
    auto& list = free_blocks();
    if (n == 1 && !list.empty()) {
      void* block = list.back();
      list.pop_back();
      return static_cast<T*>(block);
    }
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    auto& list = free_blocks();
    if (n == 1 && list.size() < kKept)
      list.push_back(p);
    else
      std::allocator<T>().deallocate(p, n);
  }
  bool operator==(const RecyclingAllocator&) const { return true; }

 private:
  static constexpr size_t kKept = 1024;
  struct Blocks : std::vector<void*> {
    ~Blocks() {
      for (void* b : *this) std::allocator<T>().deallocate(static_cast<T*>(b), 1);
    }
  };
  static Blocks& free_blocks() {
    thread_local Blocks blocks;
    return blocks;
  }
};

void launch(Worker& worker, Stream stream, const ListenerInfo& listener,
            Http1Connection::Resumed resumed) {
  auto c = std::allocate_shared<Http1Connection>(RecyclingAllocator<Http1Connection>(), worker,
                                                 std::move(stream), listener, std::move(resumed));
  auto ex = c->executor();
  worker.parking_lot().runners().run(ex, {std::move(c)});
}

bool Http1Connection::may_park() const {
  return requests_ > 0 && !stream_.is_tls() && !worker_.draining() &&
         config::seconds(worker_.config().keepalive) > park_delay(park_shift_);
}

void Http1Connection::park() {
  log::debug("Connection from {} parked after {} request(s)", client_.host, requests_);
  handed_off_ = true;  // the stream belongs to the lot
  lot_.park(stream_, listener_, requests_, park_shift_, idle_since_, idle_deadline_);
}

}  // namespace

void ParkingLot::attach(Worker& worker) {
  worker_ = &worker;
  worker.list(this);  // for on_drain; the records count themselves
}

void ParkingLot::enter(Http1Connection* c, Clock::time_point since) {
  IdleList& list = idle_[c->park_shift_];
  c->idle_since_ = since;
  c->idle_prev_ = list.tail;
  c->idle_next_ = nullptr;
  (list.tail ? list.tail->idle_next_ : list.head) = c;
  list.tail = c;
  if (list.head == c) arm();  // when the list was empty, the timer may be set for later
}

void ParkingLot::leave(Http1Connection* c) {
  IdleList& list = idle_[c->park_shift_];
  if (!c->idle_prev_ && list.head != c) return;  // not listed
  (c->idle_prev_ ? c->idle_prev_->idle_next_ : list.head) = c->idle_next_;
  (c->idle_next_ ? c->idle_next_->idle_prev_ : list.tail) = c->idle_prev_;
  c->idle_prev_ = c->idle_next_ = nullptr;
}

void ParkingLot::park(Stream& stream, const ListenerInfo& listener, std::uint64_t requests,
                      std::uint8_t park_shift, Clock::time_point idle_since,
                      Clock::time_point deadline) {
  Socket& socket = stream.socket();
  const auto protocol = protocol_of(socket);
  boost::system::error_code ec;
  if (closed_ || !open_events()) {
    socket.close(ec);
    return;
  }
  const int fd = socket.release(ec);  // out of Asio's epoll set
  if (ec) return;
  std::uint32_t i = free_;
  if (i == kNone) {
    i = static_cast<std::uint32_t>(records_.size());
    records_.emplace_back();
  } else {
    free_ = records_[i].next;
  }
  Record& r = records_[i];
  r = Record{};
  r.fd = fd;
  r.state = State::waiting;
  r.writes_until_nodelay = static_cast<std::uint8_t>(stream.writes_until_nodelay());
  r.protocol = protocol;
  r.requests = requests;
  r.park_shift = park_shift;
  r.idle_since = idle_since;
  r.deadline = deadline;
  r.listener = &listener;
  r.peer = stream.peer();
  link(waiting_, i);
  worker_->count_opened();
  if (auto* m = worker_->counters()) m->add(m->connections[int(metrics::Protocol::http1)], 1);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u32 = i;
  if (::epoll_ctl(events_.native_handle(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    log::warning("Parking a connection: epoll_ctl: {}; closing it", std::strerror(errno));
    close(i);
    return;
  }
  arm();
}

bool ParkingLot::open_events() {
  if (events_.is_open()) return true;
  const int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) {
    log::error("Parking connections: epoll_create1: {}", std::strerror(errno));
    return false;
  }
  boost::system::error_code ec;
  events_.assign(fd, ec);
  if (ec) {
    ::close(fd);
    log::error("Parking connections: {}", ec.message());
    return false;
  }
  wait_for_events();
  return true;
}

void ParkingLot::wait_for_events() {
  events_.async_wait(asio::posix::stream_descriptor::wait_read,
                     [this](boost::system::error_code ec) {
                       if (ec || closed_) return;
                       on_events();
                       wait_for_events();
                     });
}

// Until the set has nothing to report: Asio watches it edge-triggered, and what is left
// unreported would not wake the loop again.
void ParkingLot::on_events() {
  std::unique_ptr<char[]> buffer;
  epoll_event events[64];
  for (;;) {
    const int n = ::epoll_wait(events_.native_handle(), events, std::size(events), 0);
    if (n <= 0) break;
    for (int k = 0; k < n; ++k) on_ready(events[k].data.u32, buffer);
  }
  worker_->buffers().give(std::move(buffer));
}

void ParkingLot::on_ready(std::uint32_t i, std::unique_ptr<char[]>& buffer) {
  Record& r = records_[i];
  if (r.state == State::free) return;
  for (;;) {
    if (!buffer) buffer = worker_->buffers().take();
    const ssize_t n = ::recv(r.fd, buffer.get(), worker_->buffers().size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n > 0)
      if (auto* m = worker_->counters()) m->add(m->bytes_in, static_cast<std::uint64_t>(n));
    if (n > 0 && r.state == State::waiting) {
      resume(i, std::move(buffer), static_cast<size_t>(n));
      return;
    }
    if (n > 0 && (r.discarded += static_cast<std::uint32_t>(n)) < kLingerDiscardLimit) continue;
    close(i);  // the client closed, an error, or too much to drop while lingering
    return;
  }
}

// The next request (or its first bytes): served by a connection made anew.
void ParkingLot::resume(std::uint32_t i, std::unique_ptr<char[]> buffer, size_t bytes) {
  Record& r = records_[i];
  ::epoll_ctl(events_.native_handle(), EPOLL_CTL_DEL, r.fd, nullptr);
  Socket socket(io_);
  boost::system::error_code ec;
  socket.assign(r.protocol, r.fd, ec);  // into Asio's epoll set
  if (ec) {
    log::warning("Resuming a parked connection: {}; closing it", ec.message());
    close(i);
    return;
  }
  adopt_accepted(socket);
  Stream stream(std::move(socket));
  stream.set_peer(std::move(r.peer));
  stream.set_writes_until_nodelay(r.writes_until_nodelay);
  const ListenerInfo& listener = *r.listener;
  const std::uint64_t requests = r.requests;
  std::uint8_t shift = r.park_shift;
  if (shift + 1 < kParkShifts && Clock::now() - r.idle_since < 8 * park_delay(shift)) ++shift;
  release(i);
  // Counted closed after the launch: the connection counts itself as it starts, before
  // a drain could see none left (Worker::finish looks again).
  launch(*worker_, std::move(stream), listener,
         {requests, PooledRead{bytes, std::move(buffer)}, shift});
  worker_->count_closed();
}

// The keep-alive deadline: the lingering close.
void ParkingLot::expire(std::uint32_t i) {
  Record& r = records_[i];
  unlink(waiting_, i);
  ::shutdown(r.fd, SHUT_WR);
  r.state = State::lingering;
  r.deadline = Clock::now() + kLingerTime;
  link(lingering_, i);
}

void ParkingLot::close(std::uint32_t i) {
  ::close(records_[i].fd);  // which takes it out of the lot's epoll set
  release(i);
  worker_->count_closed();
}

void ParkingLot::release(std::uint32_t i) {
  Record& r = records_[i];
  unlink(r.state == State::waiting ? waiting_ : lingering_, i);
  if (auto* m = worker_->counters()) m->add(m->connections[int(metrics::Protocol::http1)], -1);
  r.state = State::free;
  r.peer = {};
  r.next = std::exchange(free_, i);
}

void ParkingLot::link(List& list, std::uint32_t i) {
  Record& r = records_[i];
  r.prev = list.tail;
  r.next = kNone;
  (list.tail != kNone ? records_[list.tail].next : list.head) = i;
  list.tail = i;
}

void ParkingLot::unlink(List& list, std::uint32_t i) {
  Record& r = records_[i];
  (r.prev != kNone ? records_[r.prev].next : list.head) = r.next;
  (r.next != kNone ? records_[r.next].prev : list.tail) = r.prev;
  r.prev = r.next = kNone;
}

// The drain window, as for an idle connection that is not parked. Every parked
// connection gets the same end, so the list stays in the order of its deadlines.
void ParkingLot::on_drain() {
  const auto window = Clock::now() + config::seconds(std::min(worker_->config().keepalive, 2.0));
  for (std::uint32_t i = waiting_.head; i != kNone; i = records_[i].next)
    records_[i].deadline = std::min(records_[i].deadline, window);
  arm();
}

// The timer, for the earliest of: the oldest idle connection's parking, the first
// parked connection's deadline, the first lingering one's end.
void ParkingLot::arm() {
  auto earliest = Clock::time_point::max();
  for (std::uint8_t shift = 0; shift < kParkShifts; ++shift)
    if (idle_[shift].head)
      earliest = std::min(earliest, idle_[shift].head->idle_since_ + park_delay(shift));
  if (waiting_.head != kNone) earliest = std::min(earliest, records_[waiting_.head].deadline);
  if (lingering_.head != kNone) earliest = std::min(earliest, records_[lingering_.head].deadline);
  if (earliest == Clock::time_point::max() || (armed_ && armed_for_ <= earliest)) return;
  armed_ = true;
  armed_for_ = earliest;
  timer_.expires_at(earliest);  // cancels a wait for a later deadline
  timer_.async_wait([this, generation = ++generation_](boost::system::error_code) {
    if (generation != generation_) return;  // a wait replaced by an earlier one
    armed_ = false;
    sweep();
  });
}

void ParkingLot::sweep() {
  if (closed_) return;
  const auto now = Clock::now();
  for (std::uint8_t shift = 0; shift < kParkShifts; ++shift)
    while (idle_[shift].head && idle_[shift].head->idle_since_ + park_delay(shift) <= now) {
      Http1Connection* c = idle_[shift].head;
      leave(c);
      c->request_park();
    }
  while (waiting_.head != kNone && records_[waiting_.head].deadline <= now) expire(waiting_.head);
  while (lingering_.head != kNone && records_[lingering_.head].deadline <= now)
    close(lingering_.head);
  arm();
}

// The event loop is going away with the worker: parked connections close unanswered,
// as connections cut at the end of the graceful timeout do.
void ParkingLot::shutdown() {
  closed_ = true;
  timer_.cancel();
  for (Record& r : records_)
    if (r.state != State::free) ::close(r.fd);
  records_.clear();
  waiting_ = lingering_ = {};
  free_ = kNone;
}

void start_connection(Worker& worker, Stream stream, const ListenerInfo& listener) {
  launch(worker, std::move(stream), listener, Http1Connection::Resumed{});
}

}  // namespace tricorn::worker::http1

namespace tricorn::worker {

http1::ParkingLot& Worker::parking_lot() {
  if (!parking_lot_) {
    parking_lot_ = &asio::use_service<http1::ParkingLot>(io_);
    parking_lot_->attach(*this);
  }
  return *parking_lot_;
}

}  // namespace tricorn::worker
