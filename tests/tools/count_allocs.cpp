// Counts the calls each process makes to the malloc family, for the test that proves
// the request path allocates nothing (tests/integration/test_allocations.py). Loaded
// with LD_PRELOAD; each process (the master, each forked worker) counts into a file of
// its own, $TRICORN_ALLOC_COUNTS/<pid>, mapped shared so that the test reads the number
// while the process runs. Counting is one atomic add: no system call, no allocation.
// operator new and Asio's frame allocations end in these functions too.
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

namespace {

std::uint64_t* counter;

void map_counter() {
  const char* dir = getenv("TRICORN_ALLOC_COUNTS");
  counter = nullptr;
  if (!dir) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/%d", dir, (int)getpid());
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (ftruncate(fd, sizeof *counter) == 0) {
    void* p = mmap(nullptr, sizeof *counter, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED) counter = static_cast<std::uint64_t*>(p);
  }
  close(fd);
}

__attribute__((constructor)) void start() {
  map_counter();
  pthread_atfork(nullptr, nullptr, map_counter);  // a forked worker counts on its own
}

void count() {
  if (counter) __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

}  // namespace

extern "C" {

void* malloc(size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  count();
  return __libc_realloc(p, n);
}
void* memalign(size_t align, size_t n) {
  count();
  return __libc_memalign(align, n);
}
void* aligned_alloc(size_t align, size_t n) {
  count();
  return __libc_memalign(align, n);
}
int posix_memalign(void** out, size_t align, size_t n) {
  count();
  void* p = __libc_memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

}  // extern "C"
