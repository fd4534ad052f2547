//go:build linux && cgo

package pebble

/*
#include <malloc.h>

// setArenaMax returns 1 on success, as mallopt does; musl has no
// M_ARENA_MAX and keeps one heap anyway.
static int setArenaMax(int n) {
#ifdef M_ARENA_MAX
	return mallopt(M_ARENA_MAX, n);
#else
	return 1;
#endif
}
*/
import "C"

import (
	"os"
	"sync"
)

// mallocArenas is the glibc malloc arenas the process keeps.
//
// Pebble allocates its block cache and memtables with C malloc. glibc
// gives a thread that finds the heap locked an arena of its own, up to
// eight per core, and memory freed into one arena is never handed to
// another. A block cache churning under lookups from many threads left
// ~200 MB of free but unreturnable memory: a node serving lookups on a
// 1M-event store rose to 532-566 MB RSS with glibc's default against
// 336 MB with one arena, at the same lookup rate (bench/README.md).
const mallocArenas = 1

var limitArenasOnce sync.Once

// limitMallocArenas applies mallocArenas once per process, before the
// first store allocates, unless the operator set MALLOC_ARENA_MAX, which
// glibc reads itself.
func limitMallocArenas() {
	limitArenasOnce.Do(func() {
		if _, set := os.LookupEnv("MALLOC_ARENA_MAX"); !set {
			C.setArenaMax(C.int(mallocArenas))
		}
	})
}
