// TLS for listeners when certfile/keyfile are set: OpenSSL through Asio's ssl::stream,
// ALPN choosing h2 or http/1.1. The context is built in each worker after the fork, so
// a HUP (a new generation of workers) re-reads the certificate.
#pragma once

#include "config/config.hpp"
#include "worker/socket.hpp"

#include <tricorn/app.hpp>

#include <boost/asio/ssl/context.hpp>

#include <memory>

namespace tricorn::worker {

class Worker;

// Throws std::runtime_error naming the file and OpenSSL's reason.
std::unique_ptr<asio::ssl::context> make_tls_context(const config::Config& config);

// Runs the handshake (bounded by header_timeout), then the protocol ALPN chose.
void start_tls_connection(Worker& worker, asio::ssl::context& context, Socket socket,
                          const ListenerInfo& listener, Address peer);

}  // namespace tricorn::worker
