/* harden MODE: the default (`harden`) library's free-list checks through C.
 * Each mode but `refill` misuses the heap once and must be stopped with a report;
 * `refill` empties and refills lists many times (a list's end is found through the
 * link check) and must print "harden: ok". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The misuse is the point: no warning for it (older compilers do not know the
   option, hence the first line). */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* Every pointer goes through here, so that the compiler keeps each malloc and free
   (it may drop a pair whose block nothing uses). */
static void *volatile sink;
static void *keep(void *p) {
    sink = p;
    return sink;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: harden double-top|double-deep|overwrite|overwrite-last|refill\n");
        return 2;
    }
    const char *m = argv[1];
    /* A thread heap and a list of 48-byte blocks with room. */
    void *warm[64];
    for (int i = 0; i < 64; i++) warm[i] = keep(malloc(40));
    for (int i = 0; i < 64; i++) free(warm[i]);
    if (!strcmp(m, "double-top")) {
        void *p = keep(malloc(40));
        free(p);
        free(keep(p));
    } else if (!strcmp(m, "double-deep")) {
        void *p = keep(malloc(40)), *q = keep(malloc(40));
        free(p);
        free(q);
        free(keep(p));
    } else if (!strcmp(m, "overwrite")) {
        void *p = keep(malloc(40)), *q = keep(malloc(40));
        free(q);
        free(p);
        memset(keep(p), 0x41, 8); /* a write after free over p's link */
        keep(malloc(40));
        keep(malloc(40));
    } else if (!strcmp(m, "overwrite-last")) {
        /* A list of one block, whose link is the list's end: zeroed after free. */
        void *p = keep(malloc(3000));
        free(p);
        memset(keep(p), 0, 8);
        keep(malloc(3000));
        keep(malloc(3000));
    } else if (!strcmp(m, "refill")) {
        for (int r = 0; r < 1000; r++) {
            void *v[300];
            for (int i = 0; i < 300; i++) {
                v[i] = keep(malloc(24 + (size_t)(i % 4) * 1000));
                if (!v[i]) return 1;
                memset(v[i], 0x5a, 24);
            }
            for (int i = 0; i < 300; i++) free(v[i]);
        }
        printf("harden: ok\n");
        return 0;
    } else {
        fprintf(stderr, "harden: unknown mode %s\n", m);
        return 2;
    }
    printf("harden: not stopped\n");
    return 0;
}
