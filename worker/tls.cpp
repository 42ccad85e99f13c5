#include "worker/tls.hpp"

#include "common/log.hpp"
#include "worker/http1/connection.hpp"
#include "worker/http2/connection.hpp"
#include "worker/watchdog.hpp"
#include "worker/worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <fmt/format.h>

#include <cstring>

namespace tricorn::worker {
namespace {

// Our preference order, in ALPN wire format.
constexpr unsigned char kProtocols[] = "\x02h2\x08http/1.1";

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kProtocols, sizeof kProtocols - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: carry on without ALPN (HTTP/1.1)
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct Handshake {
  explicit Handshake(std::unique_ptr<TlsSocket> tls) : stream(std::move(tls)), watchdog(stream) {}
  Stream stream;
  Watchdog watchdog;
};

asio::awaitable<void> handshake(Worker& worker, std::shared_ptr<Handshake> h,
                                const ListenerInfo& listener) {
  h->watchdog.set(Watchdog::Clock::now() + config::seconds(worker.config().header_timeout), h);
  auto [ec] =
      co_await h->stream.tls()->async_handshake(asio::ssl::stream_base::server, use_nothrow);
  h->watchdog.stop();
  if (ec) {
    log::debug("TLS handshake failed: {}", ec.message());
    co_return;
  }
  const unsigned char* proto = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(h->stream.tls()->native_handle(), &proto, &len);
  if (len == 2 && std::memcmp(proto, "h2", 2) == 0)
    http2::start_connection(worker, std::move(h->stream), listener, {});
  else
    http1::start_connection(worker, std::move(h->stream), listener);
}

}  // namespace

std::unique_ptr<asio::ssl::context> make_tls_context(const config::Config& config) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  SSL_CTX_set_options(
      native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(native, config.certfile.c_str()) != 1)
    throw std::runtime_error(
        fmt::format("cannot load certfile {}: {}", config.certfile, openssl_reason()));
  if (SSL_CTX_use_PrivateKey_file(native, config.keyfile.c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error(
        fmt::format("cannot load keyfile {}: {}", config.keyfile, openssl_reason()));
  if (SSL_CTX_check_private_key(native) != 1)
    throw std::runtime_error(
        fmt::format("keyfile {} does not match certfile {}", config.keyfile, config.certfile));
  SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
  return ctx;
}

void start_tls_connection(Worker& worker, asio::ssl::context& context, Socket socket,
                          const ListenerInfo& listener, Address peer) {
  auto h = std::make_shared<Handshake>(std::make_unique<TlsSocket>(std::move(socket), context));
  h->stream.set_peer(std::move(peer));
  asio::co_spawn(h->stream.executor(), handshake(worker, h, listener), asio::detached);
}

}  // namespace tricorn::worker
