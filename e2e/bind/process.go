package bind

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// process is one child (named or external-dns) in a process group of its own.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and been reaped
	err     error         // exit status, valid after done
}

// spawnRequests carries commands to the spawner thread.
var spawnRequests = make(chan spawnRequest)

type spawnRequest struct {
	cmd  *exec.Cmd
	errc chan error
}

func init() { go spawner() }

// spawner starts every child from one OS thread that never exits. Pdeathsig is
// sent when the thread that forked the child dies, not the process
// (golang/go#27505); the runtime may retire an idle thread, which would kill a
// healthy named in the middle of a test. A locked, never-returning goroutine
// keeps the forking thread alive as long as the test binary.
func spawner() {
	runtime.LockOSThread()
	for req := range spawnRequests {
		req.errc <- req.cmd.Start()
	}
}

// startProcess runs bin with args, stdout and stderr appended to logPath, in
// its own process group, dying with the test binary.
func startProcess(name, bin string, args []string, dir, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: Stop kills the group, and a Ctrl-C on the
		// terminal reaches only the test binary.
		Setpgid: true,
		// Dies with the test binary, whatever kills it.
		Pdeathsig: syscall.SIGKILL,
	}
	fmt.Fprintf(logFile, "# %s %s\n", bin, strings.Join(args, " "))
	errc := make(chan error, 1)
	spawnRequests <- spawnRequest{cmd: cmd, errc: errc}
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
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

// stop sends SIGTERM to the process group (waking it first, in case it was
// paused), then SIGKILL once grace has passed, and returns once the process has
// been reaped.
func (p *process) stop(grace time.Duration) error {
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

// signal sends sig to the process group, unless the process has exited.
func (p *process) signal(sig syscall.Signal) error {
	if done, err := p.exited(); done {
		return fmt.Errorf("%s has exited: %v", p.name, err)
	}
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// waitStopped waits until every thread of the process is stopped (state T in
// /proc), so that a question sent afterwards cannot be answered by a thread
// that had not yet taken the SIGSTOP.
func (p *process) waitStopped(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if stopped(p.cmd.Process.Pid) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) did not stop within %s", p.name, p.cmd.Process.Pid, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stopped reports whether every thread of pid is stopped.
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 || i+2 >= len(data) || (data[i+2] != 'T' && data[i+2] != 't') {
			return false
		}
	}
	return true
}

// logTail returns the last lines of the process's log, for error messages.
func logTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	all := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return string(bytes.Join(all, []byte("\n")))
}
