/*
 * api_test.c - checks every allocation function that libstrata.so exports, with
 * normal and edge arguments, against glibc's semantics (Debian 12, glibc 2.36).
 *
 * The same binary runs with and without LD_PRELOAD=libstrata.so: without it, it
 * checks glibc itself, which keeps the expectations honest. The few checks that
 * only strata promises (foreign and interior pointers are ignored by free and
 * realloc, strata_release_memory, strata_stats_print, strata_heap_map_write, the
 * cfree and __posix_memalign exports, pvalloc(0) giving a whole page) run only
 * when strata is loaded, found with dlsym(RTLD_DEFAULT, ...). Where glibc 2.36
 * differs from a naive reading of the rules, the comment at the check says so
 * (pvalloc(0), memalign's rounding of alignments, 2^63 alignments).
 *
 * The pointer tests run in forked children, so that a heap corrupted by them is
 * reported as failed checks and a crash, and the later tests still run.
 *
 * Every failed check prints "FAIL file:line: condition: details" to stderr; the
 * exit status is 1 if any check failed. The last line on stdout is
 * "api_test: N checks passed" (with ", M FAILED" if any failed).
 *
 * Usage: api_test [NAME-SUBSTRING...]   (default: every test)
 *
 * Build: cc -O2 -pthread -Wall -Werror -Iinclude tests/c/api_test.c -o api_test -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "strata.h"

/* ---- checking ------------------------------------------------------------ */

static unsigned long checks_passed, checks_failed;
/* In a child of run_isolated: its counts, in memory shared with the parent. */
static unsigned long *child_counts;

#define CHECK(cond, ...) check_impl(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)

/* A fatal condition: the rest of the test cannot go on. */
#define REQUIRE(cond, ...)                                                        \
    do {                                                                          \
        if (!check_impl(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)) {      \
            fprintf(stderr, "api_test: aborting after a fatal failure\n");        \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

__attribute__((format(printf, 5, 6))) static int check_impl(int ok, const char *file, int line,
                                                            const char *cond, const char *fmt,
                                                            ...) {
    if (child_counts) child_counts[ok ? 0 : 1]++;
    if (ok) {
        checks_passed++;
        return 1;
    }
    checks_failed++;
    fprintf(stderr, "FAIL %s:%d: %s: ", file, line, cond);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

/*
 * Every allocation function is called through a volatile pointer, so that the
 * compiler can neither fold nor elide the calls (malloc(SIZE_MAX) == NULL,
 * malloc+free pairs), nor warn about sizes it can see are too large.
 */
static void *(*volatile f_malloc)(size_t) = malloc;
static void (*volatile f_free)(void *) = free;
static void *(*volatile f_calloc)(size_t, size_t) = calloc;
static void *(*volatile f_realloc)(void *, size_t) = realloc;
static void *(*volatile f_reallocarray)(void *, size_t, size_t) = reallocarray;
static int (*volatile f_posix_memalign)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile f_aligned_alloc)(size_t, size_t) = aligned_alloc;
static void *(*volatile f_memalign)(size_t, size_t) = memalign;
static void *(*volatile f_valloc)(size_t) = valloc;
static void *(*volatile f_pvalloc)(size_t) = pvalloc;
static size_t (*volatile f_usable)(void *) = malloc_usable_size;
static int (*volatile f_malloc_trim)(size_t) = malloc_trim;

/* strata's own functions, or NULL when strata is not loaded. */
static __typeof__(strata_release_memory) *p_release_memory;
static __typeof__(strata_stats_print) *p_stats_print;
static __typeof__(strata_stats_json) *p_stats_json;
static __typeof__(strata_heap_map_write) *p_heap_map_write;
static __typeof__(strata_background_purge) *p_background_purge;
static int strata_loaded;
static size_t page_size;

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static int is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

/* ---- content patterns ---------------------------------------------------- */

/* Word i of the pattern `seed` (distinct for distinct i: a bijection of seed + i). */
static inline uint64_t pattern_word(uint64_t seed, size_t i) {
    uint64_t w = (seed + i) * 0x9E3779B97F4A7C15ull;
    return w ^ (w >> 29);
}

static void fill(void *p, size_t n, uint64_t seed) {
    unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = pattern_word(seed, i / 8);
        memcpy(b + i, &w, 8);
    }
    if (i < n) {
        uint64_t w = pattern_word(seed, i / 8);
        memcpy(b + i, &w, n - i);
    }
}

/* Returns the offset of the first byte that differs from the pattern, or SIZE_MAX. */
static size_t verify(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = pattern_word(seed, i / 8), got;
        memcpy(&got, b + i, 8);
        if (got != w) {
            for (size_t k = 0; k < 8; k++)
                if (b[i + k] != ((const unsigned char *)&w)[k]) return i + k;
        }
    }
    if (i < n) {
        uint64_t w = pattern_word(seed, i / 8);
        for (size_t k = 0; i + k < n; k++)
            if (b[i + k] != ((const unsigned char *)&w)[k]) return i + k;
    }
    return SIZE_MAX;
}

/* For blocks above 4 MiB, fill / verify only the first and the last MiB (the edges
 * are where a wrong size or an overlap shows), to keep page faults cheap. */
#define EDGE ((size_t)1 << 20)
static void fill_edges(void *p, size_t n, uint64_t seed) {
    if (n <= 4 * EDGE) {
        fill(p, n, seed);
    } else {
        fill(p, EDGE, seed);
        fill((char *)p + n - EDGE, EDGE, seed + 1);
    }
}

static size_t verify_edges(const void *p, size_t n, uint64_t seed) {
    if (n <= 4 * EDGE) return verify(p, n, seed);
    size_t off = verify(p, EDGE, seed);
    if (off != SIZE_MAX) return off;
    off = verify((const char *)p + n - EDGE, EDGE, seed + 1);
    return off == SIZE_MAX ? off : n - EDGE + off;
}

/* Returns the offset of the first non-zero byte, or SIZE_MAX. */
static size_t first_nonzero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i]) return i;
    return SIZE_MAX;
}

static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * page_size;
}

/* Number of blocks among ps[0..n) whose usable range overlaps another's. */
static int overlapping_blocks(void *const *ps, int n) {
    struct range {
        uintptr_t lo, hi;
    } r[256];
    int bad = 0;
    if (n > 256) n = 256;
    for (int i = 0; i < n; i++) {
        r[i].lo = (uintptr_t)ps[i];
        r[i].hi = r[i].lo + (f_usable(ps[i]) ? f_usable(ps[i]) : 1);
    }
    for (int i = 1; i < n; i++) /* insertion sort by address */
        for (int j = i; j > 0 && r[j].lo < r[j - 1].lo; j--) {
            struct range t = r[j];
            r[j] = r[j - 1];
            r[j - 1] = t;
        }
    for (int i = 1; i < n; i++) bad += r[i].lo < r[i - 1].hi;
    return bad;
}

/* ---- malloc / free ------------------------------------------------------- */

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static void test_malloc_zero_and_free_null(void) {
    enum { N = 1000 };
    static void *ps[N];
    for (int i = 0; i < N; i++) {
        ps[i] = f_malloc(0);
        CHECK(ps[i] != NULL, "malloc(0) #%d returned NULL", i);
        CHECK(is_aligned(ps[i], 16), "malloc(0) = %p is not 16-byte aligned", ps[i]);
    }
    qsort(ps, N, sizeof ps[0], cmp_ptr);
    int dups = 0;
    for (int i = 1; i < N; i++) dups += ps[i] == ps[i - 1];
    CHECK(dups == 0, "%d of %d live malloc(0) pointers are duplicates", dups, N);
    for (int i = 0; i < N; i++) f_free(ps[i]);

    errno = 0;
    f_free(NULL);
    CHECK(errno == 0, "free(NULL) set errno to %d", errno);
    CHECK(f_usable(NULL) == 0, "malloc_usable_size(NULL) = %zu", f_usable(NULL));

    void *p = f_calloc(0, 0);
    CHECK(p != NULL, "calloc(0, 0) returned NULL");
    f_free(p);
    p = f_calloc(0, SIZE_MAX);
    CHECK(p != NULL, "calloc(0, SIZE_MAX) returned NULL");
    f_free(p);
    p = f_calloc(SIZE_MAX, 0);
    CHECK(p != NULL, "calloc(SIZE_MAX, 0) returned NULL");
    f_free(p);
}

/* Every size from 0 to 4 KiB, then every power of two up to 32 MiB and a few sizes
 * around it: 16-byte aligned, usable >= size, and every usable byte writable without
 * touching the neighbours (four blocks of a size are live together, each filled over
 * its whole usable size; above 4 MiB over the first and last MiB of it). */
static void test_usable_size_writable_and_aligned(void) {
    size_t sizes[8192];
    size_t n = 0;
    for (size_t s = 0; s <= 4096; s++) sizes[n++] = s;
    for (size_t s = 8192; s <= 32 * MiB; s *= 2) {
        size_t d[] = {s - 17, s - 1, s, s + 1, s + 15, s + s / 2 + 3};
        for (size_t k = 0; k < sizeof d / sizeof d[0]; k++) sizes[n++] = d[k];
    }
    unsigned long bad_align = 0, bad_usable = 0, bad_content = 0;
    for (size_t i = 0; i < n; i++) {
        size_t s = sizes[i];
        void *b[4];
        size_t u[4];
        for (int k = 0; k < 4; k++) {
            b[k] = f_malloc(s);
            REQUIRE(b[k] != NULL, "malloc(%zu) failed (errno %d)", s, errno);
            u[k] = f_usable(b[k]);
            if (!is_aligned(b[k], 16) && bad_align++ < 5)
                fprintf(stderr, "  malloc(%zu) = %p not 16-aligned\n", s, b[k]);
            if (u[k] < s && bad_usable++ < 5)
                fprintf(stderr, "  malloc_usable_size(malloc(%zu)) = %zu\n", s, u[k]);
            fill_edges(b[k], u[k], 1000 * i + k);
        }
        for (int k = 0; k < 4; k++) {
            size_t off = verify_edges(b[k], u[k], 1000 * i + k);
            if (off != SIZE_MAX && bad_content++ < 5)
                fprintf(stderr, "  size %zu block %d (usable %zu): byte %zu overwritten\n", s, k,
                        u[k], off);
            f_free(b[k]);
        }
    }
    CHECK(bad_align == 0, "%lu blocks not 16-byte aligned (sizes 0..32 MiB)", bad_align);
    CHECK(bad_usable == 0, "%lu blocks with malloc_usable_size < size", bad_usable);
    CHECK(bad_content == 0,
          "%lu blocks whose usable bytes were overwritten by a neighbour's usable bytes",
          bad_content);
}

/* ---- failures: NULL + ENOMEM ----------------------------------------------- */

#define EXPECT_ENOMEM(expr, what)                                                   \
    do {                                                                            \
        errno = 0;                                                                  \
        void *r_ = (expr);                                                          \
        int e_ = errno;                                                             \
        CHECK(r_ == NULL && e_ == ENOMEM, "%s returned %p, errno %d (want NULL, ENOMEM)", \
              what, r_, e_);                                                        \
        if (r_) f_free(r_);                                                         \
    } while (0)

static void test_impossible_sizes_fail_with_enomem(void) {
    const size_t huge[] = {SIZE_MAX,         SIZE_MAX - 1,          SIZE_MAX - 15,
                           SIZE_MAX - 4095,  SIZE_MAX - 2 * MiB,    (size_t)PTRDIFF_MAX + 1,
                           PTRDIFF_MAX,      PTRDIFF_MAX - 4096,    (size_t)1 << 50,
                           (size_t)1 << 47};
    /* Sizes the address space could hold but the system could never back: glibc's
     * mmap refuses them under the default overcommit heuristic (mode 0: a
     * mapping larger than RAM + swap fails) and under mode 2 (strict), but
     * grants them under mode 1 (always overcommit), so only modes 0 and 2 check
     * them. */
    const size_t unbacked[] = {(size_t)1 << 46, (size_t)1 << 44};
    int overcommit = 0;
    FILE *oc = fopen("/proc/sys/vm/overcommit_memory", "r");
    if (oc) {
        if (fscanf(oc, "%d", &overcommit) != 1) overcommit = 0;
        fclose(oc);
    }
    size_t n_sizes = sizeof huge / sizeof huge[0] + (overcommit == 1 ? 0 : 2);
    char what[128];
    for (size_t i = 0; i < n_sizes; i++) {
        size_t s = i < sizeof huge / sizeof huge[0] ? huge[i] : unbacked[i - sizeof huge / sizeof huge[0]];
        snprintf(what, sizeof what, "malloc(%#zx)", s);
        EXPECT_ENOMEM(f_malloc(s), what);
        snprintf(what, sizeof what, "calloc(1, %#zx)", s);
        EXPECT_ENOMEM(f_calloc(1, s), what);
        snprintf(what, sizeof what, "realloc(NULL, %#zx)", s);
        EXPECT_ENOMEM(f_realloc(NULL, s), what);
        snprintf(what, sizeof what, "memalign(64, %#zx)", s);
        EXPECT_ENOMEM(f_memalign(64, s), what);
        snprintf(what, sizeof what, "aligned_alloc(4096, %#zx)", s);
        EXPECT_ENOMEM(f_aligned_alloc(4096, s), what);
        snprintf(what, sizeof what, "valloc(%#zx)", s);
        EXPECT_ENOMEM(f_valloc(s), what);
        snprintf(what, sizeof what, "pvalloc(%#zx)", s);
        EXPECT_ENOMEM(f_pvalloc(s), what);

        void *sentinel = (void *)0x1234, *q = sentinel;
        int r = f_posix_memalign(&q, 16, s);
        CHECK(r == ENOMEM && q == sentinel, "posix_memalign(16, %#zx) = %d, *memptr %p", s, r, q);
        r = f_posix_memalign(&q, 2 * MiB, s);
        CHECK(r == ENOMEM && q == sentinel, "posix_memalign(2 MiB, %#zx) = %d, *memptr %p", s,
              r, q);

        /* A failed realloc leaves the block as it was. */
        void *p = f_malloc(100);
        REQUIRE(p != NULL, "malloc(100)");
        fill(p, 100, s);
        snprintf(what, sizeof what, "realloc(p, %#zx)", s);
        EXPECT_ENOMEM(f_realloc(p, s), what);
        CHECK(verify(p, 100, s) == SIZE_MAX, "block changed by a failed realloc(p, %#zx)", s);
        CHECK(f_usable(p) >= 100, "usable size %zu after a failed realloc", f_usable(p));
        f_free(p);
    }

    /* calloc multiplication overflow, and products that are merely too large. */
    const size_t pairs[][2] = {{SIZE_MAX, 2},
                               {2, SIZE_MAX},
                               {(size_t)1 << 32, (size_t)1 << 32},
                               {SIZE_MAX / 2 + 1, 2},
                               {(SIZE_MAX / 3) + 1, 3},
                               {65537, 281470681808895},   /* overflows by a little */
                               {(size_t)1 << 25, (size_t)1 << 25}, /* 2^50: no overflow */
                               {SIZE_MAX / 16, 16}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        size_t a = pairs[i][0], b = pairs[i][1];
        snprintf(what, sizeof what, "calloc(%#zx, %#zx)", a, b);
        EXPECT_ENOMEM(f_calloc(a, b), what);
        snprintf(what, sizeof what, "reallocarray(NULL, %#zx, %#zx)", a, b);
        EXPECT_ENOMEM(f_reallocarray(NULL, a, b), what);
        void *p = f_malloc(48);
        REQUIRE(p != NULL, "malloc(48)");
        fill(p, 48, i);
        snprintf(what, sizeof what, "reallocarray(p, %#zx, %#zx)", a, b);
        EXPECT_ENOMEM(f_reallocarray(p, a, b), what);
        CHECK(verify(p, 48, i) == SIZE_MAX, "block changed by a failed reallocarray");
        f_free(p);
    }

    /* reallocarray without overflow is realloc. */
    void *p = f_reallocarray(NULL, 10, 100);
    CHECK(p != NULL && f_usable(p) >= 1000, "reallocarray(NULL, 10, 100) = %p", p);
    if (p) {
        fill(p, 1000, 77);
        void *q = f_reallocarray(p, 1000, 100);
        CHECK(q != NULL && f_usable(q) >= 100000 && verify(q, 1000, 77) == SIZE_MAX,
              "reallocarray(p, 1000, 100) = %p lost the content", q);
        if (q) p = q;
        q = f_reallocarray(p, 3, 5);
        CHECK(q != NULL && f_usable(q) >= 15 && verify(q, 15, 77) == SIZE_MAX,
              "reallocarray(p, 3, 5) = %p lost the content", q);
        f_free(q ? q : p);
    }
}

/* ---- calloc -------------------------------------------------------------- */

/* Blocks of each size are dirtied over their whole usable size and freed; calloc
 * of the same sizes must then return zeroed memory, also after the free pages
 * were given back to the OS (strata_release_memory / malloc_trim) and when a
 * large calloc reuses free spans of which some were purged and some not. */
static void test_calloc_zeroes_reused_memory(void) {
    const size_t sizes[] = {1,     8,       16,       24,       100,     512,     1000,
                            4096,  10000,   65536,    100000,   256 * KiB, 300 * KiB,
                            1 * MiB, 2 * MiB, 3 * MiB + 5, 8 * MiB};
    enum { MAXN = 64 };
    void *ps[MAXN];
    unsigned long bad = 0;
    for (int round = 0; round < 4; round++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t s = sizes[si];
            int n = s >= MiB ? 6 : MAXN;
            for (int i = 0; i < n; i++) {
                ps[i] = f_malloc(s);
                REQUIRE(ps[i] != NULL, "malloc(%zu)", s);
                memset(ps[i], 0xA5, f_usable(ps[i]));
            }
            CHECK(overlapping_blocks(ps, n) == 0, "round %d: %d live blocks of %zu overlap",
                  round, overlapping_blocks(ps, n), s);
            for (int i = 0; i < n; i++) f_free(ps[i]);
            if (round == 1 && p_release_memory) p_release_memory();
            if (round == 2) f_malloc_trim(0);
            for (int i = 0; i < n; i++) {
                /* Alternate the calloc shapes: (1, s), (s, 1), (s/8, 8) (all s bytes). */
                void *p = (i % 3 == 0)                ? f_calloc(1, s)
                          : (i % 3 == 1 || s % 8 != 0) ? f_calloc(s, 1)
                                                       : f_calloc(s / 8, 8);
                REQUIRE(p != NULL, "calloc for %zu bytes", s);
                ps[i] = p;
                size_t off = first_nonzero(p, s);
                if (off != SIZE_MAX && bad++ < 5)
                    fprintf(stderr, "  round %d: calloc of %zu bytes: byte %zu is %#x\n", round,
                            s, off, ((unsigned char *)p)[off]);
                CHECK(is_aligned(p, 16), "calloc(%zu) = %p not 16-aligned", s, p);
            }
            CHECK(overlapping_blocks(ps, n) == 0, "round %d: %d live calloc blocks of %zu overlap",
                  round, overlapping_blocks(ps, n), s);
            for (int i = 0; i < n; i++) {
                memset(ps[i], 0x5A, s);
                f_free(ps[i]);
            }
        }
    }
    CHECK(bad == 0, "%lu calloc blocks were not zero after reusing dirty memory", bad);

    /* Neighbouring free spans, one purged and one dirty, merged by a larger calloc. */
    const size_t span_sizes[] = {64 * KiB, 200 * KiB, 1 * MiB, 3 * MiB};
    bad = 0;
    for (size_t si = 0; si < sizeof span_sizes / sizeof span_sizes[0]; si++) {
        size_t s = span_sizes[si];
        for (int order = 0; order < 2; order++) {
            void *a = f_malloc(s), *b = f_malloc(s), *c = f_malloc(s);
            REQUIRE(a && b && c, "malloc(%zu) x3", s);
            memset(a, 0xC3, s);
            memset(b, 0xC3, s);
            memset(c, 0xC3, s);
            f_free(order ? b : a);
            if (p_release_memory) p_release_memory();
            f_malloc_trim(0);
            f_free(order ? a : b);
            for (int k = 1; k <= 3; k++) {
                void *z = f_calloc(1, k * s);
                REQUIRE(z != NULL, "calloc(1, %zu)", k * s);
                size_t off = first_nonzero(z, k * s);
                if (off != SIZE_MAX && bad++ < 5)
                    fprintf(stderr, "  calloc(%zu) over half-purged spans: byte %zu is %#x\n",
                            k * s, off, ((unsigned char *)z)[off]);
                f_free(z);
            }
            f_free(c);
        }
    }
    CHECK(bad == 0, "%lu calloc blocks over half-purged free spans were not zero", bad);
}

/* ---- realloc ------------------------------------------------------------- */

static void test_realloc_null_and_zero(void) {
    errno = 0;
    void *p = f_realloc(NULL, 100);
    CHECK(p != NULL && f_usable(p) >= 100 && is_aligned(p, 16), "realloc(NULL, 100) = %p", p);
    if (p) memset(p, 1, 100);
    /* glibc 2.36: realloc(p, 0) frees p and returns NULL. */
    void *q = f_realloc(p, 0);
    CHECK(q == NULL, "realloc(p, 0) = %p (want NULL, p freed)", q);
    if (q) f_free(q);

    p = f_realloc(NULL, 0);
    CHECK(p != NULL, "realloc(NULL, 0) returned NULL (want malloc(0))");
    f_free(p);

    /* realloc(p, 0) of a large and a huge block. */
    p = f_malloc(500 * KiB);
    CHECK(p && f_realloc(p, 0) == NULL, "realloc(500 KiB block, 0) != NULL");
    p = f_malloc(40 * MiB);
    CHECK(p && f_realloc(p, 0) == NULL, "realloc(40 MiB block, 0) != NULL");
}

/* Content survives realloc growth and shrinking through small sizes, 300 KiB,
 * 2 MiB, 8 MiB and 40 MiB; every result is 16-aligned with enough usable size. */
static void realloc_chain(void *p, size_t cur, uint64_t seed, const char *start) {
    const size_t chain[] = {1,       7,         16,      17,      100,       1000,
                            4096,    5000,      64 * KiB, 300 * KiB, 2 * MiB, 2 * MiB + 1,
                            8 * MiB, 40 * MiB,  8 * MiB + 4096, 8 * MiB, 2 * MiB,
                            300 * KiB, 299 * KiB, 70000, 5000,   200,      17,
                            1,       300 * KiB, 24,      8 * MiB, 33,       2 * MiB,
                            1};
    fill(p, cur, seed);
    for (size_t i = 0; i < sizeof chain / sizeof chain[0]; i++) {
        size_t n = chain[i];
        void *q = f_realloc(p, n);
        REQUIRE(q != NULL, "realloc(%zu -> %zu) from %s failed", cur, n, start);
        size_t keep = cur < n ? cur : n;
        size_t off = verify(q, keep, seed);
        CHECK(off == SIZE_MAX, "realloc %zu -> %zu (from %s): byte %zu of the kept %zu changed",
              cur, n, start, off, keep);
        CHECK(is_aligned(q, 16), "realloc(%zu -> %zu) = %p not 16-aligned", cur, n, q);
        CHECK(f_usable(q) >= n, "realloc to %zu: usable %zu", n, f_usable(q));
        seed += 0x10001;
        fill(q, n, seed);
        p = q;
        cur = n;
    }
    f_free(p);
}

static void test_realloc_preserves_content(void) {
    realloc_chain(f_malloc(10), 10, 1, "malloc(10)");
    realloc_chain(f_malloc(3 * MiB), 3 * MiB, 2, "malloc(3 MiB)");
    void *p = NULL;
    REQUIRE(f_posix_memalign(&p, 4096, 5000) == 0, "posix_memalign(4096, 5000)");
    realloc_chain(p, 5000, 3, "posix_memalign(4096, 5000)");
    p = f_memalign(4 * MiB, 100);
    REQUIRE(p != NULL, "memalign(4 MiB, 100)");
    realloc_chain(p, 100, 4, "memalign(4 MiB, 100)");
    realloc_chain(f_calloc(1, 300 * KiB), 300 * KiB, 5, "calloc(300 KiB)");

    /* Growing by small steps (the in-place paths), then shrinking by small steps. */
    size_t cur = 1;
    p = f_malloc(cur);
    fill(p, cur, 9);
    unsigned long bad = 0;
    for (size_t n = 2; n < 3 * MiB; n += n / 7 + 1) {
        void *q = f_realloc(p, n);
        REQUIRE(q != NULL, "realloc to %zu", n);
        if (verify(q, cur, 9) != SIZE_MAX && bad++ < 5)
            fprintf(stderr, "  realloc step %zu -> %zu lost content\n", cur, n);
        fill(q, n, 9);
        p = q;
        cur = n;
    }
    for (size_t n = cur - cur / 9; n > 0; n -= n / 9 + 1) {
        void *q = f_realloc(p, n);
        REQUIRE(q != NULL, "realloc to %zu", n);
        if (verify(q, n, 9) != SIZE_MAX && bad++ < 5)
            fprintf(stderr, "  realloc step %zu -> %zu lost content\n", cur, n);
        p = q;
        cur = n;
    }
    f_free(p);
    CHECK(bad == 0, "%lu small-step reallocs lost content", bad);
}

/* ---- aligned allocation ---------------------------------------------------- */

static void test_aligned_allocation(void) {
    unsigned long bad = 0;
    /* Power-of-two alignments 16 .. 64 MiB through all three functions; the three
     * blocks are live together and filled in full to catch overlaps. */
    for (size_t a = 16; a <= 64 * MiB; a *= 2) {
        const size_t sizes[] = {1, 24, a / 2 + 1, a, a + 1, 3 * a / 2};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t s = sizes[si];
            if (s > 96 * MiB) continue;
            void *b[3] = {NULL, NULL, NULL};
            int r = f_posix_memalign(&b[0], a, s);
            CHECK(r == 0 && b[0] != NULL, "posix_memalign(%zu, %zu) = %d", a, s, r);
            errno = 0;
            b[1] = f_memalign(a, s);
            CHECK(b[1] != NULL, "memalign(%zu, %zu) failed, errno %d", a, s, errno);
            b[2] = f_aligned_alloc(a, s);
            CHECK(b[2] != NULL, "aligned_alloc(%zu, %zu) failed, errno %d", a, s, errno);
            for (int k = 0; k < 3; k++) {
                if (!b[k]) continue;
                if ((!is_aligned(b[k], a) || f_usable(b[k]) < s) && bad++ < 8)
                    fprintf(stderr, "  %s(%zu, %zu) = %p, usable %zu\n",
                            k == 0 ? "posix_memalign" : k == 1 ? "memalign" : "aligned_alloc",
                            a, s, b[k], f_usable(b[k]));
                fill_edges(b[k], s, a * 3 + k);
            }
            for (int k = 0; k < 3; k++) {
                if (!b[k]) continue;
                if (verify_edges(b[k], s, a * 3 + k) != SIZE_MAX && bad++ < 8)
                    fprintf(stderr, "  aligned block %zu/%zu #%d overwritten\n", a, s, k);
                f_free(b[k]);
            }
        }
    }
    CHECK(bad == 0, "%lu aligned blocks misaligned, too small or overlapping", bad);

    /* Alignments below 16, and sizeof(void *) for posix_memalign: 16-aligned blocks. */
    const size_t small_aligns[] = {0, 1, 2, 4, 8};
    for (size_t i = 0; i < sizeof small_aligns / sizeof small_aligns[0]; i++) {
        size_t a = small_aligns[i];
        void *p = f_memalign(a, 40);
        CHECK(p && is_aligned(p, 16) && f_usable(p) >= 40, "memalign(%zu, 40) = %p", a, p);
        f_free(p);
        p = f_aligned_alloc(a, 40);
        CHECK(p && is_aligned(p, 16) && f_usable(p) >= 40, "aligned_alloc(%zu, 40) = %p", a, p);
        f_free(p);
    }
    void *p = NULL;
    int r = f_posix_memalign(&p, sizeof(void *), 40);
    CHECK(r == 0 && p && is_aligned(p, 16), "posix_memalign(8, 40) = %d, %p", r, p);
    f_free(p);
    p = NULL;
    r = f_posix_memalign(&p, 16, 0);
    CHECK(r == 0 && p != NULL, "posix_memalign(16, 0) = %d, %p", r, p);
    f_free(p);

    /* posix_memalign: EINVAL for an alignment that is not a power-of-two multiple of
     * sizeof(void *); *memptr untouched. */
    const size_t bad_aligns[] = {0,  1,  2,    4,     12,   24,   48,          100,
                                 3000, 4097, 65535, 65537, 3 * MiB, SIZE_MAX, SIZE_MAX / 2,
                                 (SIZE_MAX / 2 + 1) + 8};
    for (size_t i = 0; i < sizeof bad_aligns / sizeof bad_aligns[0]; i++) {
        void *sentinel = (void *)0x5678, *q = sentinel;
        r = f_posix_memalign(&q, bad_aligns[i], 64);
        CHECK(r == EINVAL && q == sentinel, "posix_memalign(&p, %#zx, 64) = %d, *memptr %p",
              bad_aligns[i], r, q);
    }
    /* The largest power of two is a valid alignment; no such block can exist. */
    {
        void *sentinel = (void *)0x5678, *q = sentinel;
        r = f_posix_memalign(&q, SIZE_MAX / 2 + 1, 64);
        CHECK(r == ENOMEM && q == sentinel, "posix_memalign(&p, 2^63, 64) = %d, *memptr %p", r,
              q);
    }

    /* memalign / aligned_alloc (glibc 2.36): a non-power-of-two alignment is rounded up
     * to the next power of two; one above 2^63 is EINVAL; one that rounds to 2^63 is
     * ENOMEM (no such block can exist). */
    const size_t odd_aligns[][2] = {{3, 16},         {17, 32},        {24, 32},
                                    {48, 64},        {100, 128},      {3000, 4096},
                                    {4097, 8192},    {5000, 8192},    {65535, 65536},
                                    {MiB + 1, 2 * MiB}, {3 * MiB, 4 * MiB}};
    for (size_t i = 0; i < sizeof odd_aligns / sizeof odd_aligns[0]; i++) {
        size_t a = odd_aligns[i][0], want = odd_aligns[i][1];
        for (int k = 0; k < 2; k++) {
            const char *fn = k ? "aligned_alloc" : "memalign";
            void *b[8];
            for (int j = 0; j < 8; j++) {
                b[j] = k ? f_aligned_alloc(a, 100 + j) : f_memalign(a, 100 + j);
                CHECK(b[j] && is_aligned(b[j], want) && f_usable(b[j]) >= 100u + j,
                      "%s(%zu, %d) = %p, want %zu-aligned", fn, a, 100 + j, b[j], want);
            }
            for (int j = 0; j < 8; j++) f_free(b[j]);
        }
    }
    const size_t einval_aligns[] = {SIZE_MAX, SIZE_MAX - 15, (SIZE_MAX / 2 + 1) + 1};
    for (size_t i = 0; i < sizeof einval_aligns / sizeof einval_aligns[0]; i++) {
        errno = 0;
        p = f_memalign(einval_aligns[i], 16);
        CHECK(p == NULL && errno == EINVAL, "memalign(%#zx, 16) = %p, errno %d (want EINVAL)",
              einval_aligns[i], p, errno);
        errno = 0;
        p = f_aligned_alloc(einval_aligns[i], 16);
        CHECK(p == NULL && errno == EINVAL,
              "aligned_alloc(%#zx, 16) = %p, errno %d (want EINVAL)", einval_aligns[i], p, errno);
    }
    errno = 0;
    p = f_memalign(((size_t)1 << 62) + 1, 16);
    CHECK(p == NULL && errno == ENOMEM, "memalign(2^62 + 1, 16) = %p, errno %d (want ENOMEM)",
          p, errno);
    errno = 0;
    p = f_memalign(SIZE_MAX / 2 + 1, 16);
    CHECK(p == NULL && errno == ENOMEM, "memalign(2^63, 16) = %p, errno %d (want ENOMEM)", p,
          errno);
    errno = 0;
    p = f_aligned_alloc(SIZE_MAX / 2 + 1, 16);
    CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(2^63, 16) = %p, errno %d (want ENOMEM)",
          p, errno);
}

static void test_valloc_pvalloc(void) {
    const size_t sizes[] = {1, 100, 4095, 4096, 4097, 10000, 65536, 300 * KiB, 3 * MiB + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t s = sizes[i];
        void *v = f_valloc(s);
        CHECK(v && is_aligned(v, page_size) && f_usable(v) >= s, "valloc(%zu) = %p, usable %zu",
              s, v, v ? f_usable(v) : 0);
        void *pv = f_pvalloc(s);
        size_t rounded = (s + page_size - 1) / page_size * page_size;
        CHECK(pv && is_aligned(pv, page_size) && f_usable(pv) >= rounded,
              "pvalloc(%zu) = %p, usable %zu (want >= %zu)", s, pv, pv ? f_usable(pv) : 0,
              rounded);
        if (v) memset(v, 0x11, f_usable(v));
        if (pv) memset(pv, 0x22, f_usable(pv));
        f_free(v);
        f_free(pv);
    }
    void *v = f_valloc(0);
    CHECK(v && is_aligned(v, page_size), "valloc(0) = %p", v);
    f_free(v);
    /* pvalloc(0): glibc 2.36 returns a page-aligned block whose usable size is less
     * than a page (its rounding computes 1 byte); strata gives a whole page. */
    void *pv = f_pvalloc(0);
    CHECK(pv && is_aligned(pv, page_size), "pvalloc(0) = %p", pv);
    if (pv && strata_loaded)
        CHECK(f_usable(pv) >= page_size, "strata: pvalloc(0) usable %zu < page", f_usable(pv));
    f_free(pv);
}

/* ---- the __libc_* aliases, cfree, malloc_trim -------------------------------- */

static void *sym(const char *name) { return dlsym(RTLD_DEFAULT, name); }

/* Under strata every alias must resolve into libstrata. */
static void check_symbol_owner(const char *name, void *addr) {
    if (!strata_loaded || !addr) return;
    Dl_info info;
    int ok = dladdr(addr, &info);
    CHECK(ok && info.dli_fname && strstr(info.dli_fname, "strata"),
          "%s resolves into %s, not libstrata", name, ok && info.dli_fname ? info.dli_fname : "?");
}

static void test_aliases_and_extras(void) {
    void *(*l_malloc)(size_t) = (void *(*)(size_t))sym("__libc_malloc");
    void (*l_free)(void *) = (void (*)(void *))sym("__libc_free");
    void *(*l_calloc)(size_t, size_t) = (void *(*)(size_t, size_t))sym("__libc_calloc");
    void *(*l_realloc)(void *, size_t) = (void *(*)(void *, size_t))sym("__libc_realloc");
    void *(*l_memalign)(size_t, size_t) = (void *(*)(size_t, size_t))sym("__libc_memalign");
    void *(*l_valloc)(size_t) = (void *(*)(size_t))sym("__libc_valloc");
    void *(*l_pvalloc)(size_t) = (void *(*)(size_t))sym("__libc_pvalloc");
    int (*l_posix_memalign)(void **, size_t, size_t) =
        (int (*)(void **, size_t, size_t))sym("__posix_memalign");
    void (*l_cfree)(void *) = (void (*)(void *))sym("cfree");

    const struct {
        const char *name;
        void *addr;
    } syms[] = {{"__libc_malloc", (void *)l_malloc},     {"__libc_free", (void *)l_free},
                {"__libc_calloc", (void *)l_calloc},     {"__libc_realloc", (void *)l_realloc},
                {"__libc_memalign", (void *)l_memalign}, {"__libc_valloc", (void *)l_valloc},
                {"__libc_pvalloc", (void *)l_pvalloc},
                {"__posix_memalign", (void *)l_posix_memalign},
                {"cfree", (void *)l_cfree},
                {"malloc", sym("malloc")},                {"free", sym("free")},
                {"calloc", sym("calloc")},                {"realloc", sym("realloc")},
                {"reallocarray", sym("reallocarray")},    {"posix_memalign", sym("posix_memalign")},
                {"aligned_alloc", sym("aligned_alloc")},  {"memalign", sym("memalign")},
                {"valloc", sym("valloc")},                {"pvalloc", sym("pvalloc")},
                {"malloc_usable_size", sym("malloc_usable_size")},
                {"malloc_trim", sym("malloc_trim")}};
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        if (!syms[i].addr) {
            /* glibc 2.36 exports neither __posix_memalign nor a default-version cfree. */
            CHECK(!strata_loaded, "strata does not export %s", syms[i].name);
            printf("  %s: not exported here, skipped\n", syms[i].name);
            continue;
        }
        check_symbol_owner(syms[i].name, syms[i].addr);
    }

    if (l_malloc && l_free) {
        void *p = l_malloc(1000);
        CHECK(p && is_aligned(p, 16) && f_usable(p) >= 1000, "__libc_malloc(1000) = %p", p);
        memset(p, 1, 1000);
        f_free(p); /* mixed with the public free */
        p = f_malloc(300);
        l_free(p);
        l_free(NULL);
        errno = 0;
        p = l_malloc(SIZE_MAX);
        CHECK(p == NULL && errno == ENOMEM, "__libc_malloc(SIZE_MAX) = %p, errno %d", p, errno);
    }
    if (l_calloc) {
        void *p = f_malloc(4000);
        memset(p, 0xEE, 4000);
        f_free(p);
        p = l_calloc(100, 40);
        CHECK(p && first_nonzero(p, 4000) == SIZE_MAX, "__libc_calloc(100, 40) not zero");
        f_free(p);
        errno = 0;
        p = l_calloc(SIZE_MAX, 16);
        CHECK(p == NULL && errno == ENOMEM, "__libc_calloc overflow = %p, errno %d", p, errno);
    }
    if (l_realloc) {
        void *p = l_realloc(NULL, 50);
        CHECK(p != NULL, "__libc_realloc(NULL, 50) = NULL");
        fill(p, 50, 5);
        void *q = l_realloc(p, 500 * KiB);
        CHECK(q && verify(q, 50, 5) == SIZE_MAX, "__libc_realloc lost the content");
        if (q) p = q;
        CHECK(l_realloc(p, 0) == NULL, "__libc_realloc(p, 0) != NULL");
    }
    if (l_memalign) {
        void *p = l_memalign(256, 1000);
        CHECK(p && is_aligned(p, 256) && f_usable(p) >= 1000, "__libc_memalign(256) = %p", p);
        f_free(p);
        p = l_memalign(48, 10);
        CHECK(p && is_aligned(p, 64), "__libc_memalign(48) = %p (want 64-aligned)", p);
        f_free(p);
    }
    if (l_valloc) {
        void *p = l_valloc(10);
        CHECK(p && is_aligned(p, page_size), "__libc_valloc(10) = %p", p);
        f_free(p);
    }
    if (l_pvalloc) {
        void *p = l_pvalloc(10);
        CHECK(p && is_aligned(p, page_size) && f_usable(p) >= page_size,
              "__libc_pvalloc(10) = %p, usable %zu", p, p ? f_usable(p) : 0);
        f_free(p);
    }
    if (l_posix_memalign) {
        void *p = NULL;
        int r = l_posix_memalign(&p, 1024, 77);
        CHECK(r == 0 && is_aligned(p, 1024), "__posix_memalign(1024) = %d, %p", r, p);
        f_free(p);
        void *s = (void *)0x99, *q = s;
        r = l_posix_memalign(&q, 24, 77);
        CHECK(r == EINVAL && q == s, "__posix_memalign(24) = %d", r);
    }
    if (l_cfree) {
        l_cfree(NULL);
        l_cfree(f_malloc(123));
        l_cfree(f_malloc(3 * MiB));
    }

    /* malloc_trim returns 1 if memory was released, else 0. */
    void *big[16];
    for (int i = 0; i < 16; i++) {
        big[i] = f_malloc(512 * KiB);
        memset(big[i], 3, 512 * KiB);
    }
    for (int i = 0; i < 16; i++) f_free(big[i]);
    int t = f_malloc_trim(0);
    CHECK(t == 0 || t == 1, "malloc_trim(0) = %d", t);
    t = f_malloc_trim(SIZE_MAX);
    CHECK(t == 0 || t == 1, "malloc_trim(SIZE_MAX) = %d", t);
}

/* ---- strata's own functions -------------------------------------------------- */

static void test_strata_functions(void) {
    if (!strata_loaded) {
        printf("  strata_release_memory, strata_stats_print: strata not loaded, skipped\n");
        return;
    }
    /* strata_release_memory gives free pages back: RSS drops by most of 64 MiB. */
    enum { N = 64 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = f_malloc(MiB);
        REQUIRE(b[i] != NULL, "malloc(1 MiB)");
        memset(b[i], 0x77, MiB);
    }
    size_t before = rss_bytes();
    for (int i = 0; i < N; i++) f_free(b[i]);
    size_t released = p_release_memory();
    size_t after = rss_bytes();
    printf("  strata_release_memory: %zu bytes released; RSS %zu -> %zu KiB\n", released,
           before / 1024, after / 1024);
    CHECK(after + 32 * MiB <= before,
          "RSS went from %zu to %zu KiB after freeing 64 MiB and strata_release_memory()",
          before / 1024, after / 1024);
    /* The released pages are usable again (and read as zero through calloc). */
    void *z = f_calloc(N, MiB);
    CHECK(z && first_nonzero(z, N * MiB) == SIZE_MAX, "calloc(64 MiB) after release not zero");
    f_free(z);

    /* strata_stats_print writes a table to stderr, every line prefixed "strata: ":
     * capture it through a temp file. */
    FILE *tmp = tmpfile();
    REQUIRE(tmp != NULL, "tmpfile()");
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    p_stats_print();
    dup2(saved, 2);
    close(saved);
    static char text[32768];
    rewind(tmp);
    size_t got = fread(text, 1, sizeof text - 1, tmp);
    fclose(tmp);
    text[got] = 0;
    int lines = 0, prefixed = 0;
    for (char *l = text; *l; l = strchr(l, '\n') + 1) {
        lines++;
        prefixed += strncmp(l, "strata: ", 8) == 0;
        if (!strchr(l, '\n')) break;
    }
    CHECK(got > 0 && strncmp(text, "strata: heap statistics\n", 24) == 0 &&
              text[got - 1] == '\n' && lines > 10 && prefixed == lines &&
              strstr(text, "allocated") && strstr(text, "resident") &&
              strstr(text, "thread heaps"),
          "strata_stats_print printed %zu bytes in %d lines (%d prefixed): '%s'", got, lines,
          prefixed, text);

    /* strata_stats_json: snprintf-like; the size query, a cut copy, a whole copy. */
    size_t need = p_stats_json(NULL, 0);
    CHECK(need > 100, "strata_stats_json(NULL, 0) = %zu", need);
    char small[16];
    memset(small, 'x', sizeof small);
    size_t n1 = p_stats_json(small, sizeof small);
    CHECK(n1 > sizeof small && small[15] == 0 && strlen(small) == 15 && small[0] == '{',
          "strata_stats_json into 16 bytes returned %zu, wrote '%.16s'", n1, small);
    size_t cap = need + 4096; /* the heap may grow between the calls */
    char *json = f_malloc(cap);
    REQUIRE(json != NULL, "malloc for the JSON");
    size_t n2 = p_stats_json(json, cap);
    CHECK(n2 < cap && strlen(json) == n2 && json[0] == '{' && json[n2 - 1] == '}' &&
              strstr(json, "\"allocated_bytes\":") && strstr(json, "\"classes\":[{\"size\":8,"),
          "strata_stats_json returned %zu: '%.200s'", n2, json);
    f_free(json);

    /* strata_heap_map_write writes an SVG document; bad paths fail with errno. */
    REQUIRE(p_heap_map_write != NULL, "strata is loaded but exports no strata_heap_map_write");
    void *keep = f_malloc(100);
    REQUIRE(keep != NULL, "malloc(100)");
    char path[] = "/tmp/strata-heap-map-XXXXXX.svg";
    int fd = mkstemps(path, 4);
    REQUIRE(fd >= 0, "mkstemps: %s", strerror(errno));
    close(fd);
    int rc = p_heap_map_write(path);
    CHECK(rc == 0, "strata_heap_map_write(%s) = %d (errno %d)", path, rc, errno);
    char head[16] = {0}, tail[16] = {0};
    FILE *svg = fopen(path, "rb");
    REQUIRE(svg != NULL, "fopen(%s): %s", path, strerror(errno));
    size_t nhead = fread(head, 1, 4, svg);
    fseek(svg, 0, SEEK_END);
    long svg_size = ftell(svg);
    fseek(svg, svg_size > 8 ? svg_size - 8 : 0, SEEK_SET);
    size_t ntail = fread(tail, 1, 8, svg);
    fclose(svg);
    unlink(path);
    printf("  strata_heap_map_write: %ld bytes of SVG\n", svg_size);
    CHECK(nhead == 4 && memcmp(head, "<svg", 4) == 0, "heap map starts with '%s'", head);
    const char *end = strstr(tail, "</svg>");
    CHECK(ntail == 8 && end && (strcmp(end, "</svg>") == 0 || strcmp(end, "</svg>\n") == 0),
          "heap map ends with '%s'", tail);
    errno = 0;
    CHECK(p_heap_map_write(NULL) == -1 && errno == EINVAL, "strata_heap_map_write(NULL): errno %d",
          errno);
    errno = 0;
    CHECK(p_heap_map_write("/nonexistent-dir/strata/map.svg") == -1 && errno == ENOENT,
          "strata_heap_map_write(missing dir): errno %d", errno);
    f_free(keep);
}

/* Pointers that strata did not allocate: free ignores them, realloc fails with
 * ENOMEM and leaves them alone, malloc_usable_size is 0 (strata only: glibc aborts). */
static char static_buf[256] __attribute__((aligned(64)));

static void test_foreign_pointers(void) {
    char stack_buf[256] __attribute__((aligned(64)));
    memset(stack_buf, 0x3C, sizeof stack_buf);
    memset(static_buf, 0x3D, sizeof static_buf);
    void *page = mmap(NULL, 2 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(page != MAP_FAILED, "mmap");
    memset(page, 0x3E, 2 * MiB);
    void *ro = mmap(NULL, page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(ro != MAP_FAILED, "mmap");

    /* A block from glibc's own malloc (as if allocated before strata was loaded). */
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    void *(*glibc_malloc)(size_t) = libc ? (void *(*)(size_t))dlsym(libc, "malloc") : NULL;
    void (*glibc_free)(void *) = libc ? (void (*)(void *))dlsym(libc, "free") : NULL;
    void *g = NULL;
    if (glibc_malloc && glibc_free && (void *)glibc_malloc != (void *)f_malloc) {
        g = glibc_malloc(200);
        if (g) memset(g, 0x3F, 200);
    }

    struct {
        const char *what;
        void *p;
        size_t len;
        int byte;
    } foreign[] = {{"stack", stack_buf, sizeof stack_buf, 0x3C},
                   {"static", static_buf, sizeof static_buf, 0x3D},
                   {"mmap", page, 2 * MiB, 0x3E},
                   {"mmap+64", (char *)page + 64, 64, 0x3E},
                   {"mmap+1MiB", (char *)page + MiB, 64, 0x3E},
                   {"read-only page", ro, page_size, 0},
                   {"code", (void *)(uintptr_t)&test_foreign_pointers, 0, 0},
                   {"glibc malloc", g, 200, 0x3F}};
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        void *p = foreign[i].p;
        if (!p) continue;
        f_free(p);
        CHECK(f_usable(p) == 0, "malloc_usable_size(%s pointer) = %zu", foreign[i].what,
              f_usable(p));
        errno = 0;
        void *q = f_realloc(p, 1000);
        CHECK(q == NULL && errno == ENOMEM, "realloc(%s pointer) = %p, errno %d",
              foreign[i].what, q, errno);
        f_free(p);
        int intact = 1;
        for (size_t k = 0; k < foreign[i].len; k++)
            intact &= ((unsigned char *)p)[k] == foreign[i].byte;
        CHECK(intact, "%s memory was written by free/realloc", foreign[i].what);
    }
    /* After all that, allocation still works and hands out none of these addresses. */
    for (int i = 0; i < 1000; i++) {
        void *p = f_malloc(i * 8);
        int hit = 0;
        for (size_t k = 0; k < sizeof foreign / sizeof foreign[0]; k++)
            hit |= foreign[k].p && (char *)p >= (char *)foreign[k].p &&
                   (char *)p < (char *)foreign[k].p + (foreign[k].len ? foreign[k].len : 1);
        CHECK(p && !hit, "malloc(%d) = %p, a foreign address", i * 8, p);
        f_free(p);
    }
    if (g) glibc_free(g);
    munmap(page, 2 * MiB);
    munmap(ro, page_size);
}

/* Interior pointers of strata's own blocks (small, large, huge) are not blocks:
 * free ignores them, realloc fails with ENOMEM, malloc_usable_size is 0, as
 * src/ffi.rs promises (strata only: for glibc this is undefined behaviour). */
static void interior_pointers_of(size_t s) {
    const size_t offs[] = {1, 8, 16, 48, 4096};
    void *p = f_malloc(s);
    REQUIRE(p != NULL, "malloc(%zu)", s);
    fill(p, s, s);
    for (size_t oi = 0; oi < sizeof offs / sizeof offs[0]; oi++) {
        if (offs[oi] >= s) continue;
        char *in = (char *)p + offs[oi];
        f_free(in);
        CHECK(f_usable(in) == 0, "malloc_usable_size(block of %zu + %zu) = %zu", s, offs[oi],
              f_usable(in));
        errno = 0;
        void *q = f_realloc(in, s * 2);
        CHECK(q == NULL && errno == ENOMEM, "realloc(block of %zu + %zu) = %p, errno %d", s,
              offs[oi], q, errno);
    }
    CHECK(verify(p, s, s) == SIZE_MAX && f_usable(p) >= s,
          "block of %zu changed by free/realloc of interior pointers", s);
    /* The block is still allocated: new blocks of the same size do not overlap it. */
    void *others[64];
    int overlap = 0, n = s >= MiB ? 4 : 64;
    for (int k = 0; k < n; k++) {
        others[k] = f_malloc(s);
        overlap |= (char *)others[k] < (char *)p + s && (char *)p < (char *)others[k] + s;
    }
    CHECK(!overlap, "a new block of %zu overlaps a live one after interior frees", s);
    /* After a failure the heap is corrupt: freeing more can only crash or hang. */
    if (child_counts && child_counts[1]) return;
    for (int k = 0; k < n; k++) f_free(others[k]);
    CHECK(verify(p, s, s) == SIZE_MAX, "block of %zu overwritten", s);
    f_free(p);
}

/* Runs fn(arg) in a child process, so that a crash there (a test of undefined
 * territory corrupting the heap) is reported as a failure and the later tests
 * still run. The child's check counts come back through shared memory. */
static void run_isolated(const char *name, void (*fn)(size_t), size_t arg) {
    unsigned long *counts = mmap(NULL, page_size, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(counts != MAP_FAILED, "mmap");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        alarm(30);
        struct rlimit no_core = {0, 0}; /* a crash here is reported, not dumped */
        setrlimit(RLIMIT_CORE, &no_core);
        child_counts = counts;
        fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    checks_passed += counts[0];
    checks_failed += counts[1];
    munmap(counts, page_size);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the %s test crashed (%s %d)", name,
          WIFSIGNALED(status) ? "signal" : "exit status",
          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

static void foreign_pointers(size_t unused) {
    (void)unused;
    test_foreign_pointers();
}

static void test_foreign_pointers_isolated(void) {
    if (!strata_loaded) {
        printf("  foreign pointers: glibc aborts on them, skipped\n");
        return;
    }
    run_isolated("foreign pointers", foreign_pointers, 0);
}

/* Interior pointers of strata's own blocks (small, large, huge) are not blocks:
 * free ignores them, realloc fails with ENOMEM, malloc_usable_size is 0, as
 * src/ffi.rs promises (strata only: for glibc this is undefined behaviour). One
 * child process for each size. */
static void test_interior_pointers_isolated(void) {
    if (!strata_loaded) {
        printf("  interior pointers: undefined for glibc, skipped\n");
        return;
    }
    const size_t sizes[] = {64, 256, 3000, 100 * KiB, 600 * KiB, 20 * MiB};
    char name[64];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        snprintf(name, sizeof name, "interior pointers of a %zu-byte block", sizes[i]);
        run_isolated(name, interior_pointers_of, sizes[i]);
    }
}

/* ---- threads --------------------------------------------------------------- */

struct churn_arg {
    int id;
    void **out;
    int n_out;
};

static void *churn_thread(void *varg) {
    struct churn_arg *a = varg;
    void *keep[256];
    for (int i = 0; i < 256; i++) {
        size_t s = 8 + (size_t)(i * 37 + a->id * 11) % 5000;
        keep[i] = f_malloc(s);
        if (keep[i]) fill(keep[i], s, a->id * 1000 + i);
    }
    for (int i = 0; i < a->n_out; i++) {
        a->out[i] = f_malloc(100 + i);
        if (a->out[i]) fill(a->out[i], 100 + i, a->id * 7 + i);
    }
    int bad = 0;
    for (int i = 0; i < 256; i++) {
        size_t s = 8 + (size_t)(i * 37 + a->id * 11) % 5000;
        bad |= !keep[i] || verify(keep[i], s, a->id * 1000 + i) != SIZE_MAX;
        f_free(keep[i]);
    }
    return (void *)(intptr_t)bad;
}

/* 64 short-lived threads; blocks they allocated are freed by main after they exit. */
static void test_thread_exit_and_remote_free(void) {
    enum { T = 64, OUT = 200 };
    static void *out[T][OUT];
    struct churn_arg args[T];
    int bad = 0, lost = 0;
    for (int t = 0; t < T; t += 2) {
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            args[t + k] = (struct churn_arg){t + k, out[t + k], OUT};
            REQUIRE(pthread_create(&th[k], NULL, churn_thread, &args[t + k]) == 0,
                    "pthread_create");
        }
        for (int k = 0; k < 2; k++) {
            void *r;
            pthread_join(th[k], &r);
            bad |= r != NULL;
        }
    }
    for (int t = 0; t < T; t++)
        for (int i = 0; i < OUT; i++) {
            lost |= !out[t][i] || verify(out[t][i], 100 + i, t * 7 + i) != SIZE_MAX;
            f_free(out[t][i]);
        }
    CHECK(!bad, "a thread's own blocks were corrupted");
    CHECK(!lost, "blocks of exited threads were corrupted before main freed them");
}

/* ---- fork from a multithreaded process --------------------------------------- */

static volatile int fork_stop;

static void *busy_allocator(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    void *slots[64] = {0};
    while (!fork_stop) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int i = x % 64;
        f_free(slots[i]);
        size_t s = (x >> 8) % 100 == 0 ? (x >> 16) % (3 * MiB) : (x >> 16) % 2048;
        slots[i] = (x >> 40) % 7 == 0 ? f_memalign(256, s) : f_malloc(s);
        if (slots[i]) memset(slots[i], (int)x, s < 64 ? s : 64);
    }
    for (int i = 0; i < 64; i++) f_free(slots[i]);
    return NULL;
}

/* Under strata: the walks that take many locks at once (release, statistics),
 * and starting and stopping the background purge thread (its control lock, and a
 * thread created and exiting), looping while the main thread forks. */
static void *walker(void *arg) {
    (void)arg;
    char json[16384];
    for (unsigned i = 0; !fork_stop; i++) {
        p_release_memory();
        p_stats_json(json, sizeof json);
        if (p_background_purge && i % 16 == 0) p_background_purge(i % 32 == 0);
    }
    if (p_background_purge) p_background_purge(0);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        void *p = f_malloc(16 + i % 3000);
        if (!p) return (void *)1;
        memset(p, 1, 16);
        f_free(p);
    }
    return NULL;
}

/* Block i of a forked child: mostly small, every 10th 5 KiB, every 100th 300 KiB. */
static size_t child_size(size_t i) {
    return i % 100 == 0 ? 300 * KiB + i : i % 10 == 0 ? 5000 + i : 8 + i % 700;
}

static void child_work(void) {
    alarm(10); /* a deadlocked child dies of SIGALRM, which the parent reports */
    void *ps[3000];
    for (size_t i = 0; i < 3000; i++) {
        ps[i] = i % 13 == 0 ? f_calloc(1, child_size(i)) : f_malloc(child_size(i));
        if (!ps[i]) _exit(2);
        fill(ps[i], child_size(i), i);
    }
    for (size_t i = 0; i < 3000; i++) {
        if (verify(ps[i], child_size(i), i) != SIZE_MAX) _exit(3);
        f_free(ps[i]);
    }
    void *big = f_malloc(4 * MiB);
    if (!big) _exit(4);
    memset(big, 1, 4 * MiB);
    f_free(big);
    pthread_t t;
    void *r;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) _exit(5);
    pthread_join(t, &r);
    if (r) _exit(6);
    _exit(0);
}

static void test_fork_while_threads_allocate(void) {
    enum { THREADS = 4, FORKS = 20 };
    pthread_t th[THREADS], walk;
    fork_stop = 0;
    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, busy_allocator, (void *)(uintptr_t)(i + 1)) == 0,
                "pthread_create");
    if (strata_loaded) REQUIRE(pthread_create(&walk, NULL, walker, NULL) == 0, "pthread_create");
    int ok = 0;
    for (int f = 0; f < FORKS; f++) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed: %s", strerror(errno));
        if (pid == 0) child_work();
        /* Backstop for the child's alarm: wait at most 15 s. */
        int status = 0, waited = 0;
        pid_t r;
        while ((r = waitpid(pid, &status, WNOHANG)) == 0 && waited < 1500) {
            struct timespec w = {0, 10 * 1000 * 1000};
            nanosleep(&w, NULL);
            waited++;
        }
        if (r == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            CHECK(0, "fork #%d: child still running after 15 s (deadlock), killed", f);
            continue;
        }
        if (WIFSIGNALED(status))
            CHECK(0, "fork #%d: child killed by signal %d%s", f, WTERMSIG(status),
                  WTERMSIG(status) == SIGALRM ? " (SIGALRM: deadlocked for 10 s)" : "");
        else if (WEXITSTATUS(status) != 0)
            CHECK(0, "fork #%d: child exited with status %d", f, WEXITSTATUS(status));
        else
            ok++;
    }
    fork_stop = 1;
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    if (strata_loaded) pthread_join(walk, NULL);
    CHECK(ok == FORKS, "%d of %d children forked while 4 threads allocated exited 0", ok, FORKS);
}

/* ---- main -------------------------------------------------------------------- */

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    p_release_memory = (__typeof__(p_release_memory))dlsym(RTLD_DEFAULT, "strata_release_memory");
    p_stats_print = (__typeof__(p_stats_print))dlsym(RTLD_DEFAULT, "strata_stats_print");
    p_stats_json = (__typeof__(p_stats_json))dlsym(RTLD_DEFAULT, "strata_stats_json");
    p_heap_map_write = (__typeof__(p_heap_map_write))dlsym(RTLD_DEFAULT, "strata_heap_map_write");
    p_background_purge =
        (__typeof__(p_background_purge))dlsym(RTLD_DEFAULT, "strata_background_purge");
    strata_loaded = p_release_memory != NULL && p_stats_print != NULL && p_stats_json != NULL;
    Dl_info info;
    const char *owner =
        dladdr((void *)(uintptr_t)f_malloc, &info) && info.dli_fname ? info.dli_fname : "?";
    printf("api_test: allocator %s (malloc from %s)\n", strata_loaded ? "strata" : "glibc",
           owner);
    if (strata_loaded)
        REQUIRE(strstr(owner, "strata") != NULL, "strata is loaded but malloc comes from %s",
                owner);

    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"malloc(0) and free(NULL)", test_malloc_zero_and_free_null},
        {"usable size writable and aligned", test_usable_size_writable_and_aligned},
        {"impossible sizes fail with ENOMEM", test_impossible_sizes_fail_with_enomem},
        {"calloc zeroes reused memory", test_calloc_zeroes_reused_memory},
        {"realloc NULL and 0", test_realloc_null_and_zero},
        {"realloc preserves content", test_realloc_preserves_content},
        {"aligned allocation", test_aligned_allocation},
        {"valloc and pvalloc", test_valloc_pvalloc},
        {"aliases, cfree, malloc_trim", test_aliases_and_extras},
        {"strata functions", test_strata_functions},
        {"foreign pointers", test_foreign_pointers_isolated},
        {"interior pointers", test_interior_pointers_isolated},
        {"thread exit and remote free", test_thread_exit_and_remote_free},
        {"fork while threads allocate", test_fork_while_threads_allocate},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        /* Arguments, if any, select the tests whose names contain one of them. */
        int selected = argc < 2;
        for (int a = 1; a < argc; a++) selected |= strstr(tests[i].name, argv[a]) != NULL;
        if (!selected) continue;
        unsigned long before = checks_failed;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("  %-36s %-6s %6.3f s\n", tests[i].name, checks_failed == before ? "ok" : "FAILED",
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    if (checks_failed) {
        printf("api_test: %lu checks passed, %lu FAILED\n", checks_passed, checks_failed);
        return 1;
    }
    printf("api_test: %lu checks passed\n", checks_passed);
    return 0;
}
