// Bytes on their way to a socket. Appending is a bounds check and a memcpy, inlined:
// std::string's append(const char*) costs a strlen and more per piece, and a response
// head is a dozen pieces. The memory can be given back while a connection idles.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace tricorn::worker {

class OutputBuffer {
 public:
  OutputBuffer() = default;
  OutputBuffer(const OutputBuffer&) = delete;
  OutputBuffer& operator=(const OutputBuffer&) = delete;

  [[gnu::always_inline]] OutputBuffer& append(std::string_view s) {
    if (s.size() > capacity_ - size_) grow(s.size());
    if (!s.empty()) std::memcpy(data_ + size_, s.data(), s.size());
    size_ += s.size();
    return *this;
  }
  OutputBuffer& operator+=(std::string_view s) { return append(s); }
  OutputBuffer& operator+=(const OutputBuffer& other) { return append(other.view()); }
  void push_back(char c) { append({&c, 1}); }  // for fmt::format_to(std::back_inserter(..))

  std::string_view view() const { return {data_, size_}; }
  const char* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }
  void drop_front(size_t n) {  // what a partial write took
    std::memmove(data_, data_ + n, size_ - n);
    size_ -= n;
  }
  void assign(std::string_view s) {
    clear();
    append(s);
  }
  void release() {  // gives grown memory back (an idle connection)
    heap_.reset();
    data_ = inline_;
    size_ = 0;
    capacity_ = kInline;
  }

 private:
  // The first bytes live in the object: a usual response head (or a small response)
  // needs no allocation, even on a connection's first request.
  static constexpr size_t kInline = 256;

  [[gnu::noinline]] void grow(size_t more) {
    size_t capacity = capacity_ * 2;
    while (capacity < size_ + more) capacity *= 2;
    auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
    if (size_) std::memcpy(bigger.get(), data_, size_);
    heap_ = std::move(bigger);
    data_ = heap_.get();
    capacity_ = capacity;
  }

  char* data_ = inline_;
  size_t size_ = 0;
  size_t capacity_ = kInline;
  std::unique_ptr<char[]> heap_;
  char inline_[kInline];
};

}  // namespace tricorn::worker
