// Package proc runs OpenTrack nodes as OS processes for the testnet and
// the benchmark harness: each with its own log file and process group,
// stopped with SIGTERM, killed with SIGKILL, and measured from /proc.
package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CommandFunc builds the command that runs `opentrack` with args.
type CommandFunc func(args ...string) *exec.Cmd

// Self runs this executable, which is opentrack.
func Self(args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.Command(exe, args...)
}

// Process is a node running as an OS process.
type Process struct {
	cmd *exec.Cmd
	// LogPath is the file its stdout and stderr are appended to.
	LogPath string
	done    chan struct{}
	err     error // why it exited; read after done
}

// Start starts command(args) with its output appended to logName in dir.
// A nil command is Self.
func Start(command CommandFunc, dir, logName string, args ...string) (*Process, error) {
	if command == nil {
		command = Self
	}
	logPath := filepath.Join(dir, logName)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := command(args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a terminal's Ctrl-C goes to the parent,
	// which then stops its nodes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &Process{cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is why the process exited; valid once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Signal sends s; a process that is gone is not an error.
func (p *Process) Signal(s os.Signal) error {
	if err := p.cmd.Process.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// State is the process's state letter from /proc (R, S, T for stopped,
// ...), or "" where /proc cannot tell.
func (p *Process) State() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return ""
	}
	// pid (comm) state ...: comm may hold spaces, so look after the ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// WaitState waits until State is one of want, or "" (no /proc), for up
// to timeout, and returns the last state seen.
func (p *Process) WaitState(timeout time.Duration, want ...string) (string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		st := p.State()
		if st == "" || slices.Contains(want, st) {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (p *Process) Kill() error {
	err := p.Signal(syscall.SIGKILL)
	<-p.done
	return err
}

// Stop sends SIGTERM, the node's clean shutdown, and kills the process
// if it has not exited within grace.
func (p *Process) Stop(grace time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		var ee *exec.ExitError
		if errors.As(p.err, &ee) && !ee.Exited() {
			return nil // ended by the signal
		}
		return p.err
	case <-time.After(grace):
		_ = p.Kill()
		return fmt.Errorf("process %d did not stop within %s (log: %s)", p.Pid(), grace, p.LogPath)
	}
}

// Memory is a process's resident set, from /proc/PID/status.
type Memory struct {
	RSS  int64 // VmRSS, bytes now
	Peak int64 // VmHWM, the highest RSS since the process started
}

// Memory reads the process's resident set size (Linux only).
func (p *Process) Memory() (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("proc: %s: %q", k, v)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return Memory{}, err
	}
	if m.RSS == 0 {
		return Memory{}, fmt.Errorf("proc: no VmRSS for pid %d", p.Pid())
	}
	return m, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU is the processor time the process has used, user and system, from
// /proc/PID/stat (Linux only).
func (p *Process) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("proc: short stat for pid %d", p.Pid())
	}
	var total int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc: stat: %q", s)
		}
		total += n
	}
	return time.Duration(total) * clockTick, nil
}
