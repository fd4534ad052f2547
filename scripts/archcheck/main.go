// Command archcheck fails when a package imports one it must not, so
// that the layering of DESIGN (protocol below everything, stores below
// the services, the client and the gateway apart from the stores) holds
// without anyone having to remember it. `make arch` runs it, and so
// does `make test`.
//
//	go run ./scripts/archcheck
//
// It reads the production import graph (`go list -deps`, no test files:
// tests may pull a harness from anywhere, such as a store's tests
// starting a service) and checks every transitive dependency, so an
// import through a third package counts too. A rule broken today is
// listed in known; a violation not listed fails, and so does a listed
// one that is gone, so that the list never outlives the fix.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

const module = "github.com/opentrack/opentrack"

// rule forbids From to depend on To. Both are module-relative; "x/..."
// matches x and every package below it, "..." matches every package.
type rule struct{ From, To string }

var rules = []rule{
	{"protocol/...", "node/..."},
	{"node/store/...", "node/service"},
	{"node/store/...", "node/ingest"},
	{"node/store/...", "node/admin"},
	{"node/client", "node/store/..."},
	{"node/client", "node/ingest"},
	{"node/gateway", "node/store/..."},
	{"node/gateway", "node"},
	{"node/service", "node/host"},
	{"node/service", "node/ingest"},
	{"node/ingest", "node/admin"},
	{"...", "cmd/..."},
}

// edge is one package depending, directly or not, on another.
type edge struct{ From, To string }

// known are the violations of today, each to be removed with its fix.
var known []edge

var (
	errViolation = errors.New("archcheck: forbidden import")
	errStale     = errors.New("archcheck: known violation is gone, remove it from the list")
)

func main() {
	graph, err := load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	errs := append(check(graph, rules, known), checkEntry(graph, entries)...)
	long, err := checkLengths(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	errs = append(errs, long...)
	if len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, e)
		}
		os.Exit(1)
	}
	fmt.Printf("archcheck: %d packages, %d rules, %d known violations, %d entry point lists; no file over %d lines, no function over %d, without a comment saying why\n",
		len(graph), len(rules), len(known), len(entries), maxFileLines, maxFuncLines)
}

// load returns the module's direct import graph, module-relative.
func load() (map[string][]string, error) {
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("archcheck: go list: %w: %s", err, stderr.String())
	}
	graph := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		from, ok := rel(fields[0])
		if !ok {
			continue
		}
		graph[from] = nil
		for _, imp := range fields[1:] {
			if to, ok := rel(imp); ok {
				graph[from] = append(graph[from], to)
			}
		}
	}
	return graph, sc.Err()
}

// rel strips the module path; ok is false outside the module.
func rel(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// match reports whether pkg matches a rule's pattern.
func match(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

// check returns one error per violation not in known, naming the chain
// of imports, and one per known violation that no longer occurs.
func check(graph map[string][]string, rules []rule, known []edge) []error {
	var errs []error
	seen := map[edge]bool{}
	froms := sortedKeys(graph)
	for _, from := range froms {
		paths := reach(graph, from)
		for _, to := range sortedKeys(paths) {
			for _, r := range rules {
				if !match(r.From, from) || !match(r.To, to) {
					continue
				}
				e := edge{from, to}
				if slices.Contains(known, e) {
					seen[e] = true
					break
				}
				errs = append(errs, fmt.Errorf("%w: %s -> %s (rule %s -> %s; via %s)",
					errViolation, from, to, r.From, r.To, strings.Join(paths[to], " -> ")))
				break
			}
		}
	}
	for _, e := range known {
		if !seen[e] {
			errs = append(errs, fmt.Errorf("%w: %s -> %s", errStale, e.From, e.To))
		}
	}
	return errs
}

// reach returns every package from depends on, each with the shortest
// chain of imports that leads to it (from first).
func reach(graph map[string][]string, from string) map[string][]string {
	paths := map[string][]string{}
	queue := []string{from}
	paths[from] = []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, q := range graph[p] {
			if _, ok := paths[q]; ok {
				continue
			}
			paths[q] = append(slices.Clone(paths[p]), q)
			queue = append(queue, q)
		}
	}
	delete(paths, from)
	return paths
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
