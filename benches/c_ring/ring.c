#include <stdlib.h>
#include <stdio.h>
#include <stdint.h>
/* ring N [RING MIN MAX]: N times, free the oldest of RING live blocks (a power of
   two, default 1,024) and malloc one of MIN-MAX bytes (default 8-512) in its
   place, writing its first byte. */
static size_t sizes[4096];
__attribute__((noinline)) void measured_loop(void **ring, long n, long mask) {
    for (long i = 0; i < n; i++) {
        size_t k = i & mask;
        free(ring[k]);
        ring[k] = malloc(sizes[i & 4095]);
        *(volatile char *)ring[k] = 1;
    }
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long ring_len = argc > 2 ? atol(argv[2]) : 1024;
    long lo = argc > 3 ? atol(argv[3]) : 8, hi = argc > 4 ? atol(argv[4]) : 512;
    if (ring_len <= 0 || (ring_len & (ring_len - 1)) || lo < 1 || hi < lo) {
        fprintf(stderr, "usage: ring N [RING (a power of two) MIN MAX]\n");
        return 2;
    }
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; sizes[i] = lo + x % (hi - lo + 1); }
    void **ring = malloc(ring_len * sizeof *ring);
    if (!ring) return 1;
    for (long i = 0; i < ring_len; i++) ring[i] = malloc(sizes[i & 4095]);
    measured_loop(ring, 100000, ring_len - 1); /* warm-up, not collected: different call below */
    measured_loop(ring, n, ring_len - 1);
    for (long i = 0; i < ring_len; i++) free(ring[i]);
    free(ring);
    printf("done\n");
    return 0;
}
