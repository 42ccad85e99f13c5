// Read buffers for connections, recycled within a worker. A connection waiting for its
// next request holds no buffer (its read takes one only when there is something to read,
// see reactor_ops.hpp), so idle keep-alive connections cost little memory; recycling
// keeps the request path free of heap allocation.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace tricorn::worker {

class BufferPool {
 public:
  static constexpr size_t kSize = 8 * 1024;  // HTTP/1.1's buffers

  explicit BufferPool(size_t size = kSize) : size_(size) {}
  size_t size() const { return size_; }
  std::unique_ptr<char[]> take() {
    if (free_.empty()) return std::make_unique_for_overwrite<char[]>(size_);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(std::unique_ptr<char[]> b) {
    if (b && free_.size() < kMaxFreeBytes / size_) free_.push_back(std::move(b));
  }

 private:
  static constexpr size_t kMaxFreeBytes = 8 * 1024 * 1024;  // kept for reuse at most
  size_t size_;
  std::vector<std::unique_ptr<char[]>> free_;
};

}  // namespace tricorn::worker
