/*
 * vsock-bench: both sides of the vsock part of `kvmkit bench virtio` (src/bench/virtio.ts).
 * scripts/fixtures.sh builds it static, puts it in the test initramfs as /bin/vsock-bench and
 * beside it as fixtures/cache/vsock-bench, so the host side is one program for every VMM.
 *
 *   vsock-bench serve PORT
 *     (the guest) listens on vsock PORT, says so (`kvmkit-bench vsock-ready PORT`), and
 *     serves one connection at a time, each starting with a command byte:
 *       'g' + 8 bytes N (little-endian)  writes N bytes, then closes
 *       'h'                              reads to end of file, answers the count (8 bytes)
 *       'p'                              echoes what comes until end of file
 *       'q'                              ends the server (exit status 0)
 *   vsock-bench run ADDRESS PORT MIB ROUNDS
 *     (the host) reaches the server at ADDRESS, one of
 *       vsock:CID   AF_VSOCK to CID (QEMU's vhost-vsock)
 *       uds:PATH    Firecracker's convention (kvmkit): connect to PATH, write "CONNECT PORT\n",
 *                   read "OK ...\n"
 *     and times MIB MiB guest to host, MIB MiB host to guest and ROUNDS round trips of 64
 *     bytes (after 16 untimed), one line each: `kvmkit-bench vsock-g2h seconds 1.234567`
 *     (vsock-h2g, vsock-rtt), then ends the server.
 *
 * Exit status: 0, 2 on bad arguments, 1 on a failure (said on standard error).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK (64 * 1024)
#define MESSAGE 64
#define WARMUP 16

static char buffer[CHUNK];

static void die(const char *what) {
  fprintf(stderr, "vsock-bench: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(void) {
  fputs("usage: vsock-bench serve PORT | vsock-bench run vsock:CID|uds:PATH PORT MIB ROUNDS\n", stderr);
  exit(2);
}

static unsigned long number(const char *text) {
  char *end;
  errno = 0;
  unsigned long n = strtoul(text, &end, 10);
  if (errno != 0 || *text == '\0' || *end != '\0') {
    usage();
  }
  return n;
}

/* Writes all of `len` bytes at `data`. */
static void put(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      die("write");
    }
    p += n;
    len -= (size_t)n;
  }
}

/* Reads exactly `len` bytes into `data`; returns 0 at end of file before any. */
static int get(int fd, void *data, size_t len) {
  char *p = data;
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      die("read");
    }
    if (n == 0) {
      if (got == 0) {
        return 0;
      }
      errno = EPIPE;
      die("read: end of file inside a message");
    }
    got += (size_t)n;
  }
  return 1;
}

static void serve_one(int fd) {
  char command;
  if (!get(fd, &command, 1)) {
    return;
  }
  uint64_t n = 0;
  switch (command) {
  case 'g':
    get(fd, &n, sizeof n);
    while (n > 0) {
      size_t len = n < CHUNK ? (size_t)n : CHUNK;
      put(fd, buffer, len);
      n -= len;
    }
    break;
  case 'h':
    for (;;) {
      ssize_t got = read(fd, buffer, CHUNK);
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got < 0) {
        die("read");
      }
      if (got == 0) {
        break;
      }
      n += (uint64_t)got;
    }
    put(fd, &n, sizeof n);
    break;
  case 'p':
    for (;;) {
      ssize_t got = read(fd, buffer, CHUNK);
      if (got < 0 && errno == EINTR) {
        continue;
      }
      if (got <= 0) {
        break;
      }
      put(fd, buffer, (size_t)got);
    }
    break;
  case 'q':
    exit(0);
  default:
    fprintf(stderr, "vsock-bench: unknown command %d\n", command);
  }
}

static _Noreturn void serve(unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) {
    die("socket");
  }
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
    die("bind");
  }
  if (listen(s, 4) < 0) {
    die("listen");
  }
  printf("kvmkit-bench vsock-ready %u\n", port);
  fflush(stdout);
  for (;;) {
    int fd = accept(s, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR) {
        continue;
      }
      die("accept");
    }
    serve_one(fd);
    close(fd);
  }
}

/* A connection to the server at `address` port `port`, its command byte sent. */
static int dial(const char *address, unsigned port, char command) {
  int fd;
  if (strncmp(address, "vsock:", 6) == 0) {
    fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) {
      die("socket");
    }
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = (unsigned)number(address + 6)};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      die("connect");
    }
  } else if (strncmp(address, "uds:", 4) == 0) {
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
      die("socket");
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(address + 4) >= sizeof addr.sun_path) {
      usage();
    }
    strcpy(addr.sun_path, address + 4);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
      die("connect");
    }
    char line[32];
    int len = snprintf(line, sizeof line, "CONNECT %u\n", port);
    put(fd, line, (size_t)len);
    /* "OK <port>\n", a byte at a time: nothing after it may be taken from the stream. */
    size_t at = 0;
    do {
      if (at == sizeof line - 1 || !get(fd, line + at, 1)) {
        errno = ECONNREFUSED;
        die("CONNECT");
      }
    } while (line[at++] != '\n');
    if (strncmp(line, "OK ", 3) != 0) {
      errno = ECONNREFUSED;
      die("CONNECT");
    }
  } else {
    usage();
  }
  put(fd, &command, 1);
  return fd;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void report(const char *test, double seconds) {
  printf("kvmkit-bench %s seconds %.6f\n", test, seconds);
  fflush(stdout);
}

static int run(const char *address, unsigned port, uint64_t bytes, unsigned long rounds) {
  /* Guest to host: from the request to the last byte. */
  int fd = dial(address, port, 'g');
  double start = now();
  put(fd, &bytes, sizeof bytes);
  uint64_t left = bytes;
  while (left > 0) {
    ssize_t n = read(fd, buffer, CHUNK);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      die("read (guest to host)");
    }
    left -= (uint64_t)n < left ? (uint64_t)n : left;
  }
  report("vsock-g2h", now() - start);
  close(fd);

  /* Host to guest: from the first byte to the guest's count of them all. */
  fd = dial(address, port, 'h');
  start = now();
  for (left = bytes; left > 0;) {
    size_t len = left < CHUNK ? (size_t)left : CHUNK;
    put(fd, buffer, len);
    left -= len;
  }
  shutdown(fd, SHUT_WR);
  uint64_t counted = 0;
  if (!get(fd, &counted, sizeof counted) || counted != bytes) {
    errno = EIO;
    die("the guest's count (host to guest)");
  }
  report("vsock-h2g", now() - start);
  close(fd);

  /* Round trips of a small message. */
  fd = dial(address, port, 'p');
  char message[MESSAGE];
  memset(message, 'p', sizeof message);
  for (unsigned long i = 0; i < WARMUP + rounds; i++) {
    if (i == WARMUP) {
      start = now();
    }
    put(fd, message, sizeof message);
    if (!get(fd, message, sizeof message)) {
      errno = EPIPE;
      die("read (round trip)");
    }
  }
  report("vsock-rtt", now() - start);
  close(fd);

  close(dial(address, port, 'q'));
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) {
    serve((unsigned)number(argv[2]));
  }
  if (argc == 6 && strcmp(argv[1], "run") == 0) {
    uint64_t mib = number(argv[4]);
    return run(argv[2], (unsigned)number(argv[3]), mib << 20, number(argv[5]));
  }
  usage();
  return 2;
}
