// Counts heap allocations of a process: LD_PRELOAD=./malloc_count.so program. Prints the count at exit to
// stderr as "malloc-count: N allocations". Build: gcc -O2 -shared -fPIC malloc_count.c -o malloc_count.so
// Used by Benchmarks/allocations.sh to measure allocations per PGD step (valgrind 3.19 cannot read Swift 6's
// DWARF 5, and ordo-one/benchmark would add its own package to the build).
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static atomic_long allocations;

void *malloc(size_t n) { atomic_fetch_add(&allocations, 1); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { atomic_fetch_add(&allocations, 1); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { atomic_fetch_add(&allocations, 1); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { atomic_fetch_add(&allocations, 1); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { atomic_fetch_add(&allocations, 1); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    atomic_fetch_add(&allocations, 1);
    void *p = __libc_memalign(a, n);
    if (!p) return 12;  // ENOMEM
    *out = p;
    return 0;
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "malloc-count: %ld allocations\n", (long)atomic_load(&allocations));
}
