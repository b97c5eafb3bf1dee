package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// passing is a soak run that passed: every expected test with a rollout
// (or, when it completes none, a deletion), every command exited 0.
func passing() soakRun {
	r := soakRun{
		dir:      "/soak",
		steps:    []step{{stepE2E, 0}, {stepFuzzList, 0}, {"fuzz FuzzPlan", 0}, {"fuzz FuzzParse", 0}},
		e2eLog:   "ok  \tgithub.com/stsroller/stsroller/e2e\t1800.123s\n",
		fuzzList: "FuzzPlan\nFuzzParse\nok  \tgithub.com/stsroller/stsroller/policy\t0.02s\n",
	}
	for _, w := range expected {
		s := stats{Test: w.test, Checks: 40, Deletions: 12, Completed: 3}
		if w.noRollout != "" {
			s.Completed = 0
		}
		r.stats = append(r.stats, s)
	}
	return r
}

func without(r soakRun, test string) soakRun {
	r.stats = slices.DeleteFunc(slices.Clone(r.stats), func(s stats) bool { return s.Test == test })
	return r
}

func with(r soakRun, test string, f func(*stats)) soakRun {
	r.stats = slices.Clone(r.stats)
	for i := range r.stats {
		if r.stats[i].Test == test {
			f(&r.stats[i])
		}
	}
	return r
}

func withStep(r soakRun, name string, exit int) soakRun {
	r.steps = slices.Clone(r.steps)
	for i := range r.steps {
		if r.steps[i].name == name {
			r.steps[i].exit = exit
		}
	}
	return r
}

func withoutStep(r soakRun, name string) soakRun {
	r.steps = slices.DeleteFunc(slices.Clone(r.steps), func(s step) bool { return s.name == name })
	return r
}

const timeoutLog = `ok
panic: test timed out after 40m0s
	running tests:
		TestFaultLoad (39m58s)
		TestFaultDNS/flipping (12m1s)

goroutine 1 [running]:
testing.(*M).startAlarm.func1()
FAIL	github.com/stsroller/stsroller/e2e	2400.512s
FAIL
`

const buildFailedLog = `# github.com/stsroller/stsroller/e2e [github.com/stsroller/stsroller/e2e.test]
e2e/faults_test.go:12:2: undefined: nope
FAIL	github.com/stsroller/stsroller/e2e [build failed]
FAIL
`

const testFailedLog = `--- FAIL: TestFaultDrain (301.20s)
    faults_test.go:531: the drain of n-0 evicted nothing
--- FAIL: TestFaultOddInput (120.00s)
    --- FAIL: TestFaultOddInput/shared-pdb (119.00s)
FAIL
FAIL	github.com/stsroller/stsroller/e2e	1800.000s
FAIL
`

// TestProblems feeds each check a soak run that should fail it; every
// wanted problem must be reported, and nothing else.
func TestProblems(t *testing.T) {
	everyTest := "did not run"
	tests := []struct {
		name string
		run  soakRun
		// want are substrings: each names at least one problem, and each
		// problem contains one of them.
		want []string
	}{
		{name: "passed", run: passing()},
		{
			name: "go test exited non-zero",
			run:  withStep(passing(), stepE2E, 1),
			want: []string{"the fault suite's go test exited 1"},
		},
		{
			name: "go test left no status",
			run:  withoutStep(passing(), stepE2E),
			want: []string{"go test left no exit status"},
		},
		{
			name: "build failure",
			run: func() soakRun {
				r := withStep(passing(), stepE2E, 1)
				r.stats, r.e2eLog = nil, buildFailedLog
				return r
			}(),
			want: []string{"exited 1: FAIL github.com/stsroller/stsroller/e2e [build failed]", "stats.jsonl is empty", everyTest},
		},
		{
			name: "timeout panic",
			run: func() soakRun {
				r := without(without(withStep(passing(), stepE2E, 1), "TestFaultLoad"), "TestFaultDNS/flipping")
				r.e2eLog = timeoutLog
				return r
			}(),
			want: []string{
				"exited 1: test timed out after 40m0s, running TestFaultLoad (39m58s), TestFaultDNS/flipping (12m1s)",
				"TestFaultLoad: did not run", "TestFaultDNS/flipping: did not run",
			},
		},
		{
			name: "failed tests named from the log",
			run: func() soakRun {
				r := with(with(withStep(passing(), stepE2E, 1), "TestFaultDrain", func(s *stats) { s.Failed = true }),
					"TestFaultOddInput/shared-pdb", func(s *stats) { s.Failed = true })
				r.e2eLog = testFailedLog
				return r
			}(),
			want: []string{
				"exited 1: failed: TestFaultDrain, TestFaultOddInput, TestFaultOddInput/shared-pdb",
				"TestFaultDrain: failed", "TestFaultOddInput/shared-pdb: failed",
			},
		},
		{
			name: "every test skipped",
			run:  func() soakRun { r := passing(); r.stats = nil; return r }(),
			want: []string{"stats.jsonl is empty", everyTest},
		},
		{
			name: "an expected test did not run",
			run:  without(passing(), "TestFaultDrain"),
			want: []string{"TestFaultDrain: did not run"},
		},
		{
			name: "a test with 0 completed rollouts",
			run:  with(passing(), "TestFaultLoad", func(s *stats) { s.Completed = 0 }),
			want: []string{"TestFaultLoad: 0 rollouts completed"},
		},
		{
			name: "a test without rollouts deleted nothing",
			run:  with(passing(), "TestFaultOddInput/orphan-delete", func(s *stats) { s.Deletions = 0 }),
			want: []string{"TestFaultOddInput/orphan-delete: no pod deleted"},
		},
		{
			name: "a violated invariant",
			run:  with(passing(), "TestFaultRestarts", func(s *stats) { s.Violations = 2 }),
			want: []string{"TestFaultRestarts: 2 invariants violated"},
		},
		{
			name: "a failed test",
			run:  with(passing(), "TestFaultAPIErrors", func(s *stats) { s.Failed = true }),
			want: []string{"TestFaultAPIErrors: failed"},
		},
		{
			name: "a test not in the expected list",
			run: func() soakRun {
				r := passing()
				r.stats = append(r.stats, stats{Test: "TestFaultNew", Completed: 1})
				return r
			}(),
			want: []string{"TestFaultNew: not in the list of expected tests"},
		},
		{
			name: "a test not in the expected list completed nothing",
			run: func() soakRun {
				r := passing()
				r.stats = append(r.stats, stats{Test: "TestFaultNew"})
				return r
			}(),
			want: []string{"TestFaultNew: not in the list of expected tests", "TestFaultNew: 0 rollouts completed"},
		},
		{
			name: "a test recorded twice",
			run: func() soakRun {
				r := passing()
				r.stats = append(r.stats, r.stats[0])
				return r
			}(),
			want: []string{"TestFaultRestarts: recorded 2 times"},
		},
		{
			name: "the fuzz listing failed",
			run: func() soakRun {
				r := withoutStep(withoutStep(withStep(passing(), stepFuzzList, 1), "fuzz FuzzPlan"), "fuzz FuzzParse")
				r.fuzzList = "# github.com/stsroller/stsroller/policy\npolicy/plan.go:3:1: syntax error\nFAIL\tgithub.com/stsroller/stsroller/policy [build failed]\n"
				return r
			}(),
			want: []string{"listing the fuzz targets of ./policy/ exited 1 (see /soak/fuzz-list.txt)", "fuzz-list.txt lists no fuzz target"},
		},
		{
			name: "the fuzz listing did not run",
			run: func() soakRun {
				r := withoutStep(withoutStep(withoutStep(passing(), stepFuzzList), "fuzz FuzzPlan"), "fuzz FuzzParse")
				r.fuzzList = ""
				return r
			}(),
			want: []string{"the fuzz targets of ./policy/ were not listed"},
		},
		{
			name: "a listed fuzz target did not run",
			run:  withoutStep(passing(), "fuzz FuzzParse"),
			want: []string{"FuzzParse: listed but not run"},
		},
		{
			name: "a fuzz target failed",
			run:  withStep(passing(), "fuzz FuzzPlan", 1),
			want: []string{"FuzzPlan: failed, exit 1 (see /soak/FuzzPlan.log)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := problems(tc.run, expected)
			checkProblems(t, got, tc.want)
		})
	}
}

// checkProblems fails t unless each of want is in a problem and each
// problem contains one of want.
func checkProblems(t *testing.T, got, want []string) {
	t.Helper()
	for _, w := range want {
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("no problem says %q", w)
		}
	}
	for _, p := range got {
		if !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(p, w) }) {
			t.Errorf("unexpected problem %q", p)
		}
	}
	if t.Failed() {
		t.Logf("problems:\n  %s", strings.Join(got, "\n  "))
	}
}

// TestLoad writes soak directories as the Makefile's soak recipe does and
// checks what load and problems make of them.
func TestLoad(t *testing.T) {
	var full strings.Builder
	for _, w := range expected {
		if w.noRollout != "" {
			full.WriteString(`{"test":"` + w.test + `","checks":3,"violations":0,"deletions":1,"completed":0,"failed":false,"seconds":9}` + "\n")
			continue
		}
		full.WriteString(`{"test":"` + w.test + `","checks":30,"violations":0,"deletions":6,"completed":2,"failed":false,"seconds":99}` + "\n")
	}
	okStatus := "e2e 0\nfuzz-list 0\nfuzz FuzzPlan 0\n"
	okList := "FuzzPlan\nok  \tgithub.com/stsroller/stsroller/policy\t0.01s\n"
	tests := []struct {
		name  string
		files map[string]string // absent: not written
		want  []string
	}{
		{
			name:  "passed",
			files: map[string]string{statsFile: full.String(), statusFile: okStatus, fuzzListFile: okList, e2eLogFile: "ok\n"},
		},
		{
			name:  "an empty stats file",
			files: map[string]string{statsFile: "", statusFile: okStatus, fuzzListFile: okList, e2eLogFile: "ok\n"},
			want:  []string{"stats.jsonl is empty", "did not run"},
		},
		{
			name:  "no stats file",
			files: map[string]string{statusFile: okStatus, fuzzListFile: okList, e2eLogFile: "ok\n"},
			want:  []string{"stats.jsonl is empty", "did not run"},
		},
		{
			name:  "an empty directory",
			files: map[string]string{},
			want:  []string{"stats.jsonl is empty", "did not run", "go test left no exit status", "were not listed"},
		},
		{
			name: "a stats line cut short",
			files: map[string]string{statsFile: full.String() + `{"test":"TestFaultLoad","che`, statusFile: okStatus,
				fuzzListFile: okList, e2eLogFile: "ok\n"},
			want: []string{fmt.Sprintf("stats.jsonl:%d: unexpected end of JSON input", len(expected)+1)},
		},
		{
			name: "a status line without an exit status",
			files: map[string]string{statsFile: full.String(), statusFile: "e2e\nfuzz-list 0\nfuzz FuzzPlan 0\n",
				fuzzListFile: okList, e2eLogFile: "ok\n"},
			want: []string{`status.txt:1: "e2e" is not "NAME EXIT"`, "go test left no exit status"},
		},
		{
			name: "go test and a fuzz target failed",
			files: map[string]string{statsFile: full.String(), statusFile: "e2e 1\nfuzz-list 0\nfuzz FuzzPlan 2\n",
				fuzzListFile: okList, e2eLogFile: testFailedLog},
			want: []string{"go test exited 1: failed: TestFaultDrain", "FuzzPlan: failed, exit 2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r, got := load(dir)
			got = append(got, problems(r, expected)...)
			checkProblems(t, got, tc.want)
		})
	}
}

// TestExpectedNamesEveryFaultTest: the list of expected tests is the fault
// suite's tests as they record stats: each TestFault function of its files,
// or each of its t.Run subtests when it has some. A new test cannot go
// unchecked, and a removed one cannot stay listed.
func TestExpectedNamesEveryFaultTest(t *testing.T) {
	var inSource []string
	files, err := filepath.Glob("../faults*_test.go")
	if err != nil || len(files) < 4 {
		t.Fatalf("fault suite files %v (%v)", files, err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		parent, subtests := "", 0
		endTest := func() {
			if parent != "" && subtests == 0 {
				inSource = append(inSource, parent)
			}
			parent, subtests = "", 0
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "func ") {
				endTest()
				if rest, ok := strings.CutPrefix(line, "func TestFault"); ok {
					name, _, _ := strings.Cut(rest, "(")
					parent = "TestFault" + name
				}
				continue
			}
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), `t.Run("`); ok && parent != "" {
				sub, _, _ := strings.Cut(rest, `"`)
				inSource = append(inSource, parent+"/"+sub)
				subtests++
			}
		}
		endTest()
	}
	var listed []string
	for _, w := range expected {
		listed = append(listed, w.test)
	}
	slices.Sort(inSource)
	slices.Sort(listed)
	if diff := cmp.Diff(inSource, listed); diff != "" {
		t.Errorf("the expected tests differ from the fault suite's (-in e2e/faults*_test.go +expected):\n%s", diff)
	}
}
