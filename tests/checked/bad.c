/*
 * bad.c - small C programs that misuse malloc, one per action, for the checked-mode
 * tests (tests/checked_c.rs). Run under LD_PRELOAD of a checked libstrata.so
 * (`cargo build --release --manifest-path capi/Cargo.toml --features checked`),
 * each must abort with a "strata: ..." report naming the pointer; under the plain
 * library (capi/ with its defaults) they show what the plain build does.
 *
 * Usage: bad ACTION
 *
 * Each action prints "ptr=<pointer>" before the bad call, and, if it survives it,
 * a follow-up line "after: ..." with what the next allocations returned.
 *
 * overwrite_free_link and overflow_into_free_block write an address of the
 * attacker's choosing (global_buf) over a free block's first word, where its
 * free-list link lives: the plain library must abort at the next malloc of the
 * class instead of handing that address out; the checked one keeps the block in
 * quarantine, so the address is never handed out either.
 *
 * Build: cc -O0 -g -pthread tests/checked/bad.c -o bad
 * (-O0: the optimiser may drop a malloc whose block is never used.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char global_buf[64];

static void announce(const void *p) {
    printf("ptr=%p\n", p);
    fflush(stdout);
}

/* After a bad call that was not caught: two allocations of `size`, then exit 0. */
static void follow_up(size_t size, const void *bad) {
    char *a = malloc(size);
    char *b = malloc(size);
    printf("after: a=%p b=%p dup=%d returned_bad=%d\n", (void *)a, (void *)b, a == b,
           (const void *)a == bad || (const void *)b == bad);
    fflush(stdout);
    exit(0);
}

/* free_stack_thread: a thread frees a buffer on its own stack. */
static void *announced;
static void *free_own_stack(void *arg) {
    (void)arg;
    char buf[64];
    char *volatile p = buf;
    announced = p;
    announce(p);
    free(p);
    return NULL;
}

static char *must_malloc(size_t n) {
    char *p = malloc(n);
    if (!p) {
        perror("malloc");
        exit(2);
    }
    return p;
}

/* A clean program: every entry point, every route, content checked. */
static int clean(void) {
    static const size_t sizes[] = {0, 1, 8, 24, 100, 1000, 4096, 70000, 300000, 900000, 3 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        char *p = must_malloc(n);
        memset(p, 0x11, n);
        if (malloc_usable_size(p) < n) return 1;
        char *q = calloc(1, n + 5);
        for (size_t k = 0; k < n + 5; k++)
            if (q[k]) return 2;
        void *r = NULL;
        if (posix_memalign(&r, 256, n + 1)) return 3;
        if ((uintptr_t)r % 256) return 4;
        char *s = aligned_alloc(4096, 4096);
        char *t = memalign(64, n + 3);
        char *u = valloc(n + 1);
        char *v = pvalloc(n + 1);
        memset(r, 1, n + 1);
        memset(s, 2, 4096);
        memset(t, 3, n + 3);
        memset(u, 4, n + 1);
        memset(v, 5, n + 1);
        p = realloc(p, 2 * n + 16);
        for (size_t k = 0; k < n; k++)
            if (p[k] != 0x11) return 5;
        p = realloc(p, n / 2 + 1);
        for (size_t k = 0; k < n / 2 && k < n; k++)
            if (p[k] != 0x11) return 6;
        p = reallocarray(p, 3, n + 1);
        free(p);
        free(q);
        free(r);
        free(s);
        free(t);
        free(u);
        free(v);
    }
    free(NULL);
    if (realloc(must_malloc(10), 0) != NULL) return 7;
    malloc_trim(0);
    puts("clean: ok");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bad ACTION\n");
        return 2;
    }
    const char *a = argv[1];
    if (!strcmp(a, "clean")) return clean();
    if (!strcmp(a, "double_free")) {
        char *p = must_malloc(40);
        announce(p);
        free(p);
        free(p);
        follow_up(40, p);
    }
    if (!strcmp(a, "fresh_first_word")) {
        /* Not misuse: a recycled block fresh from malloc, its first word read (as
         * bytes, no trap representation) before the program writes it. Blocks p and
         * q are freed in turn; the next malloc of the class gets p back, whose first
         * word held its free-list link to q. */
        char *p = must_malloc(96), *q = must_malloc(96);
        announce(p);
        free(q);
        free(p);
        char *r = must_malloc(96);
        uint64_t w;
        memcpy(&w, r, sizeof w);
        printf("after: same=%d first_word=%#llx\n", r == p, (unsigned long long)w);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(a, "double_free_later")) {
        /* Another free of the class in between: p is no longer the last block freed
         * when it is freed again. x then gets p; the follow-up must not. */
        char *p = must_malloc(40);
        char *q = must_malloc(40);
        announce(p);
        free(p);
        free(q);
        free(p);
        char *x = must_malloc(40);
        follow_up(40, x);
    }
    if (!strcmp(a, "free_stack")) {
        char buf[64];
        char *volatile p = buf;
        announce(p);
        free(p);
        follow_up(64, p);
    }
    if (!strcmp(a, "free_stack_thread")) {
        pthread_t t;
        if (pthread_create(&t, NULL, free_own_stack, NULL) != 0) return 2;
        pthread_join(t, NULL);
        follow_up(64, announced);
    }
    if (!strcmp(a, "free_global")) {
        char *volatile p = global_buf;
        announce(p);
        free(p);
        follow_up(64, p);
    }
    if (!strcmp(a, "free_mmap")) {
        /* Another allocator's block: a bump arena over its own mapping. */
        char *arena = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        char *p = arena + 64;
        announce(p);
        free(p);
        follow_up(64, p);
    }
    if (!strcmp(a, "free_interior")) {
        char *p = must_malloc(100) + 16;
        announce(p);
        free(p);
        follow_up(100, p);
    }
    if (!strcmp(a, "free_misaligned")) {
        char *p = must_malloc(100) + 1;
        announce(p);
        free(p);
        follow_up(100, p);
    }
    if (!strcmp(a, "free_large_interior")) {
        char *p = must_malloc(300000) + 8192;
        announce(p);
        free(p);
        follow_up(300000, p);
    }
    if (!strcmp(a, "free_large_interior_stale")) {
        /* The page map of a Large block's interior pages may be stale: here the
         * entry of b's page 35 still names the start of `a`, where a Small span now
         * lives. A lookup that trusts the entry takes b + 35 pages for a small
         * object (the plain build does, and hands it out again). */
        char *a = must_malloc(300000); /* Large, 37 pages */
        free(a);
        char *s = must_malloc(16); /* a Small span where `a` began */
        char *b = must_malloc(330000); /* Large, 41 pages, right after it */
        char *p = b + 35 * 8192;
        (void)s;
        announce(p);
        free(p);
        follow_up(16, p);
    }
    if (!strcmp(a, "overflow_small") || !strcmp(a, "overflow_large") || !strcmp(a, "overflow_huge")) {
        size_t n = !strcmp(a, "overflow_small") ? 40 : !strcmp(a, "overflow_large") ? 300000 : 3 << 20;
        char *p = must_malloc(n);
        announce(p);
        p[n] = 0x41;
        free(p);
        follow_up(n, p);
    }
    if (!strcmp(a, "overflow_realloc")) {
        char *p = must_malloc(40);
        announce(p);
        p[41] = 0x41;
        p = realloc(p, 4000);
        follow_up(40, p);
    }
    if (!strcmp(a, "use_after_free") || !strcmp(a, "use_after_free_churn")) {
        char *p = must_malloc(40);
        announce(p);
        free(p);
        ((volatile char *)p)[8] = 0x41;
        if (!strcmp(a, "use_after_free")) {
            malloc_trim(0); /* empties the quarantine, checking every block */
        } else {
            for (int i = 0; i < 1024; i++) free(must_malloc(64 << 10));
        }
        follow_up(40, p);
    }
    if (!strcmp(a, "overwrite_free_link")) {
        char *p = must_malloc(96);
        announce(p);
        free(p);
        *(char *volatile *)p = global_buf; /* a write after free */
        follow_up(96, global_buf);
    }
    if (!strcmp(a, "overflow_into_free_block")) {
        /* Two neighbouring blocks of one class; the upper one is freed and the
         * lower one overflows into it by 8 bytes. */
        enum { N = 64 };
        char *blocks[N];
        char *low = NULL, *high = NULL;
        for (int i = 0; i < N; i++) blocks[i] = must_malloc(96);
        for (int i = 0; i < N && !low; i++)
            for (int j = 0; j < N; j++)
                if (blocks[j] == blocks[i] + 96) {
                    low = blocks[i];
                    high = blocks[j];
                    break;
                }
        if (!low) {
            /* The checked library's blocks are larger than 96: nothing to overflow
             * into from here, so say so and stop. */
            puts("after: no neighbours");
            return 0;
        }
        announce(high);
        free(high);
        char *target = global_buf;
        memcpy(low + 96, &target, sizeof target); /* the overflow */
        follow_up(96, global_buf);
    }
    if (!strcmp(a, "realloc_foreign")) {
        char buf[64];
        char *volatile p = buf;
        announce(p);
        errno = 0;
        char *q = realloc(p, 100);
        printf("after: realloc=%p errno_enomem=%d\n", (void *)q, errno == ENOMEM);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(a, "realloc_freed")) {
        char *p = must_malloc(40);
        announce(p);
        free(p);
        char *q = realloc(p, 100);
        follow_up(100, q);
    }
    if (!strcmp(a, "usable_foreign") || !strcmp(a, "usable_freed")) {
        char buf[64];
        char *volatile p = buf;
        if (!strcmp(a, "usable_freed")) {
            p = must_malloc(40);
            free(p);
        }
        announce(p);
        size_t n = malloc_usable_size(p);
        printf("after: usable=%zu\n", n);
        fflush(stdout);
        return 0;
    }
    if (!strcmp(a, "leak_at_exit")) {
        /* Two Large blocks and three small ones, never freed. */
        must_malloc(300000);
        must_malloc(300000);
        for (int i = 0; i < 3; i++) must_malloc(1000);
        announce(NULL);
        return 0;
    }
    fprintf(stderr, "bad: unknown action %s\n", a);
    return 2;
}
