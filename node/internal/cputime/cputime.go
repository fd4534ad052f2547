// Package cputime reads the CPU time this process has used, for
// benchmarks that report CPU per operation: on a shared machine, other
// work stretches wall time far more than it stretches CPU time.
package cputime

import "time"

// Process is the CPU time, user and system, this process has used; 0
// where the platform does not say.
func Process() time.Duration { return process() }
