// The shape of a cache's per-class free store, measured alone: the same ring
// workload as benches/c_ring (free the oldest of R blocks, allocate one of a
// random size, write its first byte) run against three stores, with no
// allocator around them, no restartable sequence and no hardening, so that only
// the data structure's dependency chain differs:
//
//   index   an array of object addresses and a 16-bit top index per class, as
//           strata's per-CPU slab (and tcmalloc's) keeps them: a pop loads the
//           index, then the slot, and only then knows the object's address;
//   list    an intrusive singly linked list per class, as strata's thread cache
//           (and mimalloc's pages) keep them: a pop's result is the head itself,
//           the link is loaded from the object only to update the head;
//   packed  the same list with its length packed beside the head in one 64-bit
//           word (48-bit address, 16-bit length), so that an update is a single
//           store, which is what a restartable sequence needs as its commit.
//
// Prints the CPU time per pair (CLOCK_THREAD_CPUTIME_ID, so other load on the
// machine inflates it less than wall time). Usage:
//   shapes index|list|packed PAIRS RING MIN_SIZE MAX_SIZE
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLASSES 64
#define CAP 4096
#define PER_CLASS 2048

static size_t sizes[4096];
static char *pool[CLASSES];

/* index: slots and a top index per class. */
static uint16_t top[CLASSES];
static void *slots[CLASSES][CAP];

/* list: head and length per class. */
static void *head[CLASSES];
static uint32_t len[CLASSES];

/* packed: head (low 48 bits) and length (high 16 bits) in one word. */
static uint64_t word[CLASSES];
#define ADDR_MASK 0xffffffffffffull

__attribute__((noinline)) static void *index_pop(int c) {
    uint16_t t = top[c];
    if (t == 0) return NULL;
    t--;
    void *p = slots[c][t];
    top[c] = t;
    return p;
}
__attribute__((noinline)) static int index_push(int c, void *p) {
    uint16_t t = top[c];
    if (t >= CAP) return 0;
    slots[c][t] = p;
    top[c] = t + 1;
    return 1;
}
__attribute__((noinline)) static void *list_pop(int c) {
    void *p = head[c];
    if (!p) return NULL;
    head[c] = *(void **)p;
    len[c]--;
    return p;
}
__attribute__((noinline)) static int list_push(int c, void *p) {
    if (len[c] >= CAP) return 0;
    *(void **)p = head[c];
    head[c] = p;
    len[c]++;
    return 1;
}
__attribute__((noinline)) static void *packed_pop(int c) {
    uint64_t w = word[c];
    void *p = (void *)(uintptr_t)(w & ADDR_MASK);
    if (!p) return NULL;
    uint64_t next = (uint64_t)(uintptr_t)*(void **)p;
    word[c] = next | (((w >> 48) - 1) << 48);
    return p;
}
__attribute__((noinline)) static int packed_push(int c, void *p) {
    uint64_t w = word[c];
    if ((w >> 48) >= CAP) return 0;
    *(void **)p = (void *)(uintptr_t)(w & ADDR_MASK);
    word[c] = (uint64_t)(uintptr_t)p | (((w >> 48) + 1) << 48);
    return 1;
}

static int shape;
static void *pop(int c) { return shape == 0 ? index_pop(c) : shape == 1 ? list_pop(c) : packed_pop(c); }
static int push(int c, void *p) { return shape == 0 ? index_push(c, p) : shape == 1 ? list_push(c, p) : packed_push(c, p); }
static int class_of(size_t s) { return (int)((s + 7) / 8 % CLASSES); }

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: shapes index|list|packed PAIRS RING MIN_SIZE MAX_SIZE\n");
        return 2;
    }
    shape = !strcmp(argv[1], "index") ? 0 : !strcmp(argv[1], "list") ? 1 : !strcmp(argv[1], "packed") ? 2 : -1;
    long n = atol(argv[2]), ring_len = atol(argv[3]), lo = atol(argv[4]), hi = atol(argv[5]);
    if (shape < 0 || n <= 0 || ring_len <= 0 || (ring_len & (ring_len - 1)) || lo < 8 || hi < lo || hi > 512) {
        fprintf(stderr, "shapes: bad arguments (RING a power of two, 8 <= MIN <= MAX <= 512)\n");
        return 2;
    }
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        sizes[i] = lo + x % (hi - lo + 1);
    }
    for (int c = 0; c < CLASSES; c++) {
        size_t stride = c * 8 > 16 ? c * 8 : 16;
        pool[c] = aligned_alloc(64, PER_CLASS * 512);
        if (!pool[c]) return 1;
        for (int k = 0; k < PER_CLASS; k++) push(c, pool[c] + k * stride);
    }
    void **ring = malloc(ring_len * sizeof *ring);
    int *ring_class = malloc(ring_len * sizeof *ring_class);
    for (long i = 0; i < ring_len; i++) {
        ring_class[i] = class_of(sizes[i]);
        ring[i] = pop(ring_class[i]);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long i = 0; i < n; i++) {
        long k = i & (ring_len - 1);
        if (!push(ring_class[k], ring[k])) return 1;
        int c = class_of(sizes[i & 4095]);
        void *p = pop(c);
        if (!p) return 1;
        ring[k] = p;
        ring_class[k] = c;
        *(volatile char *)p = 1;
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n;
    printf("%s %.2f ns/pair\n", argv[1], ns);
    return 0;
}
