package framework

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PID is the controller process's id, or 0 when it is stopped (or runs in
// the cluster).
func (c *Controller) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid()
}

// Running reports whether the process was started and has not exited.
func (c *Controller) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return false
	}
	exited, _ := c.proc.Exited()
	return !exited
}

// RSS is the controller process's resident memory in bytes, from
// /proc/PID/status.
func (c *Controller) RSS() (int64, error) {
	pid := c.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s is not running", c.opts.Name)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
