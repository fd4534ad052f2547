package main

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	graph := map[string][]string{
		"node/gateway": {"node/client"},
		"node/client":  {"node/host"},
		"node/host":    {"protocol"},
		"protocol":     nil,
	}
	rules := []rule{{"node/gateway", "protocol"}, {"protocol/...", "node/..."}}

	errs := check(graph, rules, nil)
	if len(errs) != 1 || !errors.Is(errs[0], errViolation) {
		t.Fatalf("transitive violation: got %v", errs)
	}
	if want := "archcheck: forbidden import: node/gateway -> protocol (rule node/gateway -> protocol; via node/gateway -> node/client -> node/host -> protocol)"; errs[0].Error() != want {
		t.Fatalf("got %q, want %q", errs[0], want)
	}

	if errs := check(graph, rules, []edge{{"node/gateway", "protocol"}}); len(errs) != 0 {
		t.Fatalf("known violation: got %v", errs)
	}

	errs = check(graph, rules, []edge{{"node/gateway", "protocol"}, {"node/client", "node/store"}})
	if len(errs) != 1 || !errors.Is(errs[0], errStale) {
		t.Fatalf("stale known violation: got %v", errs)
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"node", "node", true},
		{"node", "node/store", false},
		{"node/store/...", "node/store", true},
		{"node/store/...", "node/store/pebble", true},
		{"node/store/...", "node/storex", false},
		{"...", "cmd/opentrack", true},
	} {
		if got := match(c.pattern, c.pkg); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.pkg, got, c.want)
		}
	}
}

func TestCheckEntry(t *testing.T) {
	graph := map[string][]string{
		"cmd/opentrack": {"node", "node/platform", "protocol"},
		"node":          {"node/host"},
	}
	entries := []entry{{"cmd/...", []string{"node", "node/platform", "protocol"}}}
	if errs := checkEntry(graph, entries); len(errs) != 0 {
		t.Fatalf("entry points only: got %v", errs)
	}
	graph["cmd/opentrack"] = append(graph["cmd/opentrack"], "node/host")
	errs := checkEntry(graph, entries)
	if len(errs) != 1 || !errors.Is(errs[0], errNotEntry) {
		t.Fatalf("a direct import past the entry points: got %v", errs)
	}
}
