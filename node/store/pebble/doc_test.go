package pebble_test

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDocFigures checks the figures in bench/pebble.md against
// bench/micro.txt, the benchmark output they are quoted from: a figure
// that is rerun and not updated, or never measured, fails here.
func TestDocFigures(t *testing.T) {
	runs := microRuns(t, "../../../bench/micro.txt", "github.com/opentrack/opentrack/node/store/pebble")
	doc, err := os.ReadFile("../../../bench/pebble.md")
	require.NoError(t, err)
	text := string(doc)

	type figure struct {
		bench, unit string
		quoted      string // as bench/pebble.md writes it
		scale       float64
	}
	var figs []figure
	for _, m := range regexp.MustCompile(`(Append/\S+)\s.*?(\d+)k events/s, p99 ([\d.]+) ms`).FindAllStringSubmatch(text, -1) {
		figs = append(figs, figure{m[1], "events/s", m[2], 1e3}, figure{m[1], "p99-ms", m[3], 1})
	}
	for _, m := range regexp.MustCompile(`(ParcelLookup/\S+)\s+([\d.]+) µs\s+\((\d+)k lookups/s\)`).FindAllStringSubmatch(text, -1) {
		figs = append(figs, figure{m[1], "cpu-µs/lookup", m[2], 1}, figure{m[1], "lookups/s", m[3], 1e3})
	}
	for _, m := range regexp.MustCompile(`(DiskSize/\w+) ([\d.]+)`).FindAllStringSubmatch(text, -1) {
		figs = append(figs, figure{m[1], "dir-B/event", m[2], 1})
	}
	require.Len(t, figs, 3*2+4*2+4, "bench/pebble.md quotes every row it should")
	for _, f := range figs {
		t.Run(f.bench+"/"+f.unit, func(t *testing.T) {
			vals := runs[f.bench+"-2"][f.unit]
			if len(vals) == 0 {
				vals = runs[f.bench][f.unit]
			}
			require.NotEmpty(t, vals, "bench/micro.txt has no %s of %s", f.unit, f.bench)
			med := median(vals) / f.scale
			q, err := strconv.ParseFloat(f.quoted, 64)
			require.NoError(t, err)
			// The quoted figure is the median rounded to its last digit.
			step := 1.0
			if i := strings.IndexByte(f.quoted, '.'); i >= 0 {
				step = 1 / pow10(len(f.quoted)-i-1)
			}
			require.InDelta(t, med, q, step*0.5+1e-9, "bench/pebble.md says %s %s for %s; the median of %d runs in bench/micro.txt is %.3f", f.quoted, f.unit, f.bench, len(vals), med)
		})
	}
}

func pow10(n int) float64 {
	p := 1.0
	for range n {
		p *= 10
	}
	return p
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// microRuns reads Go benchmark output and returns, for pkg's benchmarks,
// name (without "Benchmark") -> unit -> the value of each run.
func microRuns(t *testing.T, path, pkg string) map[string]map[string][]float64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string]map[string][]float64{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			in = strings.TrimSpace(p) == pkg
			continue
		}
		name, ok := strings.CutPrefix(line, "Benchmark")
		if !in || !ok {
			continue
		}
		fields := strings.Fields(name)
		if len(fields) < 4 {
			continue
		}
		m := out[fields[0]]
		if m == nil {
			m = map[string][]float64{}
			out[fields[0]] = m
		}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", path, line, fmt.Errorf("value %q: %w", fields[i], err))
			}
			m[fields[i+1]] = append(m[fields[i+1]], v)
		}
	}
	require.NoError(t, sc.Err())
	return out
}
