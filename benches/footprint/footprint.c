/* Footprint of small programs: resident memory after the first allocation and
 * after a small program's worth of work, whatever malloc is preloaded.
 *
 *   footprint first    one malloc(16)
 *   footprint small    ~240 KiB live of 8 B - 2 KiB blocks with varying lifetimes,
 *                      one thread (espresso-like), 200k allocations (or the
 *                      second argument's count: `footprint small 20000000` times
 *                      the allocator rather than the start-up)
 *   footprint threads  the same work split over 4 short-lived threads, two at a
 *                      time (glibc-thread-like)
 *
 * Prints: mode, the peak resident set (VmHWM), RssAnon and RssFile in KiB, from
 * /proc/self/status; with FOOTPRINT_MAPS=1 in the environment, first every mapping
 * with resident pages (KiB, permissions, length, file) from /proc/self/smaps.
 * Build: cc -O2 -pthread -o footprint footprint.c */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* Every mapping with resident pages: Rss in KiB, permissions, length, name. */
static void print_maps(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512], name[512] = "";
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        char perm[8], path[400] = "";
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %399s", &a, &b, perm, path) >= 3)
            snprintf(name, sizeof name, "%s %8lu KiB %s", perm, (b - a) >> 10, path);
        else if (strncmp(line, "Rss:", 4) == 0 && strtol(line + 4, NULL, 10) > 0)
            printf("  %6ld KiB  %s\n", strtol(line + 4, NULL, 10), name);
    }
    fclose(f);
}

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define SLOTS 1024

/* Keeps ~SLOTS live blocks of 8 B - 2 KiB (small ones far more often, as in
 * espresso), replacing a random one each step; touches every block. */
static long steps = 200000;

static void *work(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    void **slot = calloc(SLOTS, sizeof(void *));
    for (long i = 0; i < steps; i++) {
        uint64_t r = rng(&s);
        size_t k = r % SLOTS;
        unsigned sh = (r >> 16) % 9; /* 8 B << 0..8: more small than big */
        size_t size = 8 + ((r >> 24) % ((size_t)8 << sh));
        if (size > 2048) size = 2048;
        free(slot[k]);
        slot[k] = malloc(size);
        memset(slot[k], (int)i, size < 64 ? size : 64);
    }
    for (size_t k = 0; k < SLOTS; k++) free(slot[k]);
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "first";
    if (argc > 2) steps = atol(argv[2]);
    if (strcmp(mode, "first") == 0) {
        void *volatile p = malloc(16);
        (void)p;
    } else if (strcmp(mode, "small") == 0) {
        work((void *)1);
    } else if (strcmp(mode, "threads") == 0) {
        for (int round = 0; round < 2; round++) {
            pthread_t t[2];
            for (int i = 0; i < 2; i++)
                pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(round * 2 + i + 1));
            for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        }
    } else {
        fprintf(stderr, "usage: footprint first|small|threads\n");
        return 2;
    }
    if (getenv("FOOTPRINT_MAPS")) print_maps();
    printf("%s %ld %ld %ld\n", mode, status_kib("VmHWM"), status_kib("RssAnon"),
           status_kib("RssFile"));
    return 0;
}
