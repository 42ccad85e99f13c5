// The control channel between the master and one worker: a SOCK_SEQPACKET socketpair,
// so every message arrives whole and the master sees EOF when the worker is gone (and
// the worker when the master is gone).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tricorn::control {

enum class Type : std::uint8_t {
  ready = 1,        // the app is loaded and started; the worker accepts
  heartbeat = 2,    // sent from inside the worker's event loop
  boot_failed = 3,  // text: why (app load error, lifespan startup failure)
  recycle = 4,      // max_requests reached: replace me, then retire me
};

struct Message {
  Type type;
  std::string text;
};

// Exit codes shared by the master and its workers, as Gunicorn's.
inline constexpr int kExitConfigError = 2;
inline constexpr int kExitWorkerBootError = 3;
inline constexpr int kExitAppLoadError = 4;

struct Pair {
  int master_end;
  int worker_end;
};
Pair make_pair();  // both ends close-on-exec; the master end non-blocking

// Sends without blocking; false if the peer is gone or the socket is full.
bool send(int fd, Type type, std::string_view text = {});
// Receives one message; nullopt on EOF, error or no message (non-blocking socket).
std::optional<Message> receive(int fd, bool& eof);

}  // namespace tricorn::control
