package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one component of the cluster, running in its own process group.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // exit status, valid after done
}

// spawn starts cmd on the spawner thread (see spawner).
func spawn(cmd *exec.Cmd) error {
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
// at any time, which would then kill a healthy etcd or apiserver in the middle
// of a test. Locking this goroutine to its thread, and never returning, keeps
// the forking thread alive exactly as long as the test binary.
func spawner() {
	runtime.LockOSThread()
	for req := range spawnRequests {
		req.errc <- req.cmd.Start()
	}
}

// startProcess runs bin with args, its output going to logPath, in a process
// group of its own that dies with the test binary. It records the pid under
// pidDir, so that a later Start can reap it if this test binary is killed
// before it can clean up (see reapStale).
func startProcess(name, bin string, args, env []string, logPath, pidDir string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C on the terminal reaches only the test
		// binary, which then stops the cluster in order; Stop kills the group.
		Setpgid: true,
		// Dies with the test binary, whatever kills it (go test -timeout, SIGKILL).
		Pdeathsig: syscall.SIGKILL,
	}
	fmt.Fprintf(logFile, "# %s %s\n", bin, strings.Join(args, " "))
	if err := spawn(cmd); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	if err := os.WriteFile(filepath.Join(pidDir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		p.stop(0)
		return nil, err
	}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
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

// stop sends SIGTERM to the process group, and SIGKILL once grace has passed.
// It returns once the process has been reaped.
func (p *process) stop(grace time.Duration) {
	pgid := p.cmd.Process.Pid
	if grace > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	// Also after a clean exit: nothing else of the group may survive.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Work directories made by Start are named with this prefix; each holds
// owner.pid (the test binary: pid and start time) and pids/<component>.pid.
const workDirPrefix = "stsroller-e2e-"

// writeOwner records the running test binary as the owner of workDir.
func writeOwner(workDir string) error {
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(workDir, "owner.pid"), fmt.Appendf(nil, "%d %s\n", os.Getpid(), start), 0o644)
}

// ownerAlive reports whether the test binary that made workDir still runs.
// A missing or unreadable owner file counts as alive: the directory may be
// being set up right now by another test binary.
func ownerAlive(workDir string) bool {
	data, err := os.ReadFile(filepath.Join(workDir, "owner.pid"))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(data))
	if len(fields) != 2 {
		return true
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		return true
	}
	start, err := procStartTime(pid)
	if err != nil {
		return false // no such process
	}
	return start == fields[1] // a different start time: the pid was reused
}

// reapStale kills the components of earlier runs under base whose test
// binary is gone, and removes their work directories.
//
// Pdeathsig already kills every child when the test binary dies; this covers
// what it cannot: a binary built without it, or a reused pid. A recorded pid
// is killed only if its command line names that work directory, so a pid that
// now belongs to an unrelated process is left alone.
func reapStale(base string) (reaped []string) {
	dirs, _ := filepath.Glob(filepath.Join(base, workDirPrefix+"*"))
	for _, dir := range dirs {
		reaped = append(reaped, reapDir(dir, true)...)
	}
	return reaped
}

// reapDir kills the components recorded in dir if the test binary that
// started them is gone, and then removes dir if remove is set.
func reapDir(dir string, remove bool) (reaped []string) {
	if _, err := os.Stat(filepath.Join(dir, "owner.pid")); err != nil || ownerAlive(dir) {
		return nil
	}
	pidFiles, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	for _, f := range pidFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 1 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		reaped = append(reaped, fmt.Sprintf("%s (pid %d)", filepath.Base(f), pid))
	}
	if remove {
		_ = os.RemoveAll(dir)
	} else {
		for _, f := range pidFiles {
			_ = os.Remove(f)
		}
	}
	return reaped
}

// procStartTime is field 22 of /proc/<pid>/stat: the start time in clock
// ticks since boot, which tells a process from a later one with the same pid.
func procStartTime(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return "", fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return fields[19], nil // field 22 is the 20th after the command name
}

// rssKiB reads VmRSS of pid from /proc.
func rssKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
