package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
)

// limitMemory gives the Go runtime a soft memory limit of 90% of the
// container's (its cgroup's memory limit), unless GOMEMLIMIT is set or there
// is no limit. Without it the heap grows to twice the live objects before a
// collection, so a controller whose cache nears half its limit is killed for
// memory it would have freed; with it the collector works harder as the heap
// nears the limit instead.
func limitMemory(logger logr.Logger, cgroupRoot string) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit, ok := cgroupMemoryLimit(cgroupRoot)
	if !ok {
		return
	}
	soft := limit / 10 * 9
	debug.SetMemoryLimit(soft)
	logger.Info("Soft memory limit set from the cgroup's", "cgroupLimitBytes", limit, "softLimitBytes", soft)
}

// cgroupMemoryLimit reads the memory limit of the process's cgroup under root
// (/sys/fs/cgroup in a container): cgroup v2's memory.max, else cgroup v1's
// memory/memory.limit_in_bytes. No file, "max", or v1's near-2^63 "no limit":
// none.
func cgroupMemoryLimit(root string) (int64, bool) {
	for _, f := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
