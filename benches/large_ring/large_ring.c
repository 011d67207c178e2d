/* A ring of 64 live blocks of 256 KiB-1 MiB (strata's Large range): each step frees
 * the oldest block and allocates one of a random size, touching its first and last
 * byte, so a block that comes from fresh or purged pages costs page faults. Prints
 * nanoseconds per step. Usage: large_ring [STEPS] [MIN] [MAX] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define RING 64

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    size_t lo = argc > 2 ? (size_t)atol(argv[2]) : 256 << 10;
    size_t hi = argc > 3 ? (size_t)atol(argv[3]) : 1 << 20;
    if (n <= 0 || lo == 0 || hi <= lo) {
        fprintf(stderr, "usage: large_ring [STEPS] [MIN] [MAX]\n");
        return 2;
    }
    void *ring[RING] = {0};
    uint64_t x = 88172645463325252ull;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t size = lo + x % (hi - lo);
        int k = (int)(i % RING);
        free(ring[k]);
        char *p = malloc(size);
        if (!p) {
            perror("malloc");
            return 1;
        }
        p[0] = 1;
        p[size - 1] = 1;
        ring[k] = p;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (int k = 0; k < RING; k++) free(ring[k]);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    return 0;
}
