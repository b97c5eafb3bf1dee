package bind

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/stsroller/stsroller/e2e/proc"
)

// startProcess runs bin with args in dir, stdout and stderr appended to
// logPath, in its own process group, dying with the test binary (see
// proc.Start).
func startProcess(name, bin string, args []string, dir, logPath string) (*proc.Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	fmt.Fprintf(logFile, "# %s %s\n", bin, strings.Join(args, " "))
	return proc.Spawn(name, cmd)
}

// waitStopped waits until every thread of the process is stopped (state T in
// /proc), so that a question sent afterwards cannot be answered by a thread
// that had not yet taken the SIGSTOP.
func waitStopped(p *proc.Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if stopped(p.Pid()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) did not stop within %s", p.Name(), p.Pid(), timeout)
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
