/*
 * strata.h - the strata allocator's own C entry points.
 *
 * libstrata.so (`cargo build --release --manifest-path capi/Cargo.toml` builds
 * capi/target/release/libstrata.so) exports the
 * standard allocation functions (malloc, free, calloc, realloc, reallocarray,
 * posix_memalign, aligned_alloc, memalign, valloc, pvalloc, malloc_usable_size,
 * cfree, malloc_trim and glibc's __libc_* aliases) with glibc's semantics; they
 * are declared by <stdlib.h> and <malloc.h>. It also answers glibc's
 * introspection calls from its own figures: mallinfo2 and mallinfo (fields
 * below), malloc_stats (strata's table on stderr), malloc_info (XML, see below)
 * and mallopt (1 only for the STRATA_M_* parameters below; 0, changing nothing,
 * for glibc's M_* parameters, none of which strata has a knob for). This header
 * declares only the functions that are strata's own (the last one only in
 * checked builds) and the mallopt parameters.
 *
 * A free() or realloc() of a pointer that is not the start of a live block is
 * never followed: free ignores it, realloc returns NULL with ENOMEM. Those that
 * are certainly bugs (a pointer inside strata's heap, or on the calling thread's
 * stack) are reported on stderr, one "strata: free(): invalid pointer ..." line
 * each (at most 10); STRATA_BAD_FREE=warn reports every kind, =abort aborts on
 * every kind (as glibc), =ignore reports none. A double free of a block still in
 * the freeing thread's cache aborts ("strata: double free of ...").
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
 * mallinfo2() under strata (mallinfo() is the same in ints, saturating at
 * INT_MAX); uordblks + fordblks == arena, and uordblks + hblkhd is the bytes
 * allocated, as with glibc:
 *   arena     bytes of the 4 MiB chunks small and large blocks are carved from
 *   ordblks   0 (free page runs are not counted one by one)
 *   smblks    free small blocks cached for reuse (thread caches, central tier)
 *   hblks     huge blocks (own mappings, over 1 MiB); hblkhd their bytes
 *   usmblks   0 (as in glibc)
 *   fsmblks   bytes of the cached small blocks counted in smblks
 *   uordblks  bytes allocated in chunks (small blocks at their class size, large)
 *   fordblks  arena - uordblks (headers, free pages, cached and unused slots)
 *   keepcost  free pages still resident, which malloc_trim(0) returns now
 * malloc_info(0, fp) writes <malloc version="strata-1"> with one <size> element
 * per size class in use, <total type=... size=...> in bytes, and resident
 * (<system type="current">), peak resident (<system type="max">) and mapped
 * (<aspace type="total">) bytes; options other than 0 give EINVAL.
 */

/* mallopt(STRATA_M_PURGE_DELAY_MS, ms): how long free pages stay resident. */
#define STRATA_M_PURGE_DELAY_MS (-201)
/* mallopt(STRATA_M_THREAD_CACHE_BYTES, bytes): byte budget of thread caches
 * created from now on, and of the calling thread's. */
#define STRATA_M_THREAD_CACHE_BYTES (-202)
/* mallopt(STRATA_M_HUGE_CACHE_BYTES, bytes): byte budget of the cache of freed
 * huge mappings (0 turns it off). */
#define STRATA_M_HUGE_CACHE_BYTES (-203)
/* mallopt(STRATA_M_THREAD_CACHE_POOL_BYTES, bytes): bytes all thread caches
 * together may borrow beyond their own budgets (0: none). */
#define STRATA_M_THREAD_CACHE_POOL_BYTES (-204)

/*
 * Returns every free page that strata holds to the operating system now
 * (without waiting for the purge delay, STRATA_PURGE_DELAY_MS) and returns the
 * number of bytes released. Blocks that are still allocated are not affected.
 * Callable from any thread at any time.
 */
size_t strata_release_memory(void);

/*
 * enable != 0: starts the background purge thread ("strata-purge") unless it
 * runs already; 0: asks it to stop (it exits within a second). Every half purge
 * delay (10 ms to 1 s) the thread purges free pages, unmaps wholly free chunks
 * beyond one and unmaps cached huge blocks, of what has been free for longer
 * than the purge delay, returns central batches of size classes no thread
 * touched since its last pass to their spans, and drains the cache of a
 * thread that left it unused for the purge delay and sleeps in the kernel
 * (x86-64 Linux; two objects a size class stay), so that an idle program gives
 * that memory back. It starts on its own once the heap reaches 64 MiB (16 MiB
 * with 8 threads allocating at once); STRATA_BACKGROUND_PURGE=1 starts it at
 * load, =0 keeps it off. A forked child starts without it. Returns 1 if it
 * runs after the call, else 0. Not from a signal handler (it may create a
 * thread).
 */
int strata_background_purge(int enable);

/*
 * Prints a table of the allocator's statistics to stderr, every line prefixed
 * "strata: ", without allocating: bytes allocated, active, resident, mapped,
 * metadata, cached in thread heaps and in the central tier, free and purged
 * pages, peaks, counts of allocations, frees and reallocations, chunks, large
 * and huge blocks, thread heaps, and one line per size class in use.
 * Setting STRATA_SHOW_STATS=1 prints the same table at exit.
 */
void strata_stats_print(void);

/*
 * Writes the same statistics as one JSON object into buf (at most len bytes,
 * NUL included) and returns the length of the whole JSON text, like snprintf:
 * a result >= len means the text was cut; strata_stats_json(NULL, 0) asks for
 * the size. Does not allocate. Keys: allocated_bytes, requested_bytes (null
 * unless checked), active_bytes, resident_bytes, mapped_bytes, metadata_bytes,
 * thread_cached_bytes, central_cached_bytes, span_free_bytes, page_free_bytes,
 * page_purged_bytes, purged_bytes_total, unmapped_bytes_total,
 * peak_resident_bytes, peak_allocated_bytes, allocs, frees, reallocs,
 * reallocs_in_place, thread_heaps_live, thread_heaps_created, chunks,
 * large_blocks, large_bytes, huge_blocks, huge_bytes, classes_in_use, and
 * classes: [{size, live_objects, spans, span_bytes, thread_cached,
 * central_cached, allocs}, ...] for every size class.
 */
size_t strata_stats_json(char *buf, size_t len);

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
 * Checked builds only (capi/ built with `--features checked`): prints the live blocks by
 * size class (count and bytes requested) to stderr and returns their number.
 * Setting STRATA_LEAK_REPORT=1 prints the same report at exit. Look it up with
 * dlsym(RTLD_DEFAULT, "strata_leak_report"): plain builds do not export it.
 */
size_t strata_leak_report(void);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_H */
