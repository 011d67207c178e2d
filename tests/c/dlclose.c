/* dlopen libstrata.so (argv[1]) without LD_PRELOAD, allocate through it on a
 * thread (which sets up that thread's heap and its pthread-key destructor), dlclose
 * the library, then let the thread exit. The destructor's code must still be
 * there when the thread exits: the library pins itself (linked with -z nodelete).
 * Prints "dlclose: ok" and exits 0; a crash is the failure. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

static malloc_fn s_malloc;
static free_fn s_free;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int allocated, closed;

static void *worker(void *arg) {
    (void)arg;
    void *kept[64];
    for (int i = 0; i < 64; i++) {
        kept[i] = s_malloc(16 + 8 * i);
        if (!kept[i]) {
            fprintf(stderr, "dlclose: malloc through the library failed\n");
            exit(1);
        }
        memset(kept[i], i, 16 + 8 * i);
    }
    /* Free half, so the thread's cache holds blocks its exit must flush. */
    for (int i = 0; i < 64; i += 2)
        s_free(kept[i]);
    pthread_mutex_lock(&mu);
    allocated = 1;
    pthread_cond_broadcast(&cv);
    while (!closed)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL; /* thread exit: the library's key destructor runs now */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dlclose LIBSTRATA_SO\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 2;
    }
    s_malloc = (malloc_fn)dlsym(lib, "malloc");
    s_free = (free_fn)dlsym(lib, "free");
    if (!s_malloc || !s_free) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 2;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 2;
    pthread_mutex_lock(&mu);
    while (!allocated)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    if (dlclose(lib) != 0) {
        fprintf(stderr, "dlclose: %s\n", dlerror());
        return 2;
    }
    pthread_mutex_lock(&mu);
    closed = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    /* Still mapped (pinned): its malloc keeps working after dlclose. */
    void *p = s_malloc(100);
    if (!p) {
        fprintf(stderr, "dlclose: malloc after dlclose failed\n");
        return 1;
    }
    s_free(p);
    printf("dlclose: ok\n");
    return 0;
}
