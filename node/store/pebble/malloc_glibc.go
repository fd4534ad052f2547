//go:build linux && cgo

package pebble

/*
#include <malloc.h>
#include <stdlib.h>

// Pebble allocates its block cache and memtables with C malloc. glibc
// gives a thread that finds the heap locked an arena of its own, up to
// eight per core, and memory freed into one arena is never handed to
// another. A block cache churning under lookups from many threads left
// ~200 MB of free but unreturnable memory: a node serving lookups on a
// 1M-event store rose to 446-566 MB RSS with glibc's default against
// 336-343 MB with one arena, at the same lookup rate (bench/README.md).
//
// glibc fixes its arena limit the first time a thread needs an arena of
// its own, so the limit is set by a constructor, before Go starts a
// thread; an operator's MALLOC_ARENA_MAX, which glibc reads itself,
// wins. musl has no M_ARENA_MAX and one heap anyway.
__attribute__((constructor)) static void opentrackLimitMallocArenas(void) {
#ifdef M_ARENA_MAX
	if (getenv("MALLOC_ARENA_MAX") == NULL) {
		mallopt(M_ARENA_MAX, 1);
	}
#endif
}
*/
import "C"
