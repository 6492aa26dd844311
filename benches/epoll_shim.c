// benches/epoll_shim.c — a BENCHMARK-ONLY experiment, never for production (see benches/RESULTS.md,
// "New TCP connection against HAProxy, continued"): what tokio's epoll use costs per connection.
//   gcc -O2 -shared -fPIC -o /tmp/epoll_shim.so benches/epoll_shim.c -ldl
//   env LD_PRELOAD=/tmp/epoll_shim.so SHIM_DEL=1 SHIM_OUT=1 switchyard --config ...
// Skipping EPOLL_CTL_DEL is unsafe in general (a file held elsewhere stays registered).
// Benchmark-only experiment (never for production): what tokio's epoll use costs.
// SHIM_DEL=1: EPOLL_CTL_DEL is skipped (the fd is closed right after by tokio, which removes it).
// SHIM_OUT=1: sockets from accept4 are registered without EPOLLOUT.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
static unsigned char accepted[1 << 20];
static int (*real_ctl)(int, int, int, struct epoll_event *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags) {
  if (!real_accept4) real_accept4 = dlsym(RTLD_NEXT, "accept4");
  int r = real_accept4(fd, a, l, flags);
  if (r >= 0 && r < (1 << 20)) accepted[r] = 1;
  return r;
}
int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) {
  if (!real_ctl) real_ctl = dlsym(RTLD_NEXT, "epoll_ctl");
  if (op == EPOLL_CTL_DEL && getenv("SHIM_DEL")) { if (fd < (1 << 20)) accepted[fd] = 0; return 0; }
  if (op == EPOLL_CTL_ADD && ev && fd < (1 << 20) && accepted[fd] && getenv("SHIM_OUT")) {
    struct epoll_event e = *ev; e.events &= ~EPOLLOUT; accepted[fd] = 0; return real_ctl(ep, op, fd, &e);
  }
  if (op == EPOLL_CTL_ADD && fd < (1 << 20)) accepted[fd] = 0;
  return real_ctl(ep, op, fd, ev);
}
