// Package proc starts and stops the child processes of the e2e harness
// (etcd, the Kubernetes components, kwok, named, external-dns, stsroller):
// each in a process group of its own that dies with the test binary.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Start starts cmd on the spawner thread (see spawner). Unless the caller set
// cmd.SysProcAttr, the child gets a process group of its own, so that a
// Ctrl-C on the terminal reaches only the test binary and Stop can kill the
// whole group, and it dies with the test binary, whatever kills it (go test
// -timeout, SIGKILL).
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	errc := make(chan error, 1)
	spawnRequests <- spawnRequest{cmd: cmd, errc: errc}
	return <-errc
}

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

var spawnRequests = make(chan spawnRequest)

func init() { go spawner() }

// spawner starts every child process from one OS thread that never exits.
//
// Pdeathsig is delivered when the thread that forked the child dies, not when
// the process does (golang/go#27505). The Go runtime may retire an idle thread
// at any time, which would then kill a healthy etcd or named in the middle of
// a test. Locking this goroutine to its thread, and never returning, keeps
// the forking thread alive exactly as long as the test binary.
func spawner() {
	runtime.LockOSThread()
	for req := range spawnRequests {
		req.errc <- req.cmd.Start()
	}
}

// Process is a child started by Spawn.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // exit status, valid after done
}

// Spawn starts cmd with Start and reaps it when it exits. name is for error
// messages.
func Spawn(name string, cmd *exec.Cmd) (*Process, error) {
	if err := Start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Name is the name given to Spawn.
func (p *Process) Name() string { return p.name }

// Pid is the process's id, which is also its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until the process has exited and been reaped, and returns its
// exit status as exec.Cmd.Wait does.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited, and how; a clean exit is an
// error too, since the harness's children are meant to run until stopped.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited with status 0")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group (waking it first, in case it was
// paused), then SIGKILL once grace has passed; with no grace, SIGKILL at once.
// It returns once the process has been reaped, or with an error if that has
// not happened 10s after SIGKILL.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		_ = syscall.Kill(-pgid, syscall.SIGCONT)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Also after a clean exit: nothing else of the group may survive.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pgid)
	}
}

// Signal sends sig to the process group, unless the process has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	if done, err := p.Exited(); done {
		return fmt.Errorf("%s has exited: %v", p.name, err)
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// LogTail returns the last lines of the log at path, for error messages; ""
// if it cannot be read.
func LogTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return Tail(string(data), lines)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n")
}
