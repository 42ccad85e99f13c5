// Memory for nghttp2 (nghttp2_mem). Each stream costs nghttp2 a few small allocations
// (the stream, its outbound frames, a copy of the response fields); at tens of thousands
// of streams a second, malloc's slow path showed in every profile. Small blocks are
// recycled through free lists by size class; larger ones (a session, HPACK tables: one
// per connection) go to malloc as before, so an idle connection costs no more than it
// did; the 16 KiB frame buffer is shared (SharedFrameBuffer). One pool per process: a worker is one
// thread, and only its event loop uses nghttp2.
#pragma once

#include <nghttp2/nghttp2.h>

namespace tricorn::worker::http2 {

nghttp2_mem* pooled_memory();

// While one lives, the frame buffer of the session being made (nghttp2_session_*_new3
// with pooled_memory()) is the one buffer every session of the process shares: see
// allocator.cpp for why that is safe. The session must be drained with
// nghttp2_session_mem_send until it returns 0 whenever it is drained at all, and the
// bytes it returns copied before anything else runs.
class SharedFrameBuffer {
 public:
  SharedFrameBuffer();
  ~SharedFrameBuffer();
  SharedFrameBuffer(const SharedFrameBuffer&) = delete;
  SharedFrameBuffer& operator=(const SharedFrameBuffer&) = delete;
};

}  // namespace tricorn::worker::http2
