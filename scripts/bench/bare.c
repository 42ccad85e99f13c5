#define _GNU_SOURCE
/* The reference point of the benchmarks: the least a server can do. One epoll loop,
 * no parsing beyond counting request ends, one canned 13-byte response per request,
 * all responses for one read written with one write (so pipelining is as cheap as it
 * gets). Not a server: it ignores bodies and trusts every byte. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char kResponse[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

int main(int argc, char** argv) {
  int port = argc > 1 ? atoi(argv[1]) : 8090;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(lfd, (struct sockaddr*)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
    perror("bind");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  static char in[65536], out[65536 * 2];
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == lfd) {
        int c;
        while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      ssize_t r = read(fd, in, sizeof in);
      if (r <= 0) {
        close(fd);
        continue;
      }
      size_t len = 0;
      for (ssize_t j = 3; j < r; ++j)
        if (in[j] == '\n' && in[j - 1] == '\r' && in[j - 2] == '\n' && in[j - 3] == '\r') {
          memcpy(out + len, kResponse, sizeof kResponse - 1);
          len += sizeof kResponse - 1;
        }
      if (len && write(fd, out, len) < 0) close(fd);
    }
  }
}
