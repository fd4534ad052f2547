// Command testprogress runs `go test -json` and says what it is doing:
// a line per package as it finishes, a line every -every while packages
// run (which tests, for how long), the output of every failed test, and
// at the end the slowest packages and tests. `make test` runs the suite
// through it, so that a long run is never silent.
//
//	go run ./scripts/testprogress [-every 20s] [-json FILE] -- go test -race ./...
//
// It adds -json to the go test command, exits with go test's status (1
// if a test failed though go test exited 0), and with -json keeps the
// raw events, from which the profile can be read again.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time       time.Time
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build-output, build-fail
}

type pkgState struct {
	start   time.Time
	running map[string]time.Time // top-level tests running, by name
	output  map[string][]string  // output by test ("" for the package)
	tests   int
	failed  []string
	done    bool
}

type timing struct {
	name    string
	elapsed float64
}

type reporter struct {
	mu       sync.Mutex
	out      io.Writer
	start    time.Time
	pkgs     map[string]*pkgState
	order    []string
	nDone    int
	failures int
	pkgTimes []timing
	tests    []timing
}

func main() {
	every := flag.Duration("every", 20*time.Second, "how often to say which packages are still running")
	raw := flag.String("json", "", "also write go test's JSON events to this file")
	top := flag.Int("top", 8, "how many of the slowest packages and tests to list at the end")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testprogress [flags] -- go test [test flags] [packages]")
		flag.PrintDefaults()
	}
	flag.Parse()
	args := flag.Args()
	if len(args) < 2 || args[1] != "test" {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(args, *every, *raw, *top))
}

func run(args []string, every time.Duration, raw string, top int) int {
	cmd := exec.Command(args[0], append([]string{"test", "-json"}, args[2:]...)...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		return 1
	}
	var in io.Reader = stdout
	if raw != "" {
		f, err := os.Create(raw)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testprogress:", err)
			return 1
		}
		defer f.Close()
		in = io.TeeReader(stdout, f)
	}
	r := &reporter{out: os.Stdout, start: time.Now(), pkgs: map[string]*pkgState{}}
	fmt.Fprintf(r.out, "testprogress: %s (a line per package as it finishes, and every %s what still runs)\n", strings.Join(cmd.Args, " "), every)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		return 1
	}
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() {
		defer close(ticked)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				r.progress()
			}
		}
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Action == "" {
			fmt.Fprintln(r.out, sc.Text()) // not an event: pass it on
			continue
		}
		r.handle(e)
	}
	close(stop)
	<-ticked
	err = cmd.Wait()
	r.summary(top)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode()
	case err != nil:
		fmt.Fprintln(os.Stderr, "testprogress:", err)
		return 1
	case r.failures > 0:
		return 1
	}
	return 0
}

func (r *reporter) pkg(name string) *pkgState {
	p := r.pkgs[name]
	if p == nil {
		p = &pkgState{start: time.Now(), running: map[string]time.Time{}, output: map[string][]string{}}
		r.pkgs[name] = p
		r.order = append(r.order, name)
	}
	return p
}

func (r *reporter) handle(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.out, e.Output)
		return
	case "build-fail":
		r.failures++
		return
	}
	p := r.pkg(e.Package)
	top := e.Test != "" && !strings.Contains(e.Test, "/")
	switch e.Action {
	case "start":
		p.start = time.Now()
	case "run":
		if top {
			p.running[e.Test] = time.Now()
			p.tests++
		}
	case "output":
		p.output[e.Test] = append(p.output[e.Test], e.Output)
	case "pass", "fail", "skip":
		if e.Test == "" {
			r.finish(e, p)
			return
		}
		if top {
			delete(p.running, e.Test)
			if e.Action != "skip" {
				r.tests = append(r.tests, timing{short(e.Package) + " " + e.Test, e.Elapsed})
			}
		}
		if e.Action == "fail" {
			p.failed = append(p.failed, e.Test)
		}
		if e.Action == "skip" && top {
			// Say what was not checked, even when the package passes.
			fmt.Fprintf(r.out, "SKIP %s %s: %s", short(e.Package), e.Test, lastLine(p.output[e.Test]))
		}
		if e.Action != "fail" {
			delete(p.output, e.Test)
		}
	}
}

// finish reports a package's end: ok or FAIL, its time and its number
// of tests, and the output of what failed.
func (r *reporter) finish(e event, p *pkgState) {
	p.done = true
	r.nDone++
	word := "ok  "
	if e.Action == "fail" {
		word = "FAIL"
		r.failures++
	}
	if e.Action == "skip" {
		word = "--  "
	}
	r.pkgTimes = append(r.pkgTimes, timing{short(e.Package), e.Elapsed})
	fmt.Fprintf(r.out, "%s %-32s %6.1fs  %3d tests   [%s, %d packages done]\n", word, short(e.Package), e.Elapsed, p.tests, since(r.start), r.nDone)
	if e.Action != "fail" {
		return
	}
	for _, t := range p.failed {
		fmt.Fprintf(r.out, "--- %s output:\n%s", t, strings.Join(p.output[t], ""))
	}
	if len(p.failed) == 0 || len(p.output[""]) > 0 {
		fmt.Fprint(r.out, strings.Join(p.output[""], ""))
	}
}

// progress says which packages are running, and their longest test.
func (r *reporter) progress() {
	r.mu.Lock()
	defer r.mu.Unlock()
	var running []string
	for _, name := range r.order {
		p := r.pkgs[name]
		if p.done {
			continue
		}
		s := short(name) + " " + since(p.start)
		var longest string
		var at time.Time
		for t, st := range p.running {
			if longest == "" || st.Before(at) {
				longest, at = t, st
			}
		}
		if longest != "" {
			s += " (" + longest + " " + since(at) + ")"
		}
		running = append(running, s)
	}
	if len(running) == 0 {
		fmt.Fprintf(r.out, "...  %s: %d packages done, building the next\n", since(r.start), r.nDone)
		return
	}
	fmt.Fprintf(r.out, "...  %s: %d packages done; running %s\n", since(r.start), r.nDone, strings.Join(running, ", "))
}

func (r *reporter) summary(top int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byTime := func(a, b timing) int {
		switch {
		case a.elapsed > b.elapsed:
			return -1
		case a.elapsed < b.elapsed:
			return 1
		}
		return strings.Compare(a.name, b.name)
	}
	slices.SortFunc(r.pkgTimes, byTime)
	slices.SortFunc(r.tests, byTime)
	list := func(title string, ts []timing) {
		fmt.Fprintf(r.out, "%s:", title)
		for _, t := range ts[:min(top, len(ts))] {
			fmt.Fprintf(r.out, " %s %.1fs;", t.name, t.elapsed)
		}
		fmt.Fprintln(r.out)
	}
	list("slowest packages", r.pkgTimes)
	list("slowest tests", r.tests)
	result := "PASS"
	if r.failures > 0 {
		result = fmt.Sprintf("FAIL (%d failed)", r.failures)
	}
	fmt.Fprintf(r.out, "%s: %d packages in %s\n", result, r.nDone, since(r.start))
}

// short drops the module path from a package path.
func short(pkg string) string {
	if _, rest, ok := strings.Cut(pkg, "/opentrack/opentrack/"); ok {
		return rest
	}
	if strings.HasSuffix(pkg, "/opentrack/opentrack") {
		return "."
	}
	return pkg
}

func since(t time.Time) string {
	return time.Since(t).Round(time.Second).String()
}

func lastLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" && !strings.HasPrefix(s, "---") {
			return s + "\n"
		}
	}
	return "\n"
}
