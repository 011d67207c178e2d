/* A ring of 64 live blocks of 256 KiB-1 MiB (strata's Large range) per thread: each
 * step frees the oldest block and allocates one of a random size, touching its first
 * and last byte, so a block that comes from fresh or purged pages costs page faults.
 * THREADS threads run STEPS steps each, on rings of their own, at once. Prints the
 * wall-clock nanoseconds per step over all threads (total steps / wall time).
 * Usage: large_ring [STEPS] [MIN] [MAX] [THREADS] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 64
#define MAX_THREADS 64

static long n;
static size_t lo, hi;
static pthread_barrier_t start;

static void *ring_thread(void *arg) {
    void *ring[RING] = {0};
    uint64_t x = 88172645463325252ull ^ ((uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull);
    pthread_barrier_wait(&start);
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t size = lo + x % (hi - lo);
        int k = (int)(i % RING);
        free(ring[k]);
        char *p = malloc(size);
        if (!p) {
            perror("malloc");
            exit(1);
        }
        p[0] = 1;
        p[size - 1] = 1;
        ring[k] = p;
    }
    for (int k = 0; k < RING; k++) free(ring[k]);
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 200000;
    lo = argc > 2 ? (size_t)atol(argv[2]) : 256 << 10;
    hi = argc > 3 ? (size_t)atol(argv[3]) : 1 << 20;
    int threads = argc > 4 ? atoi(argv[4]) : 1;
    if (n <= 0 || lo == 0 || hi <= lo || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: large_ring [STEPS] [MIN] [MAX] [THREADS <= 64]\n");
        return 2;
    }
    pthread_t t[MAX_THREADS];
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, ring_thread, (void *)(uintptr_t)i);
    struct timespec a, b;
    pthread_barrier_wait(&start);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / ((double)n * threads));
    return 0;
}
