/*
 * What the host side of one exit executes: runs COMMAND, and single-steps (ptrace) its
 * thread named THREAD from one KVM_RUN to the next, WINDOWS times. For each window it counts
 * the instructions executed and the distinct 4 KiB code pages they came from, by the file
 * mapped there. Then it kills COMMAND.
 *
 *   footprint WINDOWS SETTLE_MS THREAD COMMAND [ARG...]
 *
 * Once the process has a vCPU and the thread exists, it lets it run SETTLE_MS more (so that
 * JIT compilers have warmed up), then stops only that thread (PTRACE_SEIZE and PTRACE_INTERRUPT: no signal, the
 * process's other threads run on). The interruption ends a KVM_RUN early, so the first two
 * windows are not counted. COMMAND is this program's child, so tracing it is allowed under
 * Yama's ptrace_scope 1.
 *
 * Why count pages: where every exit flushes the TLB (KVM nested under an emulator, as
 * kvmkit's hardware test machine runs), each code page a handler touches costs a refill
 * after every exit, measured there at ~250 ns a page against ~4 ns on the host; instructions
 * and pages are also what a handler costs independent of the clock's noise.
 *
 * Prints one JSON object: {"windows":[{"instructions":N,"pages":{"libc.so.6":2,...}},...]}.
 * Exit status 1 with a message on stderr if it could not trace.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAGES 4096
#define MAX_MAPS 8192
#define FIND_TIMEOUT_MS 120000

static pid_t child;

static void die(const char *what) {
    fprintf(stderr, "footprint: %s: %s\n", what, strerror(errno));
    if (child > 0) kill(child, SIGKILL);
    exit(1);
}

static void sleep_ms(long ms) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) < 0 && errno == EINTR) {
    }
}

/* The first entry of /proc/PID/DIR for which `match(path of the entry, arg)` holds, as a
 * number (a thread's ID, a descriptor), or -1. */
static long find_entry(pid_t pid, const char *subdir, int (*match)(const char *path, const char *arg),
                       const char *arg) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, subdir);
    DIR *dir = opendir(path);
    if (!dir) return -1;
    long found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(dir))) {
        char entry[320];
        snprintf(entry, sizeof entry, "%s/%s", path, e->d_name);
        if (e->d_name[0] != '.' && match(entry, arg)) found = atol(e->d_name);
    }
    closedir(dir);
    return found;
}

/* Whether the descriptor at `path` is a KVM vCPU. */
static int is_vcpu(const char *path, const char *unused) {
    (void)unused;
    char target[64] = "";
    return readlink(path, target, sizeof target - 1) > 0 && strncmp(target, "anon_inode:kvm-vcpu", 19) == 0;
}

/* Whether the thread at `path` is named `name`. */
static int is_named(const char *path, const char *name) {
    char file[340], comm[64] = "";
    snprintf(file, sizeof file, "%s/comm", path);
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    int same = fgets(comm, sizeof comm, f) && (comm[strcspn(comm, "\n")] = 0, strcmp(comm, name) == 0);
    fclose(f);
    return same;
}

static struct {
    unsigned long lo, hi;
    char name[128];
} maps[MAX_MAPS];
static int nmaps;

static void load_maps(pid_t pid) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "r");
    if (!f) die("read the maps");
    nmaps = 0;
    while (nmaps < MAX_MAPS && fgets(line, sizeof line, f)) {
        char name[400] = "";
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %399[^\n]", &maps[nmaps].lo, &maps[nmaps].hi, name) < 2)
            continue;
        const char *base = strrchr(name, '/');
        snprintf(maps[nmaps].name, sizeof maps[nmaps].name, "%s", base ? base + 1 : name[0] ? name : "[anon]");
        nmaps++;
    }
    fclose(f);
}

static const char *object_at(unsigned long addr) {
    for (int i = 0; i < nmaps; i++)
        if (addr >= maps[i].lo && addr < maps[i].hi) return maps[i].name;
    return "?";
}

/* Whether the thread stopped at `regs` is about to enter KVM_RUN. */
static int at_kvm_run(pid_t tid, const struct user_regs_struct *regs) {
    errno = 0;
    long word = ptrace(PTRACE_PEEKTEXT, tid, (void *)regs->rip, NULL);
    return errno == 0 && (word & 0xffff) == 0x050f && regs->rax == SYS_ioctl && regs->rsi == KVM_RUN;
}

static void print_window(int first, long instructions, const unsigned long *pages, int npages) {
    const char *names[64];
    int counts[64], n = 0;
    for (int i = 0; i < npages; i++) {
        const char *name = object_at(pages[i] << 12);
        int j = 0;
        while (j < n && strcmp(names[j], name) != 0) j++;
        if (j == n && n < 64) {
            names[n] = name;
            counts[n++] = 0;
        }
        if (j < n) counts[j]++;
    }
    printf("%s{\"instructions\":%ld,\"pages\":{", first ? "" : ",", instructions);
    for (int j = 0; j < n; j++) printf("%s\"%s\":%d", j ? "," : "", names[j], counts[j]);
    printf("}}");
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: footprint WINDOWS SETTLE_MS THREAD COMMAND [ARG...]\n");
        return 2;
    }
    int windows = atoi(argv[1]);
    long settle = atol(argv[2]);
    child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        /* Dies with this program, however it ends. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execvp(argv[4], argv + 4);
        fprintf(stderr, "footprint: run %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    const char *name = argv[3];
    pid_t tid = -1;
    for (long waited = 0; find_entry(child, "fd", is_vcpu, NULL) < 0 ||
                          (tid = (pid_t)find_entry(child, "task", is_named, name)) < 0;
         waited += 10) {
        int status;
        if (waitpid(child, &status, WNOHANG) == child) {
            fprintf(stderr, "footprint: %s ended before it had a vCPU and a thread named %s\n", argv[4], name);
            return 1;
        }
        if (waited > FIND_TIMEOUT_MS) {
            errno = ETIMEDOUT;
            die("wait for the thread");
        }
        sleep_ms(10);
    }
    sleep_ms(settle);
    if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) < 0) die("ptrace the KVM_RUN thread");
    if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) < 0) die("stop the KVM_RUN thread");
    int status;
    if (waitpid(tid, &status, __WALL) < 0) die("wait for the thread to stop");
    load_maps(child);

    static unsigned long pages[MAX_PAGES];
    int npages = 0, window = -2; /* -2: up to the first KVM_RUN; -1: the one after it */
    long instructions = 0;
    int deliver = 0; /* a signal the thread stopped for, passed on with the next step */
    printf("{\"windows\":[");
    while (window < windows) {
        struct user_regs_struct regs;
        if (ptrace(PTRACE_GETREGS, tid, NULL, &regs) < 0) die("read the thread's registers");
        if (at_kvm_run(tid, &regs)) {
            if (window >= 0) print_window(window == 0, instructions, pages, npages);
            window++;
            instructions = 0;
            npages = 0;
        }
        unsigned long page = regs.rip >> 12;
        int i = 0;
        while (i < npages && pages[i] != page) i++;
        if (i == npages && npages < MAX_PAGES) {
            pages[npages++] = page;
            if (object_at(regs.rip)[0] == '?') load_maps(child); /* new code since */
        }
        instructions++;
        if (ptrace(PTRACE_SINGLESTEP, tid, NULL, (void *)(long)deliver) < 0) die("single-step");
        if (waitpid(tid, &status, __WALL) < 0) die("wait for a step");
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            fprintf(stderr, "footprint: the thread ended after %d windows\n", window < 0 ? 0 : window);
            return 1;
        }
        /* A step ends in SIGTRAP; another signal (a kick, say) stops the thread before its
         * handler runs, and goes with the next step; event stops carry none. */
        deliver = WIFSTOPPED(status) && status >> 16 == 0 && WSTOPSIG(status) != SIGTRAP ? WSTOPSIG(status) : 0;
    }
    printf("]}\n");
    fflush(stdout);
    /* Detached first: a thread still traced would keep its process from being reaped. */
    ptrace(PTRACE_DETACH, tid, NULL, NULL);
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    return 0;
}
