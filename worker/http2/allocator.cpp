#include "worker/http2/allocator.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace tricorn::worker::http2 {
namespace {

// Every block starts with a header naming its class, so free() and realloc() know it;
// 16 bytes keep the payload as aligned as malloc's.
struct alignas(16) Header {
  unsigned char size_class;
};
static_assert(sizeof(Header) == 16);

constexpr unsigned char kUnpooled = 0xff;
constexpr unsigned char kShared = 0xfe;  // the shared frame buffer: never freed

// nghttp2's frame buffer, NGHTTP2_FRAMEBUF_CHUNKLEN in lib/nghttp2_session.h: a frame
// header, a pad-length byte and 16,384 bytes of payload. Every session allocates one
// when it is made (nghttp2_session_new, after the HPACK tables and the stream map, none
// of this size) and serialises each outgoing frame into it inside
// nghttp2_session_mem_send; the bytes mem_send returns stay valid only until its next
// call. A worker drains a session's output to the end (mem_send returning 0) and copies
// it as it goes, on its one thread, with nothing else running in between: between two
// drains the buffer holds nothing anyone reads. So one buffer serves every session,
// where each idle HTTP/2 connection had held the resident pages of its own. nghttp2
// grows a frame buffer only by reallocating it (resize() below then gives that session
// a private copy), and frees it only with the session (release() ignores it).
constexpr size_t kFrameBufferSize = 9 + 1 + 16384;
bool share_next_frame_buffer = false;
constexpr std::array<size_t, 6> kClassSizes = {32, 64, 128, 256, 512, 1024};
constexpr size_t kRetainedBytesPerClass = 1 << 20;  // what a burst may leave behind

class Pool {
 public:
  ~Pool() {
    std::free(shared_);
    for (auto& list : free_)
      while (FreeBlock* b = list.head) {
        list.head = b->next;
        std::free(b);
      }
  }

  void* allocate(size_t size) {
    if (share_next_frame_buffer && size == kFrameBufferSize) {
      share_next_frame_buffer = false;
      return shared_frame_buffer();
    }
    const unsigned char c = class_of(size);
    Header* h;
    if (c != kUnpooled && free_[c].head) {
      FreeBlock* b = free_[c].head;
      free_[c].head = b->next;
      --free_[c].count;
      h = &b->header;
    } else {
      const size_t bytes = c == kUnpooled ? size : kClassSizes[c];
      h = static_cast<Header*>(std::malloc(sizeof(Header) + bytes));
      if (!h) return nullptr;
      h->size_class = c;
    }
    return h + 1;
  }

  void release(void* p) {
    if (!p) return;
    Header* h = static_cast<Header*>(p) - 1;
    const unsigned char c = h->size_class;
    if (c == kShared) return;
    if (c == kUnpooled || free_[c].count >= kRetainedBytesPerClass / kClassSizes[c]) {
      std::free(h);
      return;
    }
    auto* b = reinterpret_cast<FreeBlock*>(h);
    b->next = free_[c].head;
    free_[c].head = b;
    ++free_[c].count;
  }

  void* resize(void* p, size_t size) {
    if (!p) return allocate(size);
    Header* h = static_cast<Header*>(p) - 1;
    if (h->size_class == kShared) {
      if (size <= kFrameBufferSize) return p;
      void* own = allocate(size);  // a copy of the session's own; the shared one stays
      if (own) std::memcpy(own, p, kFrameBufferSize);
      return own;
    }
    if (h->size_class != kUnpooled) {
      if (size <= kClassSizes[h->size_class]) return p;
      void* bigger = allocate(size);
      if (bigger) {
        std::memcpy(bigger, p, kClassSizes[h->size_class]);
        release(p);
      }
      return bigger;
    }
    auto* moved = static_cast<Header*>(std::realloc(h, sizeof(Header) + size));
    return moved ? moved + 1 : nullptr;
  }

 private:
  void* shared_frame_buffer() {
    if (!shared_) {
      shared_ = static_cast<Header*>(std::malloc(sizeof(Header) + kFrameBufferSize));
      if (!shared_) return nullptr;
      shared_->size_class = kShared;
    }
    return shared_ + 1;
  }

  static unsigned char class_of(size_t size) {
    for (size_t c = 0; c < kClassSizes.size(); ++c)
      if (size <= kClassSizes[c]) return static_cast<unsigned char>(c);
    return kUnpooled;
  }

  // A free block is its own list link (in the payload, which every class has room
  // for): taking or giving one is two stores, with no vector to grow.
  struct FreeBlock {
    Header header;
    FreeBlock* next;
  };
  struct FreeList {
    FreeBlock* head = nullptr;
    size_t count = 0;
  };
  std::array<FreeList, kClassSizes.size()> free_;
  Header* shared_ = nullptr;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

nghttp2_mem* pooled_memory() {
  static nghttp2_mem mem{
      nullptr,
      [](size_t size, void*) { return pool().allocate(size); },
      [](void* p, void*) { pool().release(p); },
      [](size_t n, size_t size, void*) -> void* {
        if (size && n > static_cast<size_t>(-1) / size) return nullptr;
        void* p = pool().allocate(n * size);
        if (p) std::memset(p, 0, n * size);
        return p;
      },
      [](void* p, size_t size, void*) { return pool().resize(p, size); },
  };
  return &mem;
}

SharedFrameBuffer::SharedFrameBuffer() {
  share_next_frame_buffer = true;
}

SharedFrameBuffer::~SharedFrameBuffer() {
  share_next_frame_buffer = false;  // whether or not nghttp2 asked for one of that size
}

}  // namespace tricorn::worker::http2
