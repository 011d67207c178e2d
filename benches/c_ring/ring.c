#include <stdlib.h>
#include <stdio.h>
#include <stdint.h>
#define RING 1024
static size_t sizes[4096];
__attribute__((noinline)) void measured_loop(void **ring, long n) {
    for (long i = 0; i < n; i++) {
        size_t k = i & (RING - 1);
        free(ring[k]);
        ring[k] = malloc(sizes[i & 4095]);
        *(volatile char *)ring[k] = 1;
    }
}
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 4096; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; sizes[i] = 8 + x % 505; }
    void *ring[RING];
    for (int i = 0; i < RING; i++) ring[i] = malloc(sizes[i]);
    measured_loop(ring, 100000);          /* warm-up, not collected: different call below */
    measured_loop(ring, n);
    for (int i = 0; i < RING; i++) free(ring[i]);
    printf("done\n");
    return 0;
}
