//go:build !linux || !cgo

package pebble

// limitMallocArenas does nothing where the C allocator is not glibc's or
// pebble allocates from the Go heap (no cgo).
func limitMallocArenas() {}
