package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDirection(t *testing.T) {
	for key, want := range map[string]int{
		"ingest_events_per_s":                +1,
		"p2p_over_https_c16":                 +1,
		"track_p99_ms_c16":                   -1,
		"ingest_batch_p50_ms":                -1,
		"watch_node_cpu_us_per_event":        -1,
		"rss_idle_mb":                        -1,
		"disk_bytes_per_event":               -1,
		"testnet_startup_s":                  -1,
		"store_events":                       0,
		"watch_delivered":                    0,
		"elapsed_s":                          0,
		"track_lookups_per_s_c16":            +1,
		"verified_batch_track_parcels_per_s": +1,
	} {
		if got := direction(key); got != want {
			t.Errorf("direction(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestCompare(t *testing.T) {
	old := []map[string]float64{{"a_per_s": 100, "b_ms": 10}, {"a_per_s": 110, "b_ms": 12}, {"a_per_s": 90, "b_ms": 11}}
	tests := []struct {
		name  string
		cur   map[string]float64
		worse string // the figure named, "" for none
	}{
		{"same", map[string]float64{"a_per_s": 95, "b_ms": 11.5}, ""},
		{"better", map[string]float64{"a_per_s": 150, "b_ms": 5}, ""},
		{"rate worse", map[string]float64{"a_per_s": 80, "b_ms": 11}, "a_per_s"},
		{"latency worse", map[string]float64{"a_per_s": 100, "b_ms": 13}, "b_ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := compare(&out, old, []map[string]float64{tt.cur}, 0.10)
			if tt.worse == "" {
				if err != nil {
					t.Fatalf("compare: %v\n%s", err, out.String())
				}
				return
			}
			if !errors.Is(err, errWorse) || !strings.Contains(err.Error(), tt.worse) {
				t.Fatalf("compare = %v, want errWorse naming %s\n%s", err, tt.worse, out.String())
			}
		})
	}
}
