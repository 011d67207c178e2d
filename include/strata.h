/*
 * strata.h - the strata allocator's own C entry points.
 *
 * libstrata.so (built with `cargo build --release --features c-abi`) exports the
 * standard allocation functions (malloc, free, calloc, realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size,
 * cfree, malloc_trim and glibc's __libc_* aliases) with glibc's semantics; they
 * are declared by <stdlib.h> and <malloc.h>. This header declares only the
 * functions that are strata's own (the last one only in checked builds).
 *
 * A program that may also run without strata (for example one that is
 * LD_PRELOADed only sometimes) should look these up with
 * dlsym(RTLD_DEFAULT, "strata_release_memory") instead of linking to them.
 */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Returns every free page that strata holds to the operating system now
 * (without waiting for the purge delay, STRATA_PURGE_DELAY_MS) and returns the
 * number of bytes released. Blocks that are still allocated are not affected.
 * Callable from any thread at any time.
 */
size_t strata_release_memory(void);

/*
 * Prints one line of the allocator's counters (mapped memory, chunks, huge
 * blocks, free and purged pages, metadata, thread heaps) to stderr, without
 * allocating. Setting STRATA_SHOW_STATS=1 prints the same line at exit.
 */
void strata_stats_print(void);

/*
 * Writes a map of the heap as SVG to the file `path` (created or replaced):
 * every 4 MiB chunk page by page, coloured by state (span of size class N and
 * how full, large block, free and resident, free and purged), with a legend and
 * totals, plus a line for the huge blocks (own mappings). Returns 0, or -1 with
 * errno set (EINVAL for a NULL path, else the error of creating or writing the
 * file). Allocation in other threads waits while the heap is copied; the SVG is
 * written afterwards. Setting STRATA_HEAP_MAP=path.svg writes the same map at
 * exit (in every process that exits normally, forked children included).
 */
int strata_heap_map_write(const char *path);

/*
 * Checked builds only (`--features c-abi,checked`): prints the live blocks by
 * size class (count and bytes requested) to stderr and returns their number.
 * Setting STRATA_LEAK_REPORT=1 prints the same report at exit. Look it up with
 * dlsym(RTLD_DEFAULT, "strata_leak_report"): plain builds do not export it.
 */
size_t strata_leak_report(void);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_H */
