#pragma once

#include "worker/stream.hpp"

namespace tricorn::worker {
class Worker;
}

namespace tricorn::worker::http1 {

// Serves HTTP/1.1 on an accepted socket until it closes; owns itself.
void start_connection(Worker& worker, Stream stream, const ListenerInfo& listener);

}  // namespace tricorn::worker::http1
