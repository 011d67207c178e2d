/*
 * stress.c - a multithreaded malloc stress with content checks, for running with
 * and without LD_PRELOAD=libstrata.so.
 *
 * Usage: stress [THREADS (default 8)] [ALLOCATIONS (default 1000000)]
 *
 * Each of THREADS threads makes its share of ALLOCATIONS blocks: random sizes
 * (80 % 8 B - 256 B, 18 % up to 4 KiB, 1.9 % up to 64 KiB, 0.1 % up to 4 MiB), some through
 * posix_memalign / memalign / aligned_alloc (alignments 32 B - 2 MiB) or calloc
 * (checked zero). Every block is filled with a pattern derived from (thread,
 * index, size). About half of the blocks go to another thread through that
 * thread's lock-protected ring; the receiver checks the pattern, the alignment and
 * malloc_usable_size >= size, sometimes reallocs the block (checking that the
 * prefix survived), and frees it or passes it on (up to 2 hops). The rest stay in
 * the allocating thread's slots for a while and are freed there, some after a
 * realloc. At the end every block must have been freed exactly once.
 *
 * Any mismatch prints "stress: FAIL ..." and exits 1. The last line on stdout is
 * "stress: N ops ..." (ops = allocations + reallocs + frees).
 *
 * Build: cc -O2 -pthread -Wall -Werror tests/c/stress.c -o stress -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define MAX_THREADS 256
#define RING 1024 /* messages a thread's inbound ring holds */
#define SLOTS 512 /* blocks a thread keeps for itself */
#define MAX_HOPS 2

struct block {
    unsigned char *p;
    size_t size;
    size_t align; /* 0: plain malloc alignment (16) */
    uint64_t seed;
    uint32_t from; /* allocating thread */
    uint32_t hops;
    uint64_t index; /* allocating thread's counter */
};

struct ring {
    pthread_mutex_t mu;
    unsigned head, tail; /* head - tail messages, at buf[tail % RING] */
    struct block buf[RING];
};

struct counts {
    uint64_t allocs, frees, reallocs, remote_frees, aligned, callocs, forwards, bytes;
};

struct worker {
    pthread_t thread;
    uint32_t id;
    uint64_t quota;
    uint64_t rng;
    struct counts c;
    struct block slots[SLOTS];
    char pad[64];
};

static int nthreads;
static struct ring *rings;
static struct worker *workers;
static atomic_int finished;

static _Noreturn void fail(const struct worker *w, const struct block *b, const char *what,
                           size_t at) {
    fprintf(stderr,
            "stress: FAIL in thread %u: %s: block %p of %zu bytes (align %zu) from thread %u "
            "#%llu, %u hops, at byte %zu\n",
            w->id, what, (void *)b->p, b->size, b->align, b->from,
            (unsigned long long)b->index, b->hops, at);
    fflush(stderr);
    exit(1);
}

static inline uint64_t next_rand(struct worker *w) {
    uint64_t x = w->rng;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33, x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Word i of pattern `seed`; distinct words for distinct i. */
static inline uint64_t pattern_word(uint64_t seed, size_t i) {
    uint64_t w = (seed + i) * 0x9E3779B97F4A7C15ull;
    return w ^ (w >> 29);
}

/* Which 8-byte words of a block of n bytes carry the pattern: all of them up to
 * 64 KiB; above, the first and last 16 KiB and the first word of every 16 KiB.
 * next_word(n, i) is the offset of the next such word after offset i. */
#define FULL_LIMIT (64 * KiB)
#define EDGE (16 * KiB)
static inline size_t next_word(size_t n, size_t i) {
    size_t j = i + 8;
    if (n <= FULL_LIMIT || j < EDGE) return j;
    size_t tail = (n - EDGE) & ~(size_t)7;
    if (j >= tail) return j;
    size_t k = (i | 16383) + 1;
    return k < tail ? k : tail;
}

static inline size_t min3(size_t a, size_t b, size_t c) {
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

static void fill_block(unsigned char *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i = next_word(n, i)) {
        uint64_t w = pattern_word(seed, i / 8);
        memcpy(p + i, &w, min3(8, n - i, 8));
    }
}

/* Offset of the first patterned word among p[0..keep) that differs from the pattern
 * written by fill_block(p, filled, seed), or SIZE_MAX. keep <= filled. */
static size_t check_prefix(const unsigned char *p, size_t keep, size_t filled, uint64_t seed) {
    for (size_t i = 0; i < keep; i = next_word(filled, i)) {
        uint64_t w = pattern_word(seed, i / 8);
        if (memcmp(p + i, &w, min3(8, filled - i, keep - i)) != 0) return i;
    }
    return SIZE_MAX;
}

static size_t check_block(const unsigned char *p, size_t n, uint64_t seed) {
    return check_prefix(p, n, n, seed);
}

static size_t random_size(struct worker *w) {
    uint64_t r = next_rand(w);
    unsigned k = r % 1000;
    r >>= 10;
    if (k < 800) return 8 + r % 249;                      /* 8 B .. 256 B */
    if (k < 980) return 256 + r % (4096 - 256 + 1);       /* .. 4 KiB */
    if (k < 999) return 4096 + r % (64 * KiB - 4096 + 1); /* .. 64 KiB */
    return 64 * KiB + r % (4 * MiB - 64 * KiB + 1);     /* .. 4 MiB */
}

static void verify_received(struct worker *w, const struct block *b) {
    if (b->align && ((uintptr_t)b->p & (b->align - 1)))
        fail(w, b, "not aligned as requested", 0);
    if ((uintptr_t)b->p & 15) fail(w, b, "not 16-byte aligned", 0);
    size_t usable = malloc_usable_size(b->p);
    if (usable < b->size) fail(w, b, "malloc_usable_size smaller than the size", usable);
    size_t off = check_block(b->p, b->size, b->seed);
    if (off != SIZE_MAX) fail(w, b, "content corrupted", off);
}

static void release(struct worker *w, struct block *b) {
    verify_received(w, b);
    if (b->from != w->id) w->c.remote_frees++;
    free(b->p);
    w->c.frees++;
    b->p = NULL;
}

static void do_realloc(struct worker *w, struct block *b) {
    verify_received(w, b);
    size_t n = random_size(w);
    unsigned char *q = realloc(b->p, n);
    if (!q) fail(w, b, "realloc failed", n);
    size_t old = b->size, keep = old < n ? old : n;
    b->p = q;
    size_t off = check_prefix(q, keep, old, b->seed);
    if (off != SIZE_MAX) {
        b->size = keep;
        fail(w, b, "realloc lost the content", off);
    }
    b->size = n;
    b->align = 0; /* realloc promises only the default alignment */
    b->seed = mix64(b->seed + n);
    fill_block(q, n, b->seed);
    w->c.reallocs++;
}

static int send_to(struct worker *w, uint32_t to, const struct block *b) {
    struct ring *r = &rings[to];
    int ok = 0;
    pthread_mutex_lock(&r->mu);
    if (r->head - r->tail < RING) {
        r->buf[r->head % RING] = *b;
        r->head++;
        ok = 1;
    }
    pthread_mutex_unlock(&r->mu);
    if (ok) w->c.forwards++;
    return ok;
}

/* Handles up to 64 messages of the thread's inbound ring; returns how many. */
static int drain(struct worker *w, int may_forward) {
    struct block got[64];
    int n = 0;
    struct ring *r = &rings[w->id];
    pthread_mutex_lock(&r->mu);
    while (n < 64 && r->tail != r->head) got[n++] = r->buf[r->tail++ % RING];
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++) {
        struct block *b = &got[i];
        uint64_t k = next_rand(w) % 8;
        if (k < 2) do_realloc(w, b);
        if (may_forward && nthreads > 1 && b->hops < MAX_HOPS && k >= 2 && k < 5) {
            verify_received(w, b);
            b->hops++;
            uint32_t to = (w->id + 1 + next_rand(w) % (nthreads - 1)) % nthreads;
            if (send_to(w, to, b)) continue;
        }
        release(w, b);
    }
    return n;
}

static void allocate_one(struct worker *w) {
    struct block b = {0};
    b.size = random_size(w);
    b.from = w->id;
    b.index = w->c.allocs;
    b.seed = mix64(((uint64_t)w->id << 48) ^ (b.index << 8) ^ b.size);
    uint64_t r = next_rand(w);
    unsigned kind = r % 100;
    if (kind < 6) { /* aligned */
        unsigned shift = 5 + (r >> 8) % 8;        /* 32 B .. 4 KiB */
        if ((r >> 16) % 50 == 0) shift = 16;        /* 64 KiB */
        if ((r >> 24) % 400 == 0) shift = 21;       /* 2 MiB */
        b.align = (size_t)1 << shift;
        void *p = NULL;
        switch ((r >> 32) % 3) {
        case 0:
            if (posix_memalign(&p, b.align, b.size) != 0) p = NULL;
            break;
        case 1: p = memalign(b.align, b.size); break;
        default: p = aligned_alloc(b.align, b.size); break;
        }
        b.p = p;
        w->c.aligned++;
    } else if (kind < 9) {
        b.p = calloc(1, b.size);
        static const uint64_t zero = 0;
        for (size_t i = 0; b.p && i < b.size; i = next_word(b.size, i))
            if (memcmp(b.p + i, &zero, min3(8, b.size - i, 8)) != 0)
                fail(w, &b, "calloc memory not zero", i);
        w->c.callocs++;
    } else {
        b.p = malloc(b.size);
    }
    if (!b.p) fail(w, &b, "allocation failed", b.size);
    fill_block(b.p, b.size, b.seed);
    w->c.allocs++;
    w->c.bytes += b.size;

    if (nthreads > 1 && (r >> 40) % 100 < 45) {
        uint32_t to = (w->id + 1 + (r >> 48) % (nthreads - 1)) % nthreads;
        if (send_to(w, to, &b)) return;
    }
    struct block *slot = &w->slots[(r >> 20) % SLOTS];
    if (slot->p) {
        if ((r >> 56) % 8 == 0) do_realloc(w, slot);
        release(w, slot);
    }
    *slot = b;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    while (w->c.allocs < w->quota) {
        drain(w, 1);
        allocate_one(w);
    }
    /* Finished: forward nothing any more, and drain until every thread is done
     * (only then can nothing more arrive), then once more. */
    atomic_fetch_add(&finished, 1);
    while (atomic_load(&finished) < nthreads)
        if (drain(w, 0) == 0) sched_yield();
    while (drain(w, 0) > 0) {
    }
    for (int i = 0; i < SLOTS; i++)
        if (w->slots[i].p) release(w, &w->slots[i]);
    return NULL;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 8;
    long long total = argc > 2 ? atoll(argv[2]) : 1000000;
    if (nthreads < 1 || nthreads > MAX_THREADS || total < 1) {
        fprintf(stderr, "usage: stress [THREADS 1..%d] [ALLOCATIONS]\n", MAX_THREADS);
        return 2;
    }
    int strata = dlsym(RTLD_DEFAULT, "strata_release_memory") != NULL;
    rings = calloc(nthreads, sizeof *rings);
    workers = calloc(nthreads, sizeof *workers);
    if (!rings || !workers) {
        fprintf(stderr, "stress: FAIL: setup allocation\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nthreads; i++) {
        pthread_mutex_init(&rings[i].mu, NULL);
        workers[i].id = i;
        workers[i].quota = total / nthreads + (i < total % nthreads);
        workers[i].rng = mix64(0x5EED + i) | 1;
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "stress: FAIL: pthread_create\n");
            return 1;
        }
    struct counts sum = {0};
    for (int i = 0; i < nthreads; i++) {
        pthread_join(workers[i].thread, NULL);
        struct counts *c = &workers[i].c;
        sum.allocs += c->allocs, sum.frees += c->frees, sum.reallocs += c->reallocs;
        sum.remote_frees += c->remote_frees, sum.aligned += c->aligned;
        sum.callocs += c->callocs, sum.forwards += c->forwards, sum.bytes += c->bytes;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    for (int i = 0; i < nthreads; i++)
        if (rings[i].head != rings[i].tail) {
            fprintf(stderr, "stress: FAIL: %u blocks left in thread %d's ring\n",
                    rings[i].head - rings[i].tail, i);
            return 1;
        }
    if (sum.allocs != sum.frees) {
        fprintf(stderr, "stress: FAIL: %llu allocations but %llu frees\n",
                (unsigned long long)sum.allocs, (unsigned long long)sum.frees);
        return 1;
    }
    free(rings);
    free(workers);
    unsigned long long ops = sum.allocs + sum.reallocs + sum.frees;
    printf("stress: allocator %s, %d threads: %llu allocations (%llu aligned, %llu calloc, "
           "%.1f GiB), %llu reallocs, %llu handed to another thread, %llu freed by another "
           "thread\n",
           strata ? "strata" : "glibc", nthreads, (unsigned long long)sum.allocs,
           (unsigned long long)sum.aligned, (unsigned long long)sum.callocs,
           (double)sum.bytes / (1 << 30), (unsigned long long)sum.reallocs,
           (unsigned long long)sum.forwards, (unsigned long long)sum.remote_frees);
    printf("stress: %llu ops in %.2f s (%.2f M ops/s), every block verified and freed once\n",
           ops, secs, (double)ops / secs / 1e6);
    return 0;
}
