/* What moving a range with mremap(MREMAP_FIXED) costs by the number of OS mappings
 * (VMAs) it spans: a 15 MiB resident range, cut into K mappings (every other slice
 * marked MADV_DONTFORK), is moved N times into a fresh mapping. Prints the system
 * time a move. Needs Linux 6.17 or later for K > 1 (moves across mappings).
 * Usage: mremap_vmas K N      e.g. for k in 1 8 32 64; do ./mremap_vmas $k 3000; done */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

static double sys_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6;
}

int main(int argc, char **argv) {
    size_t len = (size_t)15 << 20;
    int k = argc > 1 ? atoi(argv[1]) : 1, n = argc > 2 ? atoi(argv[2]) : 3000;
    if (k < 1 || n < 1) {
        fprintf(stderr, "usage: mremap_vmas K N\n");
        return 2;
    }
    char *src = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (src == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(src, 1, len);
    size_t slice = len / k / 4096 * 4096;
    for (int j = 1; j < k; j += 2) madvise(src + j * slice, slice, MADV_DONTFORK);
    double t0 = sys_s();
    for (int i = 0; i < n; i++) {
        char *dst = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dst == MAP_FAILED || mremap(src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst) == MAP_FAILED) {
            perror("mmap/mremap");
            return 1;
        }
        src = dst;
    }
    printf("%d mappings: %.1f us of system time a move\n", k, (sys_s() - t0) / n * 1e6);
    return 0;
}
