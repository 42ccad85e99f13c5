// Counters for the Prometheus endpoint. The master maps one shared-memory block before it
// forks anything; each worker gets a slot of it and is the only writer of that slot
// (relaxed atomics: no locks, no system calls on the request path); the master reads
// every slot when scraped. A retiring worker's counters are folded into the master's
// totals before its slot is reused, so counters never go down.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tricorn::metrics {

enum class Protocol : std::uint8_t { http1, http2, websocket };
inline constexpr size_t kProtocols = 3;
inline constexpr std::string_view kMethods[] = {"GET",    "HEAD",  "POST",    "PUT",
                                                "DELETE", "PATCH", "OPTIONS", "other"};
inline constexpr size_t kMethodCount = std::size(kMethods);
inline constexpr size_t kStatusClasses = 5;  // 1xx .. 5xx
// Request duration buckets, in seconds (Prometheus' client defaults).
inline constexpr double kBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
inline constexpr size_t kBucketCount = std::size(kBuckets);

// What one worker counts. Counters only grow; gauges go up and down.
struct WorkerCounters {
  std::atomic<std::uint64_t> requests[kMethodCount][kStatusClasses];
  std::atomic<std::uint64_t> bytes_in;
  std::atomic<std::uint64_t> bytes_out;
  std::atomic<std::uint64_t> duration_buckets[kBucketCount];  // not cumulative
  std::atomic<std::uint64_t> duration_count;
  std::atomic<std::uint64_t> duration_sum_us;
  std::atomic<std::int64_t> connections[kProtocols];  // gauge
  std::atomic<std::int64_t> http2_streams;            // gauge

  void count_request(std::string_view method, int status, std::chrono::steady_clock::duration took);
  // One writer per slot (its worker's only thread), so a plain load and store will do:
  // no locked instruction on the request path, and the master's reads are never torn.
  template <typename T, typename D>
  static void add(std::atomic<T>& v, D d) {
    v.store(v.load(std::memory_order_relaxed) + static_cast<T>(d), std::memory_order_relaxed);
  }
  std::uint64_t requests_total() const;
  std::int64_t connections_total() const;
};

// Counters summed over workers (plain numbers: the master's own copy).
struct Totals {
  std::uint64_t requests[kMethodCount][kStatusClasses] = {};
  std::uint64_t bytes_in = 0, bytes_out = 0;
  std::uint64_t buckets[kBucketCount] = {};
  std::uint64_t duration_count = 0, duration_sum_us = 0;
  void add(const WorkerCounters& w);
};

// The master's side.
class Registry {
 public:
  static constexpr size_t kSlots = 1024;
  Registry();  // maps the shared block (call before the first fork)
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  ~Registry();

  // A zeroed slot for a new worker, or -1 when all are taken (it then goes uncounted).
  int take_slot();
  // The worker is gone: keep its counters in the totals, free the slot.
  void retire_slot(int slot);
  WorkerCounters* slot(int index) { return index < 0 ? nullptr : &block_[index]; }
  const WorkerCounters* slot(int index) const { return index < 0 ? nullptr : &block_[index]; }

  // Prometheus text exposition (format 0.0.4). `master_lines` are the master's own
  // metrics, already formatted.
  std::string render(std::string_view master_lines) const;

 private:
  WorkerCounters* block_;
  std::vector<bool> used_;
  Totals retired_;  // counters of workers that are gone
};

}  // namespace tricorn::metrics
