/* The malloc-large program of the public allocator benchmark suite, in C: 20 slots;
 * each of N iterations picks a random slot and replaces its buffer with a new
 * zero-initialised one of 5-25 MiB (`make_unique<char[]>(size)`: the new buffer is
 * allocated and cleared BEFORE the old one is freed). Prints the seconds taken.
 * Usage: malloc_large [ITERATIONS] [MIN_MIB] [MAX_MIB] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 20

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000;
    size_t lo = (argc > 2 ? (size_t)atol(argv[2]) : 5) << 20;
    size_t hi = (argc > 3 ? (size_t)atol(argv[3]) : 25) << 20;
    if (n <= 0 || hi < lo) {
        fprintf(stderr, "usage: malloc_large [ITERATIONS] [MIN_MIB] [MAX_MIB]\n");
        return 2;
    }
    char *slot[SLOTS] = {0};
    uint64_t x = 88172645463325252ull;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        int k = (int)(x % SLOTS);
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        size_t size = lo + x % (hi - lo + 1);
        /* `new char[size]()` value-initialises: operator new, then a memset. The
         * empty asm keeps the compiler from fusing the two into `calloc`, which
         * operator new never is. */
        char *p = malloc(size);
        __asm__ volatile("" : "+r"(p) : : "memory");
        if (!p) {
            perror("malloc");
            return 1;
        }
        memset(p, 0, size);
        __asm__ volatile("" : : "r"(p) : "memory");
        free(slot[k]);
        slot[k] = p;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    for (int k = 0; k < SLOTS; k++) free(slot[k]);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("%.3f\n", s);
    return 0;
}
