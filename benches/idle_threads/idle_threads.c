// Threads that churn and then idle or exit: what each allocator keeps resident.
//
// N threads each churn a ring of 512 blocks of 16-1,024 bytes (ITERS replacements,
// every block written), free the whole ring, and then sleep until the main thread
// has read the resident set size (VmRSS, /proc/self/status) after IDLE_MS of
// idling; then they exit, and it is read again IDLE_MS after the last one has
// been joined. Prints one line:
//   threads churn_ms mops rss_idle_mib rss_exit_mib
// Usage: idle_threads THREADS [ITERS] [IDLE_MS]
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long iters = 20000;
static pthread_barrier_t churned, go;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = atof(line + 6);
        }
    }
    if (f) {
        fclose(f);
    }
    return kb / 1024.0;
}

static void *worker(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *ring[512] = {0};
    for (long i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t size = 16 + x % 1009;
        int slot = (int)(i % 512);
        free(ring[slot]);
        ring[slot] = malloc(size);
        if (!ring[slot]) {
            abort();
        }
        memset(ring[slot], (int)i, size);
    }
    for (int i = 0; i < 512; i++) {
        free(ring[i]);
    }
    pthread_barrier_wait(&churned);
    pthread_barrier_wait(&go);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 256;
    if (argc > 2) {
        iters = atol(argv[2]);
    }
    int idle_ms = argc > 3 ? atoi(argv[3]) : 3000;
    pthread_t *t = calloc((size_t)n, sizeof *t);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 << 10);
    pthread_barrier_init(&churned, NULL, (unsigned)n + 1);
    pthread_barrier_init(&go, NULL, (unsigned)n + 1);
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        if (pthread_create(&t[i], &attr, worker, (void *)(uintptr_t)(i + 1)) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_barrier_wait(&churned);
    double churn = now_ms() - t0;
    usleep((useconds_t)idle_ms * 1000);
    double idle = rss_mib();
    pthread_barrier_wait(&go);
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
    }
    usleep((useconds_t)idle_ms * 1000);
    double exited = rss_mib();
    printf("%d %.1f %.2f %.1f %.1f\n", n, churn, (double)n * iters * 2 / churn / 1e3, idle, exited);
    free(t);
    return 0;
}
