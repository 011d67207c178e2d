/* How long the allocator's background work makes other threads wait: one thread
 * builds a heap of MIB MiB in blocks of 64-512 KiB, frees it all and sleeps, so a
 * purge delay later the allocator gives those pages back to the OS; meanwhile
 * WORKERS threads each loop on a ring of 16 blocks of 64-512 KiB (free the oldest,
 * allocate one, touch its first and last byte) and time every step. Rounds repeat
 * for SECONDS. Prints, over all workers' steps: their count, the median and the
 * 99.99th percentile of a step (rounded up to whole microseconds), the longest
 * step, and the number of steps that took 1 ms or more.
 *
 * Usage: purge_stall [MIB] [WORKERS] [SECONDS]       (defaults 512 1 6)
 * With strata, run it with a short purge delay so that purges fall inside the run:
 *   STRATA_PURGE_DELAY_MS=200 LD_PRELOAD=.../libstrata.so ./purge_stall */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RING 16
#define MAX_WORKERS 16
#define BUCKETS 1000000 /* one a microsecond, up to 1 s (longer ones land in the last) */

static size_t heap_mib = 512;
static int workers = 1;
static double seconds = 6;
static volatile int stop;
static uint32_t *hist[MAX_WORKERS]; /* steps by whole microseconds */
static uint64_t max_ns[MAX_WORKERS];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *builder(void *arg) {
    (void)arg;
    uint64_t x = 0x243F6A8885A308D3ull;
    size_t cap = heap_mib * 1024 * 1024 / (64 * 1024) + 1, n = 0;
    char **blocks = malloc(cap * sizeof *blocks);
    if (!blocks) return NULL;
    while (!stop) {
        size_t total = 0;
        n = 0;
        while (total < heap_mib * 1024 * 1024 && n < cap) {
            size_t size = (64 + next(&x) % 449) * 1024;
            char *p = malloc(size);
            if (!p) {
                perror("malloc");
                exit(1);
            }
            memset(p, 1, size);
            blocks[n++] = p;
            total += size;
        }
        for (size_t i = 0; i < n; i++) free(blocks[i]);
        /* Idle long enough for the purge delay to pass. */
        for (int i = 0; i < 10 && !stop; i++) usleep(100000);
    }
    free(blocks);
    return NULL;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    char *ring[RING] = {0};
    long k = 0;
    while (!stop) {
        int slot = (int)(k % RING);
        size_t size = (64 + next(&x) % 449) * 1024;
        uint64_t t0 = now_ns();
        free(ring[slot]);
        char *p = malloc(size);
        if (!p) {
            perror("malloc");
            exit(1);
        }
        p[0] = 1;
        p[size - 1] = 1;
        uint64_t dt = now_ns() - t0;
        ring[slot] = p;
        uint64_t us = dt / 1000;
        hist[id][us < BUCKETS ? us : BUCKETS - 1]++;
        if (dt > max_ns[id]) max_ns[id] = dt;
        k++;
    }
    for (int i = 0; i < RING; i++) free(ring[i]);
    return NULL;
}

/* The smallest whole microsecond that at least `q` of the steps do not exceed. */
static double quantile_us(const uint64_t *all, uint64_t total, double q) {
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    for (long b = 0; b < BUCKETS; b++) {
        seen += all[b];
        if (seen > want) return (double)b + 1;
    }
    return BUCKETS;
}

int main(int argc, char **argv) {
    if (argc > 1) heap_mib = (size_t)atol(argv[1]);
    if (argc > 2) workers = atoi(argv[2]);
    if (argc > 3) seconds = atof(argv[3]);
    if (workers < 1 || workers > MAX_WORKERS) {
        fprintf(stderr, "WORKERS must be 1-%d\n", MAX_WORKERS);
        return 2;
    }
    for (int i = 0; i < workers; i++) {
        hist[i] = malloc(BUCKETS * sizeof(uint32_t));
        if (!hist[i]) return 1;
        memset(hist[i], 0, BUCKETS * sizeof(uint32_t)); /* fault in before timing */
    }
    pthread_t b, w[MAX_WORKERS];
    pthread_create(&b, NULL, builder, NULL);
    for (int i = 0; i < workers; i++) pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i);
    usleep((useconds_t)(seconds * 1e6));
    stop = 1;
    pthread_join(b, NULL);
    static uint64_t all[BUCKETS];
    uint64_t total = 0, slow = 0, max = 0;
    for (int i = 0; i < workers; i++) {
        pthread_join(w[i], NULL);
        for (long b = 0; b < BUCKETS; b++) {
            all[b] += hist[i][b];
            total += hist[i][b];
            if (b >= 1000) slow += hist[i][b];
        }
        if (max_ns[i] > max) max = max_ns[i];
    }
    printf("steps %llu median_us %.0f p9999_us %.0f max_us %.0f over_1ms %llu\n",
           (unsigned long long)total, quantile_us(all, total, 0.5),
           quantile_us(all, total, 0.9999), max / 1e3, (unsigned long long)slow);
    return 0;
}
