//go:build !unix

package ingest_test

import "time"

// processCPU is not measured here; benchmarks skip the metric.
func processCPU() time.Duration { return 0 }
