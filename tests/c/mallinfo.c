/* glibc's introspection calls must describe the allocator that serves malloc.
 * Run as `mallinfo glibc` (no LD_PRELOAD) or `mallinfo strata` (LD_PRELOAD of
 * libstrata.so): the same checks of mallinfo2, mallinfo, malloc_info and mallopt
 * hold for both, except the parameters each honours. Prints "mallinfo: ok". */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strata.h"

#define REQUIRE(c, ...)                                                         \
    do {                                                                        \
        if (!(c)) {                                                             \
            fprintf(stderr, "mallinfo: %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
            exit(1);                                                            \
        }                                                                       \
    } while (0)

#define HUGE_N 10
#define HUGE_SIZE (2 << 20)
#define SMALL_N 40000

static size_t in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

int main(int argc, char **argv) {
    int strata = argc > 1 && strcmp(argv[1], "strata") == 0;
    static void *huge[HUGE_N], *small[SMALL_N];

    size_t before = in_use();
    for (int i = 0; i < HUGE_N; i++) {
        huge[i] = malloc(HUGE_SIZE);
        REQUIRE(huge[i], "malloc(2 MiB)");
        memset(huge[i], i, HUGE_SIZE);
    }
    for (int i = 0; i < SMALL_N; i++) {
        small[i] = malloc(100);
        REQUIRE(small[i], "malloc(100)");
        memset(small[i], i, 100);
    }
    size_t live = (size_t)HUGE_N * HUGE_SIZE + (size_t)SMALL_N * 100;
    struct mallinfo2 m = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    struct mallinfo mi = mallinfo();
#pragma GCC diagnostic pop
    size_t during = m.uordblks + m.hblkhd;
    printf("in use: before %zu, with %zu bytes live %zu\n", before, live, during);
    REQUIRE(during >= before + live, "in use %zu < %zu + %zu", during, before, live);
    REQUIRE(m.hblks >= HUGE_N, "hblks %zu", m.hblks);
    REQUIRE(m.uordblks + m.fordblks == m.arena, "uordblks %zu + fordblks %zu != arena %zu",
            m.uordblks, m.fordblks, m.arena);
    REQUIRE(m.keepcost <= m.fordblks, "keepcost %zu > fordblks %zu", m.keepcost, m.fordblks);
    REQUIRE((size_t)mi.uordblks == m.uordblks && (size_t)mi.hblkhd == m.hblkhd &&
                (size_t)mi.arena == m.arena,
            "mallinfo disagrees with mallinfo2");

    FILE *f = tmpfile();
    REQUIRE(f, "tmpfile");
    REQUIRE(malloc_info(0, f) == 0, "malloc_info(0, f)");
    REQUIRE(malloc_info(1, f) == EINVAL, "malloc_info(1, f) must be EINVAL");
    long len = ftell(f);
    REQUIRE(len > 0, "malloc_info wrote nothing");
    char *xml = calloc(1, (size_t)len + 1);
    REQUIRE(xml, "calloc");
    rewind(f);
    REQUIRE(fread(xml, 1, (size_t)len, f) == (size_t)len, "fread");
    fclose(f);
    REQUIRE(strncmp(xml, "<malloc version=", 16) == 0, "malloc_info: %.40s", xml);
    REQUIRE(strstr(xml, "</malloc>"), "malloc_info: unterminated");
    if (strata)
        REQUIRE(strstr(xml, "version=\"strata-1\"") && strstr(xml, "<total type=\"huge\" count=\""),
                "malloc_info is not strata's: %.60s", xml);
    free(xml);

    for (int i = 0; i < HUGE_N; i++)
        free(huge[i]);
    for (int i = 0; i < SMALL_N; i++)
        free(small[i]);
    size_t after = in_use();
    printf("in use after free: %zu\n", after);
    REQUIRE(after + live / 2 <= during, "in use %zu after freeing %zu of %zu", after, live, during);

    /* mallopt: 1 only for what the allocator honours. */
    REQUIRE(mallopt(M_ARENA_MAX, 2) == !strata, "mallopt(M_ARENA_MAX)");
    REQUIRE(mallopt(M_MMAP_THRESHOLD, 1 << 20) == !strata, "mallopt(M_MMAP_THRESHOLD)");
    REQUIRE(mallopt(M_TRIM_THRESHOLD, 1 << 20) == !strata, "mallopt(M_TRIM_THRESHOLD)");
    if (strata) {
        /* (glibc returns 1 for parameters it does not know.) */
        REQUIRE(mallopt(STRATA_M_PURGE_DELAY_MS, 0) == 1, "mallopt(STRATA_M_PURGE_DELAY_MS)");
        REQUIRE(mallopt(STRATA_M_HUGE_CACHE_BYTES, 1 << 20) == 1, "mallopt(HUGE_CACHE)");
        REQUIRE(mallopt(STRATA_M_THREAD_CACHE_BYTES, 1 << 20) == 1, "mallopt(THREAD_CACHE)");
        REQUIRE(mallopt(STRATA_M_THREAD_CACHE_POOL_BYTES, 16 << 20) == 1, "mallopt(THREAD_CACHE_POOL)");
        REQUIRE(mallopt(STRATA_M_PURGE_DELAY_MS, -1) == 0, "mallopt(..., -1) must fail");
        REQUIRE(mallopt(-12345, 1) == 0, "mallopt of an unknown parameter must fail");
    }

    malloc_stats(); /* strata's table (or glibc's arenas) on stderr */
    printf("mallinfo: ok\n");
    return 0;
}
