package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The files `make soak` leaves in its directory.
const (
	statsFile    = "stats.jsonl"   // one line per fault test, appended by the test itself (e2e.FaultStats)
	statusFile   = "status.txt"    // one line per command of the recipe: "NAME... EXIT"
	e2eLogFile   = "e2e.log"       // go test's output for the fault suite
	fuzzListFile = "fuzz-list.txt" // go test -list's output for ./policy/
	stepE2E      = "e2e"           // the status line of the fault suite's go test
	stepFuzzList = "fuzz-list"     // the status line of the fuzz listing
	stepFuzz     = "fuzz"          // "fuzz FuzzX": the status line of one fuzz target
	fuzzPackage  = "./policy/"     // where the fuzz targets are
	expectedList = "e2e/soaktable" // where to add a new fault test
)

// expectation is a test the soak must see to its end, and what it must have
// done there.
type expectation struct {
	test string
	// noRollout, when set, says why the test completes no rollout by
	// design; it must then have seen pods deleted instead.
	noRollout string
}

// expected lists the fault suite's tests (e2e/faults*_test.go) as they
// write their stats: each must be there,
// passed, with 0 violations and at least one completed rollout.
var expected = []expectation{
	{test: "TestFaultRestarts"},
	{test: "TestFaultAPIErrors"},
	{test: "TestFaultDrain"},
	{test: "TestFaultLoad"},
	{test: "TestFaultDrainHandshake"},
	{test: "TestFaultGroup"},
	{test: "TestFaultLeaderElection"},
	{test: "TestFaultOddInput/zero-replicas"},
	{test: "TestFaultOddInput/scale-mid-rollout"},
	{test: "TestFaultOddInput/orphan-delete", noRollout: "the StatefulSet is deleted (orphaning) mid-rollout"},
	{test: "TestFaultOddInput/foreground-delete", noRollout: "the StatefulSet is deleted (foreground) mid-rollout"},
	{test: "TestFaultOddInput/no-revision-label"},
	{test: "TestFaultOddInput/other-owners"},
	{test: "TestFaultOddInput/shared-pdb"},
	{test: "TestFaultOddInput/stuck-terminating"},
	{test: "TestFaultDNS/primary-down"},
	{test: "TestFaultDNS/outage"},
	{test: "TestFaultDNS/stale-ip"},
	{test: "TestFaultDNS/lagging-secondary"},
	{test: "TestFaultDNS/nxdomain"},
	{test: "TestFaultDNS/flipping"},
}

// stats is one line of the stats file.
type stats struct {
	Test       string         `json:"test"`
	Faults     map[string]int `json:"faults"`
	Requests   int            `json:"requests"`
	Restarts   int            `json:"restarts"`
	Checks     int            `json:"checks"`
	Violations int            `json:"violations"`
	Deletions  int            `json:"deletions"`
	Completed  int            `json:"completed"`
	Failed     bool           `json:"failed"`
	Seconds    float64        `json:"seconds"`
}

// step is one command of the soak recipe and its exit status.
type step struct {
	name string // stepE2E, stepFuzzList, or stepFuzz+" "+target
	exit int
}

// soakRun is what one `make soak` left in its directory.
type soakRun struct {
	dir      string // to name the logs in messages
	stats    []stats
	steps    []step
	e2eLog   string
	fuzzList string
}

// load reads a soak directory. A file that cannot be read or a line that
// cannot be parsed is a problem, not an error: the check goes on with what
// could be read, and the soak fails.
func load(dir string) (soakRun, []string) {
	r := soakRun{dir: dir}
	var probs []string
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			probs = append(probs, err.Error())
		}
		return string(data)
	}
	eachLine := func(name string, f func(n int, line string)) {
		sc := bufio.NewScanner(strings.NewReader(read(name)))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			if line := strings.TrimSpace(sc.Text()); line != "" {
				f(n, line)
			}
		}
	}
	eachLine(statsFile, func(n int, line string) {
		var s stats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d: %v", statsFile, n, err))
			return
		}
		r.stats = append(r.stats, s)
	})
	eachLine(statusFile, func(n int, line string) {
		f := strings.Fields(line)
		exit, err := strconv.Atoi(f[len(f)-1])
		if len(f) < 2 || err != nil {
			probs = append(probs, fmt.Sprintf("%s:%d: %q is not \"NAME EXIT\"", statusFile, n, line))
			return
		}
		r.steps = append(r.steps, step{name: strings.Join(f[:len(f)-1], " "), exit: exit})
	})
	r.e2eLog = read(e2eLogFile)
	r.fuzzList = read(fuzzListFile)
	return r, probs
}

// problems is every reason the soak must fail: a command that failed or did
// not run, a test that failed, violated an invariant, did nothing or did not
// run, and a fuzz target that failed or did not run. None means it passed.
func problems(r soakRun, want []expectation) []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	exits := map[string]int{}
	for _, s := range r.steps {
		exits[s.name] = s.exit
	}
	switch exit, ok := exits[stepE2E]; {
	case !ok:
		add("the fault suite's go test left no exit status in %s", statusFile)
	case exit != 0:
		add("the fault suite's go test exited %d%s", exit, e2eCause(r.e2eLog))
	}

	seen := map[string]int{}
	for _, s := range r.stats {
		seen[s.Test]++
	}
	if len(r.stats) == 0 {
		add("%s is empty: no fault test ran to its end (all skipped, not built, or timed out)", statsFile)
	}
	for test, n := range seen {
		if n > 1 {
			add("%s: recorded %d times (a stale stats file, or -count > 1)", test, n)
		}
	}
	known := map[string]expectation{}
	for _, w := range want {
		known[w.test] = w
		if seen[w.test] == 0 {
			add("%s: did not run (no line in %s): skipped, not matched, or killed before its end", w.test, statsFile)
		}
	}
	for _, s := range r.stats {
		w, ok := known[s.Test]
		if !ok {
			add("%s: not in the list of expected tests (%s): add it there", s.Test, expectedList)
		}
		if s.Failed {
			add("%s: failed", s.Test)
		}
		if s.Violations > 0 {
			add("%s: %d invariants violated", s.Test, s.Violations)
		}
		switch {
		case ok && w.noRollout != "":
			if s.Deletions == 0 {
				add("%s: no pod deleted (it completes no rollout: %s)", s.Test, w.noRollout)
			}
		case s.Completed == 0:
			add("%s: 0 rollouts completed", s.Test)
		}
	}

	switch exit, ok := exits[stepFuzzList]; {
	case !ok:
		add("the fuzz targets of %s were not listed (no %s line in %s)", fuzzPackage, stepFuzzList, statusFile)
	case exit != 0:
		add("listing the fuzz targets of %s exited %d (see %s)", fuzzPackage, exit, filepath.Join(r.dir, fuzzListFile))
	}
	listed := fuzzTargets(r.fuzzList)
	if _, ok := exits[stepFuzzList]; ok && len(listed) == 0 {
		add("%s lists no fuzz target of %s", fuzzListFile, fuzzPackage)
	}
	for _, f := range listed {
		if _, ok := exits[stepFuzz+" "+f]; !ok {
			add("%s: listed but not run", f)
		}
	}
	for _, s := range r.steps {
		if f, ok := strings.CutPrefix(s.name, stepFuzz+" "); ok && s.exit != 0 {
			add("%s: failed, exit %d (see %s)", f, s.exit, filepath.Join(r.dir, f+".log"))
		}
	}
	return probs
}

var fuzzName = regexp.MustCompile(`^Fuzz\w*$`)

// fuzzTargets are the names go test -list printed.
func fuzzTargets(list string) []string {
	var names []string
	for _, line := range strings.Split(list, "\n") {
		if line = strings.TrimSpace(line); fuzzName.MatchString(line) {
			names = append(names, line)
		}
	}
	return names
}

// e2eCause names, from go test's output, why it failed: ": " and the cause,
// or "" when the output says nothing more than the exit status.
func e2eCause(log string) string {
	var causes, failed []string
	lines := strings.Split(log, "\n")
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "panic: test timed out"):
			c := strings.TrimPrefix(line, "panic: ")
			// go test lists the tests still running after it.
			var running []string
			for _, l := range lines[i+1:] {
				if l = strings.TrimSpace(l); l == "" || l == "running tests:" {
					if len(running) > 0 {
						break
					}
					continue
				}
				if !strings.HasPrefix(l, "Test") {
					break
				}
				running = append(running, l)
			}
			if len(running) > 0 {
				c += ", running " + strings.Join(running, ", ")
			}
			causes = append(causes, c)
		case strings.HasSuffix(line, "[build failed]"), strings.HasSuffix(line, "[setup failed]"):
			causes = append(causes, strings.Join(strings.Fields(line), " "))
		case strings.HasPrefix(strings.TrimSpace(line), "--- FAIL: "):
			name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "--- FAIL: "), " ")
			failed = append(failed, name)
		}
	}
	if len(failed) > 0 {
		causes = append(causes, "failed: "+strings.Join(failed, ", "))
	}
	if len(causes) == 0 {
		return ""
	}
	return ": " + strings.Join(causes, "; ")
}
