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
constexpr std::array<size_t, 6> kClassSizes = {32, 64, 128, 256, 512, 1024};
constexpr size_t kRetainedBytesPerClass = 1 << 20;  // what a burst may leave behind

class Pool {
 public:
  ~Pool() {
    for (auto& list : free_)
      while (FreeBlock* b = list.head) {
        list.head = b->next;
        std::free(b);
      }
  }

  void* allocate(size_t size) {
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

}  // namespace tricorn::worker::http2
