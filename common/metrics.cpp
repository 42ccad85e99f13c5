#include "common/metrics.hpp"

#include <sys/mman.h>

#include <fmt/format.h>

#include <cstring>
#include <new>
#include <stdexcept>

namespace tricorn::metrics {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;

size_t method_index(std::string_view method) {
  for (size_t i = 0; i + 1 < kMethodCount; ++i)
    if (kMethods[i] == method) return i;
  return kMethodCount - 1;
}

}  // namespace

void WorkerCounters::count_request(std::string_view method, int status,
                                   std::chrono::steady_clock::duration took) {
  const auto duration_us = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(took).count());
  size_t cls = status >= 100 && status < 600 ? static_cast<size_t>(status / 100 - 1) : 4;
  add(requests[method_index(method)][cls], 1);
  size_t b = 0;
  const double seconds = static_cast<double>(duration_us) / 1e6;
  while (b < kBucketCount && seconds > kBuckets[b]) ++b;
  if (b < kBucketCount) add(duration_buckets[b], 1);
  add(duration_count, 1);
  add(duration_sum_us, duration_us);
}

std::uint64_t WorkerCounters::requests_total() const {
  std::uint64_t n = 0;
  for (const auto& m : requests)
    for (const auto& c : m) n += c.load(relaxed);
  return n;
}

std::int64_t WorkerCounters::connections_total() const {
  std::int64_t n = 0;
  for (const auto& c : connections) n += c.load(relaxed);
  return n;
}

Registry::Registry() : used_(kSlots, false) {
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                "counters are shared between processes: they must be lock-free");
  void* p = ::mmap(nullptr, sizeof(WorkerCounters) * kSlots, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("cannot map the metrics block");
  block_ = static_cast<WorkerCounters*>(p);  // zero-filled by the kernel
}

Registry::~Registry() {
  ::munmap(block_, sizeof(WorkerCounters) * kSlots);
}

int Registry::take_slot() {
  for (size_t i = 0; i < kSlots; ++i)
    if (!used_[i]) {
      used_[i] = true;
      std::memset(static_cast<void*>(&block_[i]), 0, sizeof(WorkerCounters));
      return static_cast<int>(i);
    }
  return -1;
}

void Totals::add(const WorkerCounters& w) {
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t c = 0; c < kStatusClasses; ++c) requests[m][c] += w.requests[m][c].load(relaxed);
  bytes_in += w.bytes_in.load(relaxed);
  bytes_out += w.bytes_out.load(relaxed);
  for (size_t b = 0; b < kBucketCount; ++b) buckets[b] += w.duration_buckets[b].load(relaxed);
  duration_count += w.duration_count.load(relaxed);
  duration_sum_us += w.duration_sum_us.load(relaxed);
}

void Registry::retire_slot(int index) {
  if (index < 0) return;
  retired_.add(block_[index]);
  used_[static_cast<size_t>(index)] = false;
}

std::string Registry::render(std::string_view master_lines) const {
  Totals t = retired_;
  std::int64_t connections[kProtocols] = {};
  std::int64_t streams = 0;
  for (size_t i = 0; i < kSlots; ++i) {
    if (!used_[i]) continue;
    const auto& s = block_[i];
    t.add(s);
    for (size_t p = 0; p < kProtocols; ++p) connections[p] += s.connections[p].load(relaxed);
    streams += s.http2_streams.load(relaxed);
  }
  const auto& requests = t.requests;
  const auto& buckets = t.buckets;
  const std::uint64_t in = t.bytes_in, out = t.bytes_out, count = t.duration_count,
                      sum = t.duration_sum_us;
  std::string o;
  auto put = std::back_inserter(o);
  o += "# HELP tricorn_requests_total Requests answered, by method and status class.\n"
       "# TYPE tricorn_requests_total counter\n";
  for (size_t m = 0; m < kMethodCount; ++m)
    for (size_t c = 0; c < kStatusClasses; ++c)
      if (requests[m][c])
        fmt::format_to(put, "tricorn_requests_total{{method=\"{}\",status=\"{}xx\"}} {}\n",
                       kMethods[m], c + 1, requests[m][c]);
  fmt::format_to(put,
                 "# HELP tricorn_received_bytes_total Bytes read from clients.\n"
                 "# TYPE tricorn_received_bytes_total counter\n"
                 "tricorn_received_bytes_total {}\n"
                 "# HELP tricorn_sent_bytes_total Bytes written to clients.\n"
                 "# TYPE tricorn_sent_bytes_total counter\n"
                 "tricorn_sent_bytes_total {}\n",
                 in, out);
  o += "# HELP tricorn_request_duration_seconds Time from a request's head to its response's end.\n"
       "# TYPE tricorn_request_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  for (size_t b = 0; b < kBucketCount; ++b) {
    cumulative += buckets[b];
    fmt::format_to(put, "tricorn_request_duration_seconds_bucket{{le=\"{}\"}} {}\n", kBuckets[b],
                   cumulative);
  }
  fmt::format_to(put,
                 "tricorn_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\n"
                 "tricorn_request_duration_seconds_sum {:.6f}\n"
                 "tricorn_request_duration_seconds_count {}\n",
                 count, static_cast<double>(sum) / 1e6, count);
  o += "# HELP tricorn_open_connections Connections open now, by protocol.\n"
       "# TYPE tricorn_open_connections gauge\n";
  static constexpr std::string_view names[] = {"http1", "http2", "websocket"};
  for (size_t p = 0; p < kProtocols; ++p)
    fmt::format_to(put, "tricorn_open_connections{{protocol=\"{}\"}} {}\n", names[p],
                   connections[p]);
  fmt::format_to(put,
                 "# HELP tricorn_http2_active_streams HTTP/2 streams open now.\n"
                 "# TYPE tricorn_http2_active_streams gauge\n"
                 "tricorn_http2_active_streams {}\n",
                 streams);
  o += master_lines;
  return o;
}

}  // namespace tricorn::metrics
