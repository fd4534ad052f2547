// Command benchcmp compares the figures of `opentrack bench` runs of two
// commits, measured in the same session: for every figure both sides
// have, the median of each side, the ratio new/old, and whether new is
// worse beyond a noise band, by the figure's direction (rates higher is
// better; latencies, CPU, memory, disk and start-up lower is better).
//
//	go run ./scripts/benchcmp -old a1.json,a2.json -new b1.json,b2.json
//
// It exits 1 when a figure is worse beyond -noise, so that a comparison
// can gate a change; counts (events stored, delivered) are shown, not
// judged.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

var errWorse = errors.New("benchcmp: figures worse than before")

func main() {
	oldFiles := flag.String("old", "", "results.json files of the old commit, comma-separated")
	newFiles := flag.String("new", "", "results.json files of the new commit, comma-separated")
	noise := flag.Float64("noise", 0.10, "relative change within which a figure counts as unchanged")
	flag.Parse()
	if *oldFiles == "" || *newFiles == "" {
		fmt.Fprintln(os.Stderr, "usage: benchcmp -old a.json[,b.json] -new c.json[,d.json]")
		os.Exit(2)
	}
	old, err := load(strings.Split(*oldFiles, ","))
	if err == nil {
		var cur []map[string]float64
		if cur, err = load(strings.Split(*newFiles, ",")); err == nil {
			err = compare(os.Stdout, old, cur, *noise)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, errWorse) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// load reads the top-level numeric figures of each results file.
func load(paths []string) ([]map[string]float64, error) {
	var runs []map[string]float64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var raw map[string]any
		if err := json.Unmarshal(b, &raw); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		run := map[string]float64{}
		for k, v := range raw {
			if f, ok := v.(float64); ok {
				run[k] = f
			}
		}
		runs = append(runs, run)
	}
	return runs, nil
}

// direction is +1 when higher is better, -1 when lower is, 0 for a count
// or a figure that is not judged.
func direction(key string) int {
	switch {
	case key == "elapsed_s", strings.HasSuffix(key, "_events"), key == "watch_delivered":
		return 0
	case strings.Contains(key, "_per_s"), strings.Contains(key, "_over_"):
		return +1
	case strings.HasSuffix(key, "_ms"), strings.Contains(key, "_ms_"), strings.HasSuffix(key, "_mb"),
		strings.Contains(key, "_us_"), strings.HasPrefix(key, "disk_"), strings.HasSuffix(key, "_s"):
		return -1
	}
	return 0
}

func median(runs []map[string]float64, key string) (float64, bool) {
	var v []float64
	for _, r := range runs {
		if f, ok := r[key]; ok {
			v = append(v, f)
		}
	}
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// compare writes the table and returns errWorse, naming the figures,
// when any judged figure is worse by more than noise.
func compare(w io.Writer, old, cur []map[string]float64, noise float64) error {
	keys := map[string]bool{}
	for _, r := range old {
		for k := range r {
			keys[k] = true
		}
	}
	sorted := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "figure\told (median of %d)\tnew (median of %d)\tnew/old\tverdict\t\n", len(old), len(cur))
	var worse []string
	for _, k := range sorted {
		o, ok1 := median(old, k)
		n, ok2 := median(cur, k)
		if !ok1 || !ok2 {
			continue
		}
		ratio := math.NaN()
		if o != 0 {
			ratio = n / o
		}
		verdict := ""
		switch d := direction(k); {
		case d == 0 || math.IsNaN(ratio):
			verdict = "-"
		case d > 0 && ratio < 1-noise, d < 0 && ratio > 1+noise:
			verdict = "WORSE"
			worse = append(worse, k)
		case d > 0 && ratio > 1+noise, d < 0 && ratio < 1-noise:
			verdict = "better"
		default:
			verdict = "same"
		}
		fmt.Fprintf(tw, "%s\t%.4g\t%.4g\t%.3f\t%s\t\n", k, o, n, ratio, verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(worse) > 0 {
		return fmt.Errorf("%w (beyond %.0f%%): %s", errWorse, noise*100, strings.Join(worse, ", "))
	}
	return nil
}
