// Read buffers for connections, recycled within a worker. A connection waiting for its
// next request holds no buffer (it waits for readability, then takes one), so idle
// keep-alive connections cost little memory; recycling keeps the request path free of
// heap allocation.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace tricorn::worker {

class BufferPool {
 public:
  static constexpr size_t kSize = 8 * 1024;

  std::unique_ptr<char[]> take() {
    if (free_.empty()) return std::make_unique<char[]>(kSize);
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give(std::unique_ptr<char[]> b) {
    if (b && free_.size() < kMaxFree) free_.push_back(std::move(b));
  }

 private:
  static constexpr size_t kMaxFree = 1024;  // 8 MiB at most kept for reuse
  std::vector<std::unique_ptr<char[]>> free_;
};

}  // namespace tricorn::worker
