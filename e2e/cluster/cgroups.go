package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The real node's processes live in cgroups named after the work directory
// (stsroller-e2e-*), in every hierarchy: the kubelet's cgroup root, under
// which it puts the pods, and daemons/, which holds the namespace holder,
// containerd (so also its shims), the kubelet and kube-proxy (in the pids
// hierarchy only: their memory stays accounted where the test binary's is).
// Killing everything in them stops the node whatever state it is in, also
// for a later run or `make clean-cluster` after this test binary was killed.

// cgroupMounts returns the mount points of the cgroup hierarchies: one per v1
// hierarchy, and the v2 one.
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mountpoint ... - fstype source options
		fields := strings.Fields(sc.Text())
		i := slices.Index(fields, "-")
		if i < 0 || i+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fs := fields[i+1]; fs == "cgroup" || fs == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// trackingMount is the hierarchy that tells which processes are the node's:
// the v1 pids hierarchy, else the v2 one.
func trackingMount() (string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		if filepath.Base(m) == "pids" {
			return m, nil
		}
	}
	for _, m := range mounts {
		if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err == nil {
			return m, nil
		}
	}
	return "", errors.New("no pids or cgroup2 hierarchy mounted")
}

// makeCgroups creates name and name/daemons in every hierarchy.
func makeCgroups(name string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	if len(mounts) == 0 {
		return errors.New("real node: no cgroup hierarchy mounted")
	}
	for _, m := range mounts {
		for _, d := range []string{name, filepath.Join(name, "daemons")} {
			dir := filepath.Join(m, d)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("real node: %w", err)
			}
			// A v1 cpuset cgroup starts with no CPUs and no memory nodes.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					continue
				}
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
					return fmt.Errorf("real node: %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// joinCgroup moves pid into name/daemons of the tracking hierarchy.
func joinCgroup(name string, pid int) error {
	m, err := trackingMount()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(m, name, "daemons", "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// cgroupPids lists the processes in name and below, in the tracking
// hierarchy.
func cgroupPids(name string) ([]int, error) {
	m, err := trackingMount()
	if err != nil {
		return nil, err
	}
	var pids []int
	err = filepath.WalkDir(filepath.Join(m, name), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil // removed meanwhile
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// killCgroups SIGKILLs every process in name and below until none is left
// (a process may fork meanwhile), for at most 20 seconds.
func killCgroups(name string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids, err := cgroupPids(name)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v survive SIGKILL in cgroup %s", pids, name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes name and everything below it in every hierarchy,
// deepest first. A cgroup whose last process is still being reaped cannot be
// removed yet, so it retries for a while.
func removeCgroups(name string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var last error
	for range 50 {
		last = nil
		for _, m := range mounts {
			var dirs []string
			_ = filepath.WalkDir(filepath.Join(m, name), func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
					last = fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
				}
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// reapCgroups kills what a killed run's real node left in its cgroups and
// removes them; name is the base name of its work directory.
func reapCgroups(name string) (reaped []string) {
	if !strings.HasPrefix(name, workDirPrefix) {
		return nil
	}
	pids, err := cgroupPids(name)
	if err != nil {
		return nil
	}
	mounts, _ := cgroupMounts()
	exists := false
	for _, m := range mounts {
		if _, err := os.Stat(filepath.Join(m, name)); err == nil {
			exists = true
		}
	}
	if !exists {
		return nil
	}
	_ = killCgroups(name)
	_ = removeCgroups(name)
	return append(reaped, fmt.Sprintf("cgroup %s (%d processes)", name, len(pids)))
}
