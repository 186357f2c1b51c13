/*
 * The C baseline of kvmkit's exit-latency benchmark: the minimal KVM userspace loop
 * (KVM_RUN, switch on exit_reason, answer, repeat), running the same guest as kvmkit.
 *
 *   kvm_loop GUEST.bin KIND COUNT [thread]
 *
 * GUEST.bin is guests/bench.S as a flat binary, loaded at 0x100000 and started in 32-bit
 * protected mode (flat segments, no paging) with EAX = KIND and ESI = COUNT. Guest RAM is
 * 0-0x1fffff, so its MMIO accesses at 0xd0000000 exit. Port reads return
 * 0xff and MMIO reads 0; the guest's write to port 0xf4 ends the run.
 *
 * With `thread`, a second thread answers each exit, as a VMM answers on another thread
 * (kvmkit's asynchronous path, an I/O thread): the vCPU thread publishes the exit in a
 * counter and waits for the answer's. Each side spins while the other last ran on another
 * CPU; on the same one it yields the CPU once and then sleeps on a futex until the other
 * side wakes it. (Yielding again is what a thread waiting on its own CPU must not do: under
 * CFS a yield returns at once while the other thread has had more CPU time, as the vCPU
 * thread has, and on the nested test machine's one CPU yielding took 116-146 us per exit
 * against 77-101 sleeping and 81-84 yielding once first; on a host's one CPU under EEVDF,
 * 12.0, 14.3 and 12.7-13.9 us.) That is the floor for an answer from another thread, with
 * nothing between the two threads but two counters. Prints one JSON
 * object: the run's wall time, the exits it answered, CPU time, and the per-exit handling
 * time (KVM_RUN return to re-entry) as percentiles and a log-linear histogram (16 buckets
 * per power of two).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RAM_SIZE 0x200000
#define ENTRY 0x100000
#define DONE_PORT 0xf4
#define BUCKETS (16 + 38 * 16)

static void die(const char *what) {
    fprintf(stderr, "kvm_loop: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Log-linear bucket of ns, as kvmkit's: exact below 16, then 16 per power of two. */
static int bucket(uint64_t ns) {
    if (ns < 16) return (int)ns;
    int exp = 63 - __builtin_clzll(ns);
    int sub = (int)(ns >> (exp - 4)) & 15;
    int i = 16 + (exp - 4) * 16 + sub;
    return i < BUCKETS ? i : BUCKETS - 1;
}

static void bounds(int i, uint64_t *low, uint64_t *high) {
    if (i < 16) { *low = (uint64_t)i; *high = (uint64_t)i + 1; return; }
    int shift = (i - 16) / 16, sub = (i - 16) % 16;
    *low = (uint64_t)(16 + sub) << shift;
    *high = (uint64_t)(17 + sub) << shift;
}

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static uint32_t percentile(const uint32_t *sorted, size_t n, double p) {
    if (n == 0) return 0;
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

/* What the loop answers: port reads all-ones, MMIO reads zero; writes need nothing. */
static void answer(struct kvm_run *run) {
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN)
        memset((uint8_t *)run + run->io.data_offset, 0xff, (size_t)run->io.size * run->io.count);
    else if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write)
        memset(run->mmio.data, 0, sizeof run->mmio.data);
}

/* THREAD mode: exits posted by the vCPU thread and answered by the other (32-bit counters,
 * as a futex needs), whether each side sleeps, and the CPU each last ran on. */
static struct {
    _Atomic uint32_t posted, answered;
    _Atomic int vcpu_asleep, answer_asleep;
    _Atomic int vcpu_cpu, answer_cpu;
    struct kvm_run *run;
} handoff = {.vcpu_cpu = -1, .answer_cpu = -1};

/* PAUSEs between two looks at which CPU this thread is on (a look costs more than a PAUSE),
 * and before a wait sleeps while its partner runs on another CPU but does not answer. */
#define SPINS_PER_LOOK 32
#define SPINS_BEFORE_SLEEP 20000

/* Records the calling thread's CPU in `self` and waits until `word` reaches `want`. */
static void await_count(_Atomic uint32_t *word, uint32_t want, _Atomic int *self, _Atomic int *partner,
                        _Atomic int *asleep) {
    atomic_store_explicit(self, sched_getcpu(), memory_order_relaxed);
    int sharing = 0, yielded = 0;
    for (unsigned spins = 0;; spins++) {
        uint32_t now = atomic_load(word);
        if ((int32_t)(now - want) >= 0) return;
        if (sharing || spins % SPINS_PER_LOOK == 0)
            sharing = sched_getcpu() == atomic_load_explicit(partner, memory_order_relaxed);
        if (sharing && !yielded) {
            sched_yield();
            yielded = 1;
        } else if (sharing || spins >= SPINS_BEFORE_SLEEP) {
            /* Announced, then looked at again: the other side reads `asleep` after it
             * publishes (both sequentially consistent), so one of the two sees the other. */
            atomic_store(asleep, 1);
            if (atomic_load(word) == now) syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, now, NULL, NULL, 0);
            atomic_store(asleep, 0);
            spins = 0;
        } else {
            __builtin_ia32_pause();
        }
    }
}

/* Sets `word` to `n` and wakes the thread waiting on it, if it sleeps. */
static void publish(_Atomic uint32_t *word, uint32_t n, _Atomic int *asleep) {
    atomic_store(word, n);
    if (atomic_load(asleep)) syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *answer_thread(void *unused) {
    (void)unused;
    for (uint32_t n = 1;; n++) {
        await_count(&handoff.posted, n, &handoff.answer_cpu, &handoff.vcpu_cpu, &handoff.answer_asleep);
        answer(handoff.run);
        publish(&handoff.answered, n, &handoff.vcpu_asleep);
    }
    return NULL;
}

static double cpu_us(struct timeval tv) { return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec; }

int main(int argc, char **argv) {
    int threaded = argc == 5 && strcmp(argv[4], "thread") == 0;
    if (argc != 4 && !threaded) {
        fprintf(stderr, "usage: kvm_loop GUEST.bin KIND COUNT [thread]\n");
        return 2;
    }
    unsigned kind = (unsigned)strtoul(argv[2], NULL, 0);
    unsigned long count = strtoul(argv[3], NULL, 0);
    if (count == 0) count = 1;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0) die("KVM_SET_TSS_ADDR");

    uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) die("mmap guest RAM");
    FILE *guest = fopen(argv[1], "rb");
    if (!guest) die(argv[1]);
    if (fread(ram + ENTRY, 1, RAM_SIZE - ENTRY, guest) == 0) die("read guest");
    fclose(guest);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = RAM_SIZE, .userspace_addr = (uint64_t)(uintptr_t)ram,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");

    /* KVM needs a CPUID that at least exists; the host's supported set will do. */
    struct {
        struct kvm_cpuid2 header;
        struct kvm_cpuid_entry2 entries[256];
    } cpuid = {.header.nent = 256};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid) < 0) die("KVM_GET_SUPPORTED_CPUID");
    if (ioctl(vcpu, KVM_SET_CPUID2, &cpuid) < 0) die("KVM_SET_CPUID2");

    /* Flat 32-bit protected mode: the segment caches are all the guest needs. */
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x18, .type = 0xb, .present = 1,
                               .db = 1, .s = 1, .g = 1};
    struct kvm_segment data = code;
    data.selector = 0x10;
    data.type = 0x3;
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.cr0 |= 1;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = ENTRY, .rax = kind, .rsi = count, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    handoff.run = run;
    pthread_t answerer;
    if (threaded && (errno = pthread_create(&answerer, NULL, answer_thread, NULL)) != 0) die("pthread_create");

    uint32_t *samples = malloc(count * sizeof *samples);
    if (!samples) die("malloc");
    size_t n = 0;
    unsigned long exits = 0;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    uint64_t start = now_ns(), exited = 0;
    for (;;) {
        if (exited) {
            uint64_t handled = now_ns() - exited;
            if (n < count) samples[n++] = handled > UINT32_MAX ? UINT32_MAX : (uint32_t)handled;
        }
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        exited = now_ns();
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            if (run->io.port == DONE_PORT) goto done;
            /* fall through */
        case KVM_EXIT_MMIO:
            exits++;
            if (threaded) {
                publish(&handoff.posted, (uint32_t)exits, &handoff.answer_asleep);
                await_count(&handoff.answered, (uint32_t)exits, &handoff.vcpu_cpu, &handoff.answer_cpu,
                            &handoff.vcpu_asleep);
            } else {
                answer(run);
            }
            break;
        default:
            fprintf(stderr, "kvm_loop: unexpected exit reason %u\n", run->exit_reason);
            return 1;
        }
    }
done:;
    uint64_t wall = now_ns() - start;
    getrusage(RUSAGE_SELF, &after);

    uint64_t histogram[BUCKETS] = {0};
    for (size_t i = 0; i < n; i++) histogram[bucket(samples[i])]++;
    qsort(samples, n, sizeof *samples, compare);
    printf("{\"wallNs\":%llu,\"exits\":%lu,\"userUs\":%.0f,\"sysUs\":%.0f,\"measured\":%zu,"
           "\"p50Ns\":%u,\"p99Ns\":%u,\"p999Ns\":%u,\"buckets\":[",
           (unsigned long long)wall, exits, cpu_us(after.ru_utime) - cpu_us(before.ru_utime),
           cpu_us(after.ru_stime) - cpu_us(before.ru_stime), n, percentile(samples, n, 0.5),
           percentile(samples, n, 0.99), percentile(samples, n, 0.999));
    int first = 1;
    for (int i = 0; i < BUCKETS; i++) {
        if (!histogram[i]) continue;
        uint64_t low, high;
        bounds(i, &low, &high);
        printf("%s{\"lowNs\":%llu,\"highNs\":%llu,\"count\":%llu}", first ? "" : ",", (unsigned long long)low,
               (unsigned long long)high, (unsigned long long)histogram[i]);
        first = 0;
    }
    printf("]}\n");
    return 0;
}
