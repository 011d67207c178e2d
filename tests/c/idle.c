/*
 * idle: frees 24 MiB of 512 KiB blocks (every page written), then idles, and
 * reports the RSS and whether a thread named "strata-purge" exists; then forks and
 * reports the same of the child, which asks for the thread itself.
 *
 *   idle IDLE_MS
 *
 * One line of "key=value" pairs for the parent, one for the child. Under glibc
 * the blocks are mmapped and go back at free; tests/c_abi.rs runs it under strata,
 * with and without STRATA_BACKGROUND_PURGE=1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { BLOCKS = 48, BLOCK = 512 << 10 };

static long rss_kib(void) {
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2) {
        perror("idle: /proc/self/statm");
        exit(2);
    }
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 1 if a thread of this process is named `name`. */
static int has_thread(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (!d) {
        perror("idle: /proc/self/task");
        exit(2);
    }
    int found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f)) {
                comm[strcspn(comm, "\n")] = 0;
                found = strcmp(comm, name) == 0;
            }
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: idle IDLE_MS\n");
        return 2;
    }
    int idle_ms = atoi(argv[1]);
    char *blocks[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        blocks[i] = malloc(BLOCK);
        if (!blocks[i]) {
            perror("idle: malloc");
            return 1;
        }
        memset(blocks[i], i | 1, BLOCK);
    }
    long full = rss_kib();
    for (int i = 0; i < BLOCKS; i++) {
        free(blocks[i]);
    }
    long freed = rss_kib();
    usleep(idle_ms * 1000);
    long idle = rss_kib();
    printf("parent thread=%d full_kib=%ld freed_kib=%ld idle_kib=%ld\n",
           has_thread("strata-purge"), full, freed, idle);
    fflush(stdout);

    pid_t pid = fork();
    if (pid < 0) {
        perror("idle: fork");
        return 1;
    }
    if (pid == 0) {
        int before = has_thread("strata-purge");
        int (*start)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "strata_background_purge");
        int started = start ? start(1) : -1;
        usleep(100 * 1000);
        printf("child thread_before=%d started=%d thread_after=%d\n", before, started,
               has_thread("strata-purge"));
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "idle: child failed (status %d)\n", status);
        return 1;
    }
    return 0;
}
