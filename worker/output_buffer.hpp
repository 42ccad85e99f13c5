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
  [[gnu::always_inline]] OutputBuffer& append(std::string_view s) {
    if (s.size() > capacity_ - size_) grow(s.size());
    if (!s.empty()) std::memcpy(data_.get() + size_, s.data(), s.size());
    size_ += s.size();
    return *this;
  }
  OutputBuffer& operator+=(std::string_view s) { return append(s); }
  OutputBuffer& operator+=(const OutputBuffer& other) { return append(other.view()); }
  void push_back(char c) { append({&c, 1}); }  // for fmt::format_to(std::back_inserter(..))

  std::string_view view() const { return {data_.get(), size_}; }
  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  void clear() { size_ = 0; }
  void drop_front(size_t n) {  // what a partial write took
    std::memmove(data_.get(), data_.get() + n, size_ - n);
    size_ -= n;
  }
  void assign(std::string_view s) {
    clear();
    append(s);
  }
  void release() {  // gives the memory back (an idle connection)
    data_.reset();
    size_ = capacity_ = 0;
  }

 private:
  [[gnu::noinline]] void grow(size_t more) {
    size_t capacity = capacity_ ? capacity_ * 2 : 256;
    while (capacity < size_ + more) capacity *= 2;
    auto bigger = std::make_unique_for_overwrite<char[]>(capacity);
    if (size_) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    capacity_ = capacity;
  }

  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace tricorn::worker
