// Memory for nghttp2 (nghttp2_mem). Each stream costs nghttp2 a few small allocations
// (the stream, its outbound frames, a copy of the response fields); at tens of thousands
// of streams a second, malloc's slow path showed in every profile. Small blocks are
// recycled through free lists by size class; larger ones (a session, its frame buffer,
// HPACK tables: one per connection) go to malloc as before, so an idle connection costs
// no more than it did. One pool per process: a worker is one thread, and only its event
// loop uses nghttp2.
#pragma once

#include <nghttp2/nghttp2.h>

namespace tricorn::worker::http2 {

nghttp2_mem* pooled_memory();

}  // namespace tricorn::worker::http2
