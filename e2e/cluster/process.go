package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stsroller/stsroller/e2e/proc"
)

// process is one component of the cluster, running in its own process group
// (see proc.Start). name, cmd, done and err repeat what proc.Process holds, as
// the fields the rest of the package reads; done waits for the log to be
// closed as well.
type process struct {
	*proc.Process
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited, been reaped and its log closed
	err  error         // exit status, valid after done
}

// startProcess runs bin with args, its output going to logPath, in a process
// group of its own that dies with the test binary. It records the pid under
// pidDir, so that a later Start can reap it if this test binary is killed
// before it can clean up (see reapStale).
func startProcess(name, bin string, args, env []string, logPath, pidDir string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return startCmd(name, cmd, logPath, pidDir)
}

// startCmd is startProcess for a prepared command (its own SysProcAttr, say).
func startCmd(name string, cmd *exec.Cmd, logPath, pidDir string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	fmt.Fprintf(logFile, "# %s\n", strings.Join(cmd.Args, " "))
	pp, err := proc.Spawn(name, cmd)
	if err != nil {
		logFile.Close()
		return nil, err
	}
	p := &process{Process: pp, name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = pp.Wait()
		logFile.Close()
		close(p.done)
	}()
	if err := os.WriteFile(filepath.Join(pidDir, name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		p.stop(0)
		return nil, err
	}
	return p, nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) { return p.Exited() }

// stop sends SIGTERM to the process group, and SIGKILL once grace has passed
// (see proc.Process.Stop). It returns once the process has been reaped and its log closed, or 10s
// after SIGKILL if it has not been.
func (p *process) stop(grace time.Duration) {
	if p.Stop(grace) == nil {
		<-p.done
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
	// A real node's shims and containers are in its cgroups, not in pid files.
	reaped = append(reaped, reapCgroups(filepath.Base(dir))...)
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
