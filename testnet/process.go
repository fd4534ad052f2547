package testnet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// CommandFunc builds the command that runs `opentrack` with args.
type CommandFunc func(args ...string) *exec.Cmd

const (
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// process is a node running as an OS process.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // why it exited; read after done
}

// selfCommand runs this executable, which is opentrack.
func selfCommand(args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return exec.Command(exe, args...)
}

// startProcess starts command(args) with its output appended to node.log
// in dir.
func startProcess(command CommandFunc, dir string, args ...string) (*process, error) {
	if command == nil {
		command = selfCommand
	}
	logPath := filepath.Join(dir, "node.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := command(args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a terminal's Ctrl-C goes to the testnet,
	// which then stops its nodes in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) signal(s os.Signal) error {
	if err := p.cmd.Process.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// kill sends SIGKILL and waits for the process to go.
func (p *process) kill() error {
	err := p.signal(syscall.SIGKILL)
	<-p.done
	return err
}

// stop sends SIGTERM, the node's clean shutdown, and kills the process
// if it has not exited within grace.
func (p *process) stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
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
		_ = p.kill()
		return fmt.Errorf("testnet: node process did not stop within %s (log: %s)", grace, p.logPath)
	}
}
