//go:build e2e

package e2e

// TestBench is `make bench`: one run on one local cluster that rolls out
// StatefulSets side by side with stsroller and with the built-in
// RollingUpdate, each run of a mode on its own fresh StatefulSet in its own
// namespace, one after the other, and writes bench/results/<stamp>.md (the
// tables), .json (every figure, and the unavailable pods over time),
// <stamp>.png (those series) and <stamp>-bars.png (wall time per mode as
// grouped bars), the plots drawn by the separate module bench/plot.
//
//	make bench        # STSROLLER_BENCH=full
//	make bench-smoke  # STSROLLER_BENCH=smoke: tiny sizes, checks the outputs only
//
// Environment: STSROLLER_BENCH (full | smoke; unset: skipped),
// STSROLLER_BENCH_OUT (output directory; default bench/results of the
// module), STSROLLER_BENCH_CAP (how long a mode may take before it counts as
// "never"; default 3m), STSROLLER_BENCH_READY_DELAY and
// STSROLLER_BENCH_DELETE_DELAY (kwok's delays, default 300ms and 200ms, set
// per pod through the template's annotations so that every mode has the
// same), STSROLLER_BENCH_ONLY (a regular expression: run only the modes whose
// name matches), STSROLLER_BENCH_RUNS (runs of each mode, default 3, smoke 1)
// and STSROLLER_BENCH_LONG_RUNS (runs of the long modes, default 1).
//
// Figures are measured, never asserted: the machine is shared.

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/kwok"
	"github.com/stsroller/stsroller/policy"
)

// benchLabel marks every pod of the benchmark's StatefulSets.
const benchLabel = "bench.stsroller.io/sts"

type benchConfig struct {
	smoke       bool
	readyDelay  time.Duration
	deleteDelay time.Duration
	cap         time.Duration
	outDir      string
	stamp       string
	only        *regexp.Regexp
	// runs of each mode, and of the long ones (benchSpec.long).
	runs, longRuns int
}

func (c benchConfig) step() time.Duration { return c.readyDelay + c.deleteDelay }

func (c benchConfig) runsOf(s benchSpec) int {
	if s.long {
		return c.longRuns
	}
	return c.runs
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

func loadBenchConfig(t *testing.T) benchConfig {
	mode := os.Getenv("STSROLLER_BENCH")
	if mode != "full" && mode != "smoke" {
		t.Skip("set STSROLLER_BENCH=full (make bench) or smoke (make bench-smoke)")
	}
	c := benchConfig{
		smoke:       mode == "smoke",
		readyDelay:  envDuration(t, "STSROLLER_BENCH_READY_DELAY", 300*time.Millisecond),
		deleteDelay: envDuration(t, "STSROLLER_BENCH_DELETE_DELAY", 200*time.Millisecond),
		cap:         envDuration(t, "STSROLLER_BENCH_CAP", 3*time.Minute),
		outDir:      os.Getenv("STSROLLER_BENCH_OUT"),
		stamp:       time.Now().UTC().Format("2006-01-02T1504Z"),
	}
	defRuns := 3
	if c.smoke {
		defRuns = 1
		if os.Getenv("STSROLLER_BENCH_CAP") == "" {
			c.cap = 20 * time.Second
		}
	}
	c.runs = max(1, envInt(t, "STSROLLER_BENCH_RUNS", defRuns))
	c.longRuns = max(1, envInt(t, "STSROLLER_BENCH_LONG_RUNS", 1))
	if c.outDir == "" {
		root, err := framework.ModuleRoot()
		if err != nil {
			t.Fatal(err)
		}
		c.outDir = filepath.Join(root, "bench", "results")
	}
	if re := os.Getenv("STSROLLER_BENCH_ONLY"); re != "" {
		c.only = regexp.MustCompile(re)
	}
	return c
}

// benchSpec is one mode.
type benchSpec struct {
	group string // healthy, pdb, broken, multi, multi-pdb, dns
	n     int    // pods per StatefulSet
	sets  int    // StatefulSets rolled at once
	b     int    // stsroller's max-unavailable, or the built-in's maxUnavailable
	// builtin: the built-in RollingUpdate with maxUnavailable b; else
	// stsroller with max-unavailable b.
	builtin bool
	pdb     int // a PodDisruptionBudget per StatefulSet with this maxUnavailable; 0: none
	broken  int // pods (every n/broken-th ordinal) kept unready at the old revision
	// others: pods of a Deployment in a namespace of their own, beside the
	// StatefulSets (created once for the modes that have it, removed after
	// them); stsroller then watches every namespace.
	others int
	// long: the mode takes longer than about 30 s a run, so it runs
	// STSROLLER_BENCH_LONG_RUNS times (default once) to keep make bench
	// within its time.
	long bool
}

// scenario names the mode without its controller: a stsroller mode and the
// built-in one of the same scenario and b are a pair.
func (s benchSpec) scenario() string {
	n := fmt.Sprintf("%s N=%d", s.group, s.n)
	if s.sets > 1 {
		n = fmt.Sprintf("%s %dx%d", s.group, s.sets, s.n)
	}
	if s.pdb > 0 {
		n += fmt.Sprintf(" pdb=%d", s.pdb)
	}
	if s.broken > 0 {
		n += fmt.Sprintf(" broken=%d", s.broken)
	}
	if s.others > 0 {
		n += fmt.Sprintf(" +%d other pods", s.others)
	}
	return n
}

func (s benchSpec) controller() string {
	if s.builtin {
		return "built-in"
	}
	return "stsroller"
}

func (s benchSpec) mode() string {
	if s.builtin {
		return fmt.Sprintf("built-in maxUnavailable=%d", s.b)
	}
	return fmt.Sprintf("stsroller max-unavailable=%d", s.b)
}

func (s benchSpec) name() string { return s.scenario() + " " + s.mode() }

// Latency summarises durations in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func latencyOf(ds []time.Duration) *Latency {
	if len(ds) == 0 {
		return nil
	}
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d.Microseconds()) / 1000
	}
	return &Latency{Count: len(ms), P50: percentile(ms, 0.5), P99: percentile(ms, 0.99), Max: percentile(ms, 1)}
}

// Point is the number of unavailable pods from T seconds after the start.
type Point struct {
	T float64 `json:"t"`
	U int     `json:"unavailable"`
}

// BenchResult is every figure of one mode: those of its median run, with
// the wall time of every run.
type BenchResult struct {
	Name              string `json:"name"`
	Scenario          string `json:"scenario"`
	Group             string `json:"group"`
	Controller        string `json:"controller"` // stsroller or built-in
	Mode              string `json:"mode"`
	Pods              int    `json:"pods"`
	Sets              int    `json:"statefulsets"`
	MaxUnavailable    int    `json:"max_unavailable"`
	PDBMaxUnavailable int    `json:"pdb_max_unavailable,omitempty"`
	Broken            int    `json:"broken,omitempty"`
	OtherPods         int    `json:"other_pods,omitempty"`

	// Runs is how many runs the mode had (each on a fresh StatefulSet),
	// Long whether it is one of the long modes run fewer times, WallRuns
	// the wall time of each and WallMin, WallMax their range; every other
	// figure is the median run's (by wall time, a run not done counting as
	// the longest).
	Runs          int       `json:"runs"`
	Long          bool      `json:"long,omitempty"`
	CompletedRuns int       `json:"completed_runs"`
	WallRuns      []float64 `json:"wall_seconds_runs"`
	WallMin       float64   `json:"wall_seconds_min"`
	WallMax       float64   `json:"wall_seconds_max"`

	Completed   bool    `json:"completed"`
	Reason      string  `json:"reason,omitempty"`
	WallSeconds float64 `json:"wall_seconds"`
	// IdealSeconds is ceil(N/b') × (delete delay + ready delay), b' being b
	// or, with a PDB, the smaller of b and its maxUnavailable; with the DNS
	// gate, each step also waits for the median propagation.
	IdealSeconds float64 `json:"ideal_seconds"`
	Ratio        float64 `json:"ratio_to_ideal"`

	StartUnavailable int   `json:"start_unavailable"`
	PeakUnavailable  int   `json:"peak_unavailable"`
	PDBExceeded      *bool `json:"pdb_exceeded,omitempty"`
	// Replaced is the old pods whose removal this test's watch saw;
	// NewRemoved the pods created during the rollout that were removed
	// before its end (none in a sound rollout: something else deleted them).
	Replaced   int `json:"pods_replaced"`
	NewRemoved int `json:"new_pods_removed,omitempty"`

	// StsrollerCPUSeconds is the stsroller process's CPU (0 in the built-in
	// modes, where it does not run) and ClusterCPUSeconds that of every
	// process of the local cluster (etcd, kube-apiserver,
	// kube-controller-manager, kube-scheduler, kwok; ClusterCPU by
	// component), both from the new revision to the end of the rollout.
	// CPUPerPodMs is their sum per pod replaced: the whole cost of a mode,
	// comparable between the two controllers.
	StsrollerCPUSeconds float64            `json:"stsroller_cpu_seconds"`
	ClusterCPUSeconds   float64            `json:"cluster_cpu_seconds"`
	ClusterCPU          map[string]float64 `json:"cluster_cpu_seconds_by_component,omitempty"`
	CPUPerPodMs         float64            `json:"cpu_ms_per_pod_replaced"`
	RSSMiB              float64            `json:"rss_mib,omitempty"`
	Syncs               float64            `json:"syncs,omitempty"`
	SyncP50Ms           float64            `json:"sync_p50_ms,omitempty"`
	SyncP99Ms           float64            `json:"sync_p99_ms,omitempty"`
	// SyncSeconds is the time all syncs took together; QueueWaitMeanMs the
	// mean time a StatefulSet waited in the work queue for a worker; and
	// ThrottledSeconds the time requests waited for the client's own rate
	// limit (--kube-api-qps): where the controller's time went.
	SyncSeconds      float64 `json:"sync_seconds,omitempty"`
	QueueWaitMeanMs  float64 `json:"queue_wait_mean_ms,omitempty"`
	ThrottledSeconds float64 `json:"throttled_seconds,omitempty"`
	// Reaction is the idle time of a freed slot: each time a pod of a rolled
	// StatefulSet turns available (Ready, not terminating), in order, to the
	// next removal of an old pod of that StatefulSet (its deletionTimestamp
	// seen, or the pod gone), first in first out, both as this test's watch
	// saw them. FirstRemovals were removals with no freed slot waiting (the
	// first batch, or pods removed while unavailable).
	Reaction      *Latency `json:"reaction,omitempty"`
	FirstRemovals int      `json:"removals_unmatched,omitempty"`
	// PDBLag is the time from a new pod seen Ready to its PDB's status seen
	// allowing one more disruption: the floor the disruption controller sets.
	PDBLag *Latency `json:"pdb_status_lag,omitempty"`
	// DNSPropagation is, with the DNS gate, the time from a new pod's IP to
	// its dns-propagated condition.
	DNSPropagation *Latency `json:"dns_propagation,omitempty"`
	// Requests are stsroller's API requests during the rollout, from its
	// stsroller_api_requests_total, as "verb resource" → count;
	// FailedRequests those answered other than 2xx ("verb resource code");
	// Writes those of a verb other than get, list and watch, WritesPerPod
	// per pod replaced. ListsAfterSync are its LISTs from its informers'
	// sync to the end (relists).
	Requests       map[string]int `json:"api_requests,omitempty"`
	FailedRequests map[string]int `json:"api_requests_failed,omitempty"`
	Writes         int            `json:"api_writes,omitempty"`
	WritesPerPod   float64        `json:"api_writes_per_pod_replaced,omitempty"`
	ListsAfterSync map[string]int `json:"lists_after_sync,omitempty"`
	// APIServerWrites are the writes the API server answered during the
	// rollout, every client's (the controllers, kwok, the scheduler), from
	// apiserver_request_total, as "VERB resource" → count; per pod replaced
	// in APIServerWritesPerPod, comparable between the two controllers.
	APIServerWrites       map[string]int `json:"apiserver_writes,omitempty"`
	APIServerWritesPerPod float64        `json:"apiserver_writes_per_pod_replaced,omitempty"`
	Series                []Point        `json:"series"`
}

// BenchReport is the JSON file.
type BenchReport struct {
	Stamp  string `json:"stamp"`
	Smoke  bool   `json:"smoke"`
	Commit string `json:"commit"`
	// Dirty lists what differs from Commit in the tree (git status, results
	// left aside): the figures are then not Commit's. Binary is
	// $STSROLLER_BINARY when stsroller was not built from the tree.
	Dirty           []string       `json:"dirty,omitempty"`
	Binary          string         `json:"binary,omitempty"`
	ReadyDelayMs    int64          `json:"ready_delay_ms"`
	DeleteDelay     int64          `json:"delete_delay_ms"`
	CapSeconds      float64        `json:"cap_seconds"`
	Runs            int            `json:"runs"`
	LongRuns        int            `json:"long_runs"`
	Nodes           int            `json:"kwok_nodes"`
	DurationSeconds float64        `json:"duration_seconds"`
	FeatureGates    map[string]int `json:"apiserver_feature_gates,omitempty"`
	Results         []BenchResult  `json:"results"`
	Scale           *ScaleReport   `json:"scale,omitempty"`
}

func benchSpecs(c benchConfig) []benchSpec {
	if c.smoke {
		return []benchSpec{
			{group: "healthy", n: 6, sets: 1, b: 3},
			{group: "healthy", n: 6, sets: 1, b: 1, builtin: true},
			{group: "healthy", n: 6, sets: 1, b: 3, builtin: true},
			{group: "pdb", n: 6, sets: 1, b: 3, pdb: 1},
			{group: "broken", n: 10, sets: 1, b: 2, pdb: 1, broken: 1},
			{group: "broken", n: 10, sets: 1, b: 1, pdb: 1, broken: 1, builtin: true},
			{group: "multi", n: 5, sets: 2, b: 2},
			{group: "multi-pdb", n: 5, sets: 2, b: 2, pdb: 2, others: 20},
			{group: "multi-pdb", n: 5, sets: 2, b: 2, pdb: 2, others: 20, builtin: true},
		}
	}
	// Long (one run by default): from bench/results/2026-12-07T1001Z.md,
	// N=100 b=1 takes ~57 s a side, N=300 b=1 ~180 s, the built-in b=1 on
	// the broken StatefulSet ~57 s, 10 × 100 ~57 s (and ~1,000 pods to
	// create and remove a run), 10 × 100 beside 1,500 other pods 40 to 150 s.
	var out []benchSpec
	for _, n := range []int{100, 300} {
		out = append(out, benchSpec{group: "healthy", n: n, sets: 1, b: 1, builtin: true, long: true})
		for _, b := range []int{1, 10, 25} {
			out = append(out, benchSpec{group: "healthy", n: n, sets: 1, b: b, long: b == 1})
			if b > 1 {
				out = append(out, benchSpec{group: "healthy", n: n, sets: 1, b: b, builtin: true})
			}
		}
	}
	for _, b := range []int{10, 25} {
		out = append(out,
			benchSpec{group: "pdb", n: 100, sets: 1, b: b, pdb: b / 2},
			benchSpec{group: "pdb", n: 100, sets: 1, b: b, pdb: b / 2, builtin: true})
	}
	out = append(out,
		benchSpec{group: "broken", n: 100, sets: 1, b: 10, pdb: 10, broken: 10},
		benchSpec{group: "broken", n: 100, sets: 1, b: 1, pdb: 10, broken: 10, builtin: true, long: true},
		benchSpec{group: "broken", n: 100, sets: 1, b: 10, pdb: 10, broken: 10, builtin: true},
		benchSpec{group: "multi", n: 100, sets: 10, b: 10, long: true},
		benchSpec{group: "multi", n: 100, sets: 10, b: 10, builtin: true, long: true},
		// The case of issue 18: ten 100-pod StatefulSets with a PDB of 10
		// each, beside a 1,500-pod Deployment, all ten changed at once.
		benchSpec{group: "multi-pdb", n: 100, sets: 10, b: 10, pdb: 10, others: 1500, long: true},
		benchSpec{group: "multi-pdb", n: 100, sets: 10, b: 10, pdb: 10, others: 1500, builtin: true, long: true},
	)
	return out
}

func TestBench(t *testing.T) {
	began := time.Now()
	cfg := loadBenchConfig(t)
	client := framework.Client(t)
	t.Cleanup(func() { deleteBenchNamespaces(t, client) })
	report := &BenchReport{
		Stamp: cfg.stamp, Smoke: cfg.smoke, Commit: gitCommit(), Dirty: gitDirty(), Binary: os.Getenv(framework.EnvBinary),
		ReadyDelayMs: cfg.readyDelay.Milliseconds(), DeleteDelay: cfg.deleteDelay.Milliseconds(),
		CapSeconds: cfg.cap.Seconds(), Runs: cfg.runs, LongRuns: cfg.longRuns, FeatureGates: featureGates(t, client),
	}
	var specs []benchSpec
	for _, s := range benchSpecs(cfg) {
		if cfg.only == nil || cfg.only.MatchString(s.name()) {
			specs = append(specs, s)
		}
	}
	need := 0
	lastOthers := -1
	for i, s := range specs {
		need = max(need, 2*s.n*s.sets)
		if s.others > 0 {
			// Room for the other pods and the StatefulSets' with half again
			// (15 nodes for 10 × 100 beside 1,500, as in issue 18).
			need = max(need, (s.n*s.sets+s.others)*3/2)
			lastOthers = i
		}
	}
	report.Nodes = ensureNodes(t, client, need)
	var others *otherPods
	othersFailed := false
	for i, s := range specs {
		if s.others > 0 && others == nil && !othersFailed {
			othersFailed = !t.Run("other-pods", func(t *testing.T) { others = startOtherPods(t, client, s.others) })
		}
		if s.others > 0 && others == nil {
			continue
		}
		if res, ok := runBenchSpec(t, cfg, client, s); ok {
			report.Results = append(report.Results, res)
		}
		if i == lastOthers && others != nil {
			others.stop(t, client)
			others = nil
		}
	}
	if !cfg.smoke && os.Getenv("STSROLLER_BENCH_DNS") != "0" && (cfg.only == nil || cfg.only.MatchString("dns")) {
		if res, ok := runRuns(t, "dns", cfg.runs, false, func(t *testing.T) BenchResult {
			return runBenchDNS(t, cfg, client, 100, 10)
		}); ok {
			report.Results = append(report.Results, res)
		}
	}
	if os.Getenv("STSROLLER_BENCH_SCALE") == "1" {
		t.Run("scale", func(t *testing.T) { report.Scale = runBenchScale(t, cfg, client) })
	}
	report.DurationSeconds = time.Since(began).Seconds()
	writeBenchReport(t, cfg, report)
}

// runBenchSpec runs one mode cfg.runsOf(s) times, each on a fresh
// StatefulSet, and returns the median run with the range of wall times.
func runBenchSpec(t *testing.T, cfg benchConfig, client kubernetes.Interface, s benchSpec) (BenchResult, bool) {
	return runRuns(t, s.name(), cfg.runsOf(s), s.long, func(t *testing.T) BenchResult {
		return runBenchMode(t, cfg, client, s)
	})
}

// runRuns runs one mode runs times, each as a subtest of its own, and
// returns the median run (by wall time, a run not done being the longest)
// with every run's wall time; false if no run gave a result.
func runRuns(t *testing.T, name string, runs int, long bool, run func(t *testing.T) BenchResult) (BenchResult, bool) {
	var results []BenchResult
	t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
		for i := range runs {
			var res BenchResult
			ok := t.Run(fmt.Sprintf("run-%d", i+1), func(t *testing.T) { res = run(t) })
			if ok {
				results = append(results, res)
				t.Logf("run %d of %d: %.1f s (done %v)", i+1, runs, res.WallSeconds, res.Completed)
			}
		}
	})
	if len(results) == 0 {
		return BenchResult{}, false
	}
	res := medianRun(results)
	res.Long = long
	t.Logf("%s", modeRow(res))
	return res, true
}

// medianRun is the median of runs by wall time (of an even number, the
// shorter of the middle two), a run not done counting as the longest, with
// every run's wall time.
func medianRun(runs []BenchResult) BenchResult {
	key := func(r BenchResult) float64 {
		if !r.Completed {
			return math.Inf(1)
		}
		return r.WallSeconds
	}
	idx := make([]int, len(runs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(runs[idx[a]]) < key(runs[idx[b]]) })
	res := runs[idx[(len(idx)-1)/2]]
	res.Runs = len(runs)
	res.WallRuns = nil
	res.WallMin, res.WallMax = math.Inf(1), 0
	res.CompletedRuns = 0
	for _, r := range runs {
		res.WallRuns = append(res.WallRuns, r.WallSeconds)
		res.WallMin, res.WallMax = min(res.WallMin, r.WallSeconds), max(res.WallMax, r.WallSeconds)
		if r.Completed {
			res.CompletedRuns++
		}
	}
	return res
}

func gitCommit() string {
	out, err := gitOutput("rev-parse", "--short", "HEAD")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

// gitDirty lists what git status shows changed or untracked (an untracked
// source file is built into stsroller too), leaving out bench/results, where
// the bench writes.
func gitDirty() []string {
	out, err := gitOutput("status", "--porcelain", "--untracked-files=all")
	if err != nil {
		return []string{"git status: " + err.Error()}
	}
	var dirty []string
	for _, line := range strings.Split(out, "\n") {
		if len(line) < 4 {
			continue
		}
		path := strings.TrimSpace(line[3:])
		if strings.HasPrefix(path, "bench/results/") {
			continue
		}
		dirty = append(dirty, strings.TrimSpace(line[:2])+" "+path)
	}
	return dirty
}

func gitOutput(args ...string) (string, error) {
	root, err := framework.ModuleRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("git", args...)
	cmd.Dir = root
	out, err := cmd.Output()
	return string(out), err
}

// featureGates reads kubernetes_feature_enabled of the API server for the
// gates the built-in modes depend on. The controller manager's own gate is
// shown by the built-in modes' peak unavailable (above 1 only with it on).
func featureGates(t *testing.T, client kubernetes.Interface) map[string]int {
	m, err := scrapeAPIServer(t.Context(), client, "kubernetes_feature_enabled{")
	if err != nil {
		t.Logf("reading the API server's /metrics: %v", err)
		return nil
	}
	out := map[string]int{}
	for k, v := range m {
		if _, l := seriesLabels(k); l["name"] == "MaxUnavailableStatefulSet" {
			out[l["name"]] = int(v)
		}
	}
	return out
}

// ensureNodes adds kwok nodes (kwok manages every node with its annotation)
// until the cluster can hold pods pods at 250 a node, waits until they are
// Ready with a pod CIDR, and returns how many kwok nodes there are.
func ensureNodes(t *testing.T, client kubernetes.Interface, pods int) int {
	t.Helper()
	ctx := t.Context()
	want := (pods + 249) / 250
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := 0
	var tmpl *corev1.Node
	for i, n := range nodes.Items {
		if n.Annotations[kwok.NodeAnnotation] == kwok.NodeAnnotationValue {
			have++
			tmpl = &nodes.Items[i]
		}
	}
	if have >= want {
		return have
	}
	if tmpl == nil {
		t.Fatal("no kwok node to copy")
	}
	for i := have; i < want; i++ {
		name := fmt.Sprintf("bench-node-%d", i)
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{kwok.NodeAnnotation: kwok.NodeAnnotationValue},
				Labels: map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
			Status: corev1.NodeStatus{Capacity: tmpl.Status.Capacity, Allocatable: tmpl.Status.Allocatable,
				Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.%d.%d", i/250, i%250+1)}, {Type: corev1.NodeHostName, Address: name}}},
		}
		if _, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	err = framework.Eventually(ctx, 3*time.Minute, time.Second, func(ctx context.Context) error {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes.Items {
			if n.Annotations[kwok.NodeAnnotation] != kwok.NodeAnnotationValue || n.Spec.PodCIDR == "" {
				continue
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue && len(n.Spec.Taints) == 0 {
					ready++
				}
			}
		}
		if ready < want {
			return fmt.Errorf("%d of %d kwok nodes ready", ready, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return want
}

// otherPods is a Deployment of pause pods on the kwok nodes, in a namespace
// of its own: pods that belong to no StatefulSet, beside the rolled ones.
type otherPods struct {
	ns string
	n  int
}

// startOtherPods creates a Deployment of n pods and waits until they are all
// Ready.
func startOtherPods(t *testing.T, client kubernetes.Interface, n int) *otherPods {
	t.Helper()
	ctx := t.Context()
	began := time.Now()
	ns := benchNamespace(ctx, t, client)
	labels := map[string]string{"app": "bench-other"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "other"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(n)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers:                    []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
					TerminationGracePeriodSeconds: ptr.To[int64](0),
				},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	o := &otherPods{ns: ns, n: n}
	err := framework.Eventually(ctx, 15*time.Minute, 2*time.Second, func(ctx context.Context) error {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "other", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if int(d.Status.ReadyReplicas) < n {
			return fmt.Errorf("%d of %d other pods ready", d.Status.ReadyReplicas, n)
		}
		return nil
	})
	if err != nil {
		o.stop(t, client)
		t.Fatal(err)
	}
	t.Logf("%d other pods (a Deployment in %s) ready after %s", n, ns, time.Since(began).Round(time.Second))
	return o
}

// stop deletes the Deployment and waits until its pods are gone.
func (o *otherPods) stop(t *testing.T, client kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bg := metav1.DeletePropagationBackground
	if err := client.AppsV1().Deployments(o.ns).Delete(ctx, "other", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		t.Logf("deleting the other pods' Deployment: %v", err)
	}
	if err := client.AppsV1().ReplicaSets(o.ns).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg}, metav1.ListOptions{}); err != nil {
		t.Logf("deleting the other pods' ReplicaSets: %v", err)
	}
	drainNamespace(t, client, o.ns)
}

// benchRunLabel marks the namespaces of one TestBench run: they are
// deleted together at its end, not after each mode, so that the namespace
// controller's work on them does not count in the next mode's figures.
const benchRunLabel = "bench.stsroller.io/run"

var nsUnsafe = regexp.MustCompile(`[^a-z0-9-]+`)

// benchNamespace creates a namespace for one run of a mode, named after the
// test; deleteBenchNamespaces deletes it at the end of TestBench.
func benchNamespace(ctx context.Context, t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	base := strings.Trim(nsUnsafe.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: base + "-",
		Labels:       map[string]string{framework.TestLabel: "TestBench", benchRunLabel: "true"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// deleteBenchNamespaces deletes the namespaces benchNamespace created.
func deleteBenchNamespaces(t *testing.T, client kubernetes.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: benchRunLabel + "=true"})
	if err != nil {
		t.Logf("listing the bench's namespaces: %v", err)
		return
	}
	bg := metav1.DeletePropagationBackground
	for _, ns := range l.Items {
		if err := client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("deleting namespace %s: %v", ns.Name, err)
		}
	}
}

// benchStatefulSet is a Parallel StatefulSet of pause pods with the
// benchmark's kwok delays; with gate, its pods also wait for the health gate.
func benchStatefulSet(cfg benchConfig, name string, s benchSpec, gate bool) *appsv1.StatefulSet {
	labels := map[string]string{benchLabel: name}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(int32(s.n)),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					kwok.ReadyDelayAnnotation:  cfg.readyDelay.String(),
					kwok.DeleteDelayAnnotation: cfg.deleteDelay.String(),
				}},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "db", Image: "registry.k8s.io/pause:3.10",
						Env: []corev1.EnvVar{{Name: "VERSION", Value: "1"}}}},
					TerminationGracePeriodSeconds: ptr.To[int64](1),
				},
			},
		},
	}
	if gate {
		sts.Spec.Template.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: framework.HealthGate}}
	}
	if s.builtin {
		mu := intstr.FromInt32(int32(s.b))
		sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{MaxUnavailable: &mu}}
	} else {
		sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
		sts.Annotations = map[string]string{
			policy.AnnotationEnabled:        "true",
			policy.AnnotationMaxUnavailable: strconv.Itoa(s.b),
		}
	}
	return sts
}

// usage is what a mode cost, read at its start and at its end.
type usage struct {
	cluster    map[int]string // the local cluster's processes
	clusterCPU map[string]float64
	apiserver  promText // the API server's request counter
	ctlCPU     float64
	ctl        promText // stsroller's /metrics
}

func readUsage(ctx context.Context, t testing.TB, client kubernetes.Interface, procs map[int]string, ctl *benchController) usage {
	u := usage{cluster: procs, clusterCPU: cpuByName(procs)}
	m, err := scrapeAPIServer(ctx, client, apiserverRequestsPrefix)
	if err != nil {
		t.Logf("scraping the API server: %v", err)
	}
	u.apiserver = m
	if ctl != nil {
		u.ctlCPU, u.ctl = ctl.cpu(), ctl.metrics(ctx)
	}
	return u
}

// account fills res with what happened between u0 and u1: CPU, stsroller's
// requests and syncs, the API server's writes, each per pod replaced.
func account(res *BenchResult, u0, u1 usage, ctl *benchController) {
	res.ClusterCPU = map[string]float64{}
	for name, c := range u1.clusterCPU {
		res.ClusterCPU[name] = c - u0.clusterCPU[name]
		res.ClusterCPUSeconds += c - u0.clusterCPU[name]
	}
	res.APIServerWrites = apiserverWrites(u0.apiserver, u1.apiserver)
	replaced := float64(res.Replaced)
	if ctl != nil {
		m0, m1 := u0.ctl, u1.ctl
		res.StsrollerCPUSeconds = u1.ctlCPU - u0.ctlCPU
		res.RSSMiB = ctl.rss()
		n, p50, p99 := syncStats(m0, m1)
		res.Syncs, res.SyncP50Ms, res.SyncP99Ms = n, nanZero(p50*1000), nanZero(p99*1000)
		delta := func(k string) float64 { return m1[k] - m0[k] }
		res.SyncSeconds = delta("stsroller_sync_duration_seconds_sum")
		res.ThrottledSeconds = delta("stsroller_api_rate_limiter_wait_seconds_sum")
		const queue = `stsroller_workqueue_queue_duration_seconds_%s{name="stsroller"}`
		if n := delta(fmt.Sprintf(queue, "count")); n > 0 {
			res.QueueWaitMeanMs = delta(fmt.Sprintf(queue, "sum")) * 1000 / n
		}
		res.Requests, res.FailedRequests = stsrollerRequests(m0, m1)
		res.Writes = writes(res.Requests)
		res.ListsAfterSync = ctl.listsAfterSync(m1)
		if replaced > 0 {
			res.WritesPerPod = float64(res.Writes) / replaced
		}
	}
	if replaced > 0 {
		res.CPUPerPodMs = (res.StsrollerCPUSeconds + res.ClusterCPUSeconds) * 1000 / replaced
		res.APIServerWritesPerPod = float64(sumCounts(res.APIServerWrites)) / replaced
	}
}

func runBenchMode(t *testing.T, cfg benchConfig, client kubernetes.Interface, s benchSpec) BenchResult {
	ctx := t.Context()
	ns := benchNamespace(ctx, t, client)
	defer drainNamespace(t, client, ns)
	var names []string
	var watchers []*framework.PodWatcher
	for i := range s.sets {
		name := "db"
		if s.sets > 1 {
			name = fmt.Sprintf("db-%d", i)
		}
		names = append(names, name)
		sts, err := client.AppsV1().StatefulSets(ns).Create(ctx, benchStatefulSet(cfg, name, s, s.broken > 0), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.builtin && (sts.Spec.UpdateStrategy.RollingUpdate == nil || sts.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable == nil) {
			t.Logf("the API server dropped rollingUpdate.maxUnavailable: MaxUnavailableStatefulSet is off")
		}
		if s.broken > 0 {
			watchers = append(watchers, framework.WatchPods(ctx, t, client, sts, ""))
		}
	}
	total := s.n * s.sets
	rec := newBenchRecorder(ctx, t, client, ns, benchLabel, s.sets, s.n)
	if err := rec.waitReady(ctx, total, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if s.broken > 0 {
		every := s.n / s.broken
		for _, w := range watchers {
			initial := rec.revisions()
			w.SetBroken(func(p *corev1.Pod) bool {
				ord, err := strconv.Atoi(p.Name[strings.LastIndexByte(p.Name, '-')+1:])
				return err == nil && ord%every == 0 && initial[p.Labels[appsv1.ControllerRevisionHashLabelKey]]
			})
		}
		if err := rec.waitReady(ctx, total-s.broken*s.sets, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if s.pdb > 0 {
		for _, name := range names {
			createBenchPDB(t, client, ns, name, s.pdb)
		}
		if err := rec.waitPDBsSettled(ctx, len(names), 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	}

	res := BenchResult{Name: s.name(), Scenario: s.scenario(), Group: s.group, Controller: s.controller(), Mode: s.mode(),
		Pods: s.n, Sets: s.sets, MaxUnavailable: s.b, PDBMaxUnavailable: s.pdb, Broken: s.broken * s.sets, OtherPods: s.others}
	var ctl *benchController
	if !s.builtin {
		scope := ns
		if s.others > 0 {
			// Beside other pods, stsroller watches them too: every namespace.
			scope = ""
		}
		ctl = startBenchController(t, scope)
		// Let it plan the settled StatefulSets once before the clock starts.
		time.Sleep(2 * time.Second)
	}
	procs := localClusterProcs()
	u0 := readUsage(ctx, t, client, procs, ctl)

	start := rec.begin()
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Go(func() {
			patch := `{"spec":{"template":{"spec":{"containers":[{"name":"db","env":[{"name":"VERSION","value":"2"}]}]}}}}`
			if _, err := client.AppsV1().StatefulSets(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Error(err)
				return
			}
			err := framework.Eventually(ctx, time.Minute, 20*time.Millisecond, func(ctx context.Context) error {
				sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				if sts.Status.ObservedGeneration < sts.Generation || sts.Status.UpdateRevision == "" {
					return fmt.Errorf("update revision not yet computed")
				}
				rec.setUpdateRevision(sts.Status.UpdateRevision)
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// A mode gets the configured cap, or three times its ideal where that is
	// longer (300 pods one at a time take 150 s at best); several
	// StatefulSets rolled at once share one control plane, so they get twice.
	eff := s.b
	if s.pdb > 0 {
		eff = min(eff, s.pdb)
	}
	ideal := time.Duration(math.Ceil(float64(s.n)/float64(eff))) * cfg.step()
	limit := max(cfg.cap, 3*ideal)
	if s.sets > 1 {
		limit *= 2
	}
	done := rec.waitDone(ctx, len(names), limit)
	end := time.Now()
	u1 := readUsage(ctx, t, client, procs, ctl)

	snap := rec.result()
	res.Series, res.StartUnavailable, res.PeakUnavailable = snap.series, snap.startU, snap.peak
	res.Reaction, res.PDBLag, res.FirstRemovals = latencyOf(snap.reaction), latencyOf(snap.pdbLag), snap.unmatched
	res.Replaced, res.NewRemoved = snap.replaced, snap.newRemoved
	if s.pdb > 0 {
		exceeded := snap.pdbExceeded(s.pdb)
		res.PDBExceeded = &exceeded
		for set, peak := range snap.setPeakRemoved {
			if peak > max(s.pdb, snap.setStartU[set]) {
				t.Logf("%s: %d pods unavailable at the peak, over the PDB's %d: %s", set, peak, s.pdb, snap.peakPods[set])
			}
		}
	}
	res.IdealSeconds = ideal.Seconds()
	if done {
		res.Completed = true
		res.WallSeconds = snap.doneAt.Sub(start).Seconds()
		res.Ratio = res.WallSeconds / res.IdealSeconds
	} else {
		res.WallSeconds = end.Sub(start).Seconds()
		res.Reason = fmt.Sprintf("not done after %s: %s", limit, rec.progress())
		if !s.builtin {
			res.Reason += "; stsroller status: " + statusSummary(ctx, client, ns, names[0])
		} else {
			res.Reason += "; " + builtinSummary(ctx, client, ns, names[0])
		}
	}
	account(&res, u0, u1, ctl)
	return res
}

func nanZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func createBenchPDB(t *testing.T, client kubernetes.Interface, ns, name string, maxUnavailable int) {
	t.Helper()
	mu := intstr.FromInt32(int32(maxUnavailable))
	_, err := client.PolicyV1().PodDisruptionBudgets(ns).Create(t.Context(), &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{benchLabel: name}},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &mu,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{benchLabel: name}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// statusSummary is the phase, reason and message of stsroller's status
// annotation.
func statusSummary(ctx context.Context, client kubernetes.Interface, ns, name string) string {
	sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	raw := sts.Annotations[policy.AnnotationStatus]
	var st policy.Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return fmt.Sprintf("unreadable (%v)", err)
	}
	msg := st.Message
	if len(msg) > 160 {
		msg = msg[:160] + "…"
	}
	return fmt.Sprintf("%s/%s: %s", st.Phase, st.Reason, msg)
}

func builtinSummary(ctx context.Context, client kubernetes.Interface, ns, name string) string {
	sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("built-in status: %d ready, %d available, %d updated of %d (the built-in controller waits for unavailable pods to recover)",
		sts.Status.ReadyReplicas, sts.Status.AvailableReplicas, sts.Status.UpdatedReplicas, *sts.Spec.Replicas)
}

// drainNamespace deletes the StatefulSets and pods of ns and waits until the
// pods are gone, so that the next mode starts on a quiet cluster; the
// namespace itself goes when the test ends.
func drainNamespace(t *testing.T, client kubernetes.Interface, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bg := metav1.DeletePropagationBackground
	if err := client.AppsV1().StatefulSets(ns).DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &bg}, metav1.ListOptions{}); err != nil {
		t.Logf("deleting the StatefulSets of %s: %v", ns, err)
	}
	if err := client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
		t.Logf("deleting the pods of %s: %v", ns, err)
	}
	err := framework.Eventually(ctx, 5*time.Minute, time.Second, func(ctx context.Context) error {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			return err
		}
		if len(l.Items) > 0 {
			return fmt.Errorf("pods of %s still there", ns)
		}
		return nil
	})
	if err != nil {
		t.Logf("%v", err)
	}
}

// benchRecorder watches every benchmark pod (and PDB) of a namespace and
// records, as this watch sees them, the unavailable pods over time (in all
// and per StatefulSet), pods turning available, old pods being removed, and
// PDBs allowing more disruptions.
type benchRecorder struct {
	store    cache.Store
	pdbStore cache.Store
	replicas int // pods of all the StatefulSets
	perSet   int // pods of one

	mu        sync.Mutex
	started   bool
	start     time.Time
	old       map[types.UID]bool // the pods there when the clock started
	removed   map[types.UID]bool // old pods whose removal was seen
	updateRev map[string]bool
	series    []Point
	lastU     int
	startU    int
	peak      int
	setStartU map[string]int // unavailable pods of each StatefulSet at the start
	// setPeakRemoved is the peak of each StatefulSet's unavailable pods,
	// without those that turned unready on their own (see measureLocked):
	// what a PDB bounds. peakPods names, per StatefulSet, its unavailable
	// pods when that peak was last raised above its start.
	setPeakRemoved map[string]int
	peakPods       map[string]string
	// readySeen is when each pod was last seen Ready and not terminating
	// since the clock started (podChanged).
	readySeen map[types.UID]time.Time
	doneAt    time.Time
	// freed holds, per StatefulSet, the times its pods turned available that
	// no removal has taken yet, oldest first: the slots waiting for the
	// controller.
	freed     map[string][]time.Time
	reaction  []time.Duration
	unmatched int
	replaced  int
	// newRemoved counts pods created during the rollout that were removed
	// before its end: none in a sound rollout.
	newRemoved int
	readyAt    []time.Time // new pods seen Ready
	pdbFreeAt  []time.Time
	allowed    map[string]int32
}

func newBenchRecorder(ctx context.Context, t testing.TB, client kubernetes.Interface, ns, selector string, sets, perSet int) *benchRecorder {
	r := &benchRecorder{replicas: sets * perSet, perSet: perSet, lastU: -1, updateRev: map[string]bool{}, allowed: map[string]int32{}}
	factory := kinformers.NewSharedInformerFactoryWithOptions(client, 0, kinformers.WithNamespace(ns),
		kinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = selector
		}))
	pods := factory.Core().V1().Pods().Informer()
	r.store = pods.GetStore()
	_, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { r.podChanged(nil, obj.(*corev1.Pod)) },
		UpdateFunc: func(old, cur any) {
			r.podChanged(old.(*corev1.Pod), cur.(*corev1.Pod))
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			now := time.Now()
			r.mu.Lock()
			defer r.mu.Unlock()
			if p, _ := obj.(*corev1.Pod); p != nil {
				r.removedLocked(p, now)
			}
			r.measureLocked(now)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	pdbs := factory.Policy().V1().PodDisruptionBudgets().Informer()
	r.pdbStore = pdbs.GetStore()
	_, err = pdbs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.pdbChanged(obj.(*policyv1.PodDisruptionBudget)) },
		UpdateFunc: func(_, cur any) { r.pdbChanged(cur.(*policyv1.PodDisruptionBudget)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	return r
}

// setOf names a pod's StatefulSet: the benchmark's label, else its
// controller.
func setOf(p *corev1.Pod) string {
	if s, ok := p.Labels[benchLabel]; ok {
		return s
	}
	if ref := metav1.GetControllerOf(p); ref != nil {
		return ref.Name
	}
	return ""
}

func (r *benchRecorder) podChanged(old, cur *corev1.Pod) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if (old == nil || old.DeletionTimestamp == nil) && cur.DeletionTimestamp != nil {
		r.removedLocked(cur, now)
	}
	if r.started && cur.DeletionTimestamp == nil && framework.PodReady(cur) {
		r.readySeen[cur.UID] = now
	}
	if r.started && cur.DeletionTimestamp == nil && framework.PodReady(cur) && (old == nil || !framework.PodReady(old)) {
		// Available again: a slot freed, waiting for the next removal.
		set := setOf(cur)
		r.freed[set] = append(r.freed[set], now)
		if !r.old[cur.UID] {
			r.readyAt = append(r.readyAt, now)
		}
	}
	r.measureLocked(now)
}

// removedLocked records the removal of an old pod (its deletionTimestamp
// seen, or the pod gone without one), once, and takes the oldest freed slot
// of its StatefulSet: the time between is the slot's idle time.
func (r *benchRecorder) removedLocked(p *corev1.Pod, now time.Time) {
	if !r.started || r.removed[p.UID] {
		return
	}
	r.removed[p.UID] = true
	if !r.old[p.UID] {
		// A pod created during the rollout, removed: by nobody the
		// rollout asked.
		r.newRemoved++
		return
	}
	r.replaced++
	set := setOf(p)
	if q := r.freed[set]; len(q) > 0 {
		r.reaction = append(r.reaction, now.Sub(q[0]))
		r.freed[set] = q[1:]
	} else {
		r.unmatched++
	}
}

func (r *benchRecorder) pdbChanged(p *policyv1.PodDisruptionBudget) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.allowed[p.Name]; ok && p.Status.DisruptionsAllowed > prev && r.started {
		r.pdbFreeAt = append(r.pdbFreeAt, now)
	}
	r.allowed[p.Name] = p.Status.DisruptionsAllowed
}

// countsLocked returns the pods Ready and not terminating, those of them at
// an update revision, the Ready ones per StatefulSet (with every StatefulSet
// that has a pod), and per StatefulSet the pods that turned unready on their
// own: not terminating, seen Ready before in this run. No controller's
// removal made those unavailable, and no PDB can keep them available (an
// involuntary disruption, as a kubelet's readiness probe failing).
func (r *benchRecorder) countsLocked() (ready, updatedReady int, bySet, fell map[string]int) {
	bySet, fell = map[string]int{}, map[string]int{}
	for _, obj := range r.store.List() {
		p := obj.(*corev1.Pod)
		set := setOf(p)
		if _, ok := bySet[set]; !ok {
			bySet[set] = 0
		}
		if p.DeletionTimestamp != nil {
			continue
		}
		if !framework.PodReady(p) {
			if _, ok := r.readySeen[p.UID]; ok {
				fell[set]++
			}
			continue
		}
		ready++
		bySet[set]++
		if r.updateRev[p.Labels[appsv1.ControllerRevisionHashLabelKey]] {
			updatedReady++
		}
	}
	return ready, updatedReady, bySet, fell
}

func (r *benchRecorder) counts() (ready, updatedReady int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ready, updatedReady, _, _ = r.countsLocked()
	return ready, updatedReady
}

func (r *benchRecorder) measure() {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.measureLocked(now)
}

// measureLocked records the unavailable pods now, in all and per
// StatefulSet, and when every pod is Ready at an update revision.
func (r *benchRecorder) measureLocked(now time.Time) {
	if !r.started {
		return
	}
	ready, updated, bySet, fell := r.countsLocked()
	u := r.replicas - ready
	if u != r.lastU {
		r.series = append(r.series, Point{T: now.Sub(r.start).Seconds(), U: u})
		r.lastU = u
	}
	r.peak = max(r.peak, u)
	for set, n := range bySet {
		if u := r.perSet - n - fell[set]; u > r.setPeakRemoved[set] {
			r.setPeakRemoved[set] = u
			if u > r.setStartU[set] {
				r.peakPods[set] = r.unavailableLocked(set, now)
			}
		}
	}
	if updated == r.replicas && r.doneAt.IsZero() && len(r.updateRev) > 0 {
		r.doneAt = now
	}
}

// unavailableLocked describes the StatefulSet's pods that are not Ready or
// are terminating, and the ordinals missing.
func (r *benchRecorder) unavailableLocked(set string, now time.Time) string {
	var out []string
	present := map[string]bool{}
	for _, obj := range r.store.List() {
		p := obj.(*corev1.Pod)
		if setOf(p) != set {
			continue
		}
		present[p.Name] = true
		if p.DeletionTimestamp == nil && framework.PodReady(p) {
			continue
		}
		rev := "old"
		if r.updateRev[p.Labels[appsv1.ControllerRevisionHashLabelKey]] {
			rev = "new"
		}
		d := fmt.Sprintf("%s (%s, %s", p.Name, rev, p.Status.Phase)
		if p.DeletionTimestamp != nil {
			d += ", terminating"
		}
		if at, ok := r.readySeen[p.UID]; ok {
			d += fmt.Sprintf(", seen Ready %.3fs ago", now.Sub(at).Seconds())
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady || c.Type == corev1.DisruptionTarget {
				d += fmt.Sprintf(", %s=%s %s %.3fs ago", c.Type, c.Status, c.Reason, now.Sub(c.LastTransitionTime.Time).Seconds())
			}
		}
		out = append(out, d+")")
	}
	missing := r.perSet - len(present)
	sort.Strings(out)
	return fmt.Sprintf("%d missing; %s", missing, strings.Join(out, "; "))
}

func (r *benchRecorder) revisions() map[string]bool {
	out := map[string]bool{}
	for _, obj := range r.store.List() {
		out[obj.(*corev1.Pod).Labels[appsv1.ControllerRevisionHashLabelKey]] = true
	}
	return out
}

func (r *benchRecorder) waitReady(ctx context.Context, n int, timeout time.Duration) error {
	return framework.Eventually(ctx, timeout, 200*time.Millisecond, func(context.Context) error {
		ready, _ := r.counts()
		if ready != n || len(r.store.List()) != r.replicas {
			return fmt.Errorf("%d of %d pods ready, want %d", ready, len(r.store.List()), n)
		}
		return nil
	})
}

// waitPDBsSettled waits until n PDBs have a current status.
func (r *benchRecorder) waitPDBsSettled(ctx context.Context, n int, timeout time.Duration) error {
	return framework.Eventually(ctx, timeout, 200*time.Millisecond, func(context.Context) error {
		settled := 0
		for _, obj := range r.pdbStore.List() {
			p := obj.(*policyv1.PodDisruptionBudget)
			if p.Status.ObservedGeneration == p.Generation && p.Status.ExpectedPods > 0 {
				settled++
			}
		}
		if settled != n {
			return fmt.Errorf("%d of %d PDBs have a status", settled, n)
		}
		return nil
	})
}

// begin starts the clock: the pods there now are the old ones.
func (r *benchRecorder) begin() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readySeen = map[types.UID]time.Time{}
	ready, _, bySet, _ := r.countsLocked()
	r.start = time.Now()
	r.old, r.removed = map[types.UID]bool{}, map[types.UID]bool{}
	for _, obj := range r.store.List() {
		p := obj.(*corev1.Pod)
		r.old[p.UID] = true
		if p.DeletionTimestamp == nil && framework.PodReady(p) {
			r.readySeen[p.UID] = r.start
		}
	}
	r.setStartU, r.setPeakRemoved, r.freed, r.peakPods = map[string]int{}, map[string]int{}, map[string][]time.Time{}, map[string]string{}
	for set, n := range bySet {
		r.setStartU[set], r.setPeakRemoved[set] = r.perSet-n, r.perSet-n
	}
	r.started = true
	r.startU = r.replicas - ready
	r.lastU, r.peak = r.startU, r.startU
	r.series = []Point{{T: 0, U: r.startU}}
	return r.start
}

func (r *benchRecorder) setUpdateRevision(rev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.updateRev[rev] = true
	r.measureLocked(time.Now())
}

// waitDone waits until every pod is Ready at an update revision of each of
// sets StatefulSets, or cap passes.
func (r *benchRecorder) waitDone(ctx context.Context, sets int, cap time.Duration) bool {
	deadline := time.Now().Add(cap)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.measure()
		r.mu.Lock()
		done := !r.doneAt.IsZero() && len(r.updateRev) >= sets
		r.mu.Unlock()
		if done {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func (r *benchRecorder) progress() string {
	ready, updated := r.counts()
	return fmt.Sprintf("%d of %d pods ready, %d ready at the new revision", ready, r.replicas, updated)
}

type benchSnapshot struct {
	series           []Point
	startU, peak     int
	setStartU        map[string]int
	setPeakRemoved   map[string]int
	peakPods         map[string]string
	doneAt           time.Time
	reaction, pdbLag []time.Duration
	unmatched        int
	replaced         int
	newRemoved       int
}

// pdbExceeded says whether a StatefulSet had more pods unavailable than its
// PDB's maxUnavailable (or than it started with, if more), not counting pods
// that turned unready on their own.
func (s benchSnapshot) pdbExceeded(pdb int) bool {
	for set, peak := range s.setPeakRemoved {
		if peak > max(pdb, s.setStartU[set]) {
			return true
		}
	}
	return false
}

func (r *benchRecorder) result() benchSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := benchSnapshot{series: append([]Point(nil), r.series...), startU: r.startU, peak: r.peak, doneAt: r.doneAt,
		reaction: append([]time.Duration(nil), r.reaction...), unmatched: r.unmatched, replaced: r.replaced, newRemoved: r.newRemoved,
		setStartU: map[string]int{}, setPeakRemoved: maps.Clone(r.setPeakRemoved), peakPods: maps.Clone(r.peakPods)}
	for k, v := range r.setStartU {
		s.setStartU[k] = v
	}
	for _, f := range r.pdbFreeAt {
		// The latest new pod seen Ready before the PDB allowed more.
		i := sort.Search(len(r.readyAt), func(i int) bool { return !r.readyAt[i].Before(f) }) - 1
		if i >= 0 {
			s.pdbLag = append(s.pdbLag, f.Sub(r.readyAt[i]))
		}
	}
	return s
}

// writeBenchReport writes <stamp>.json, <stamp>.md and, through bench/plot,
// <stamp>.png and <stamp>-bars.png, then checks that they are there and
// readable.
func writeBenchReport(t *testing.T, cfg benchConfig, rep *BenchReport) {
	if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(cfg.outDir, cfg.stamp)
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(base+".json", data, 0o644); err != nil {
		t.Fatal(err)
	}
	md := markdownReport(rep)
	if err := os.WriteFile(base+".md", []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s.md and .json:\n%s", base, md)
	root, err := framework.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", ".", "-in", base+".json", "-out", base+".png")
	cmd.Dir = filepath.Join(root, "bench", "plot")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bench/plot: %v\n%s", err, out)
	}
	// The outputs must be there and readable, whatever the figures.
	var back BenchReport
	if raw, err := os.ReadFile(base + ".json"); err != nil || json.Unmarshal(raw, &back) != nil || len(back.Results) != len(rep.Results) {
		t.Errorf("%s.json does not read back: %v", base, err)
	}
	for _, r := range rep.Results {
		if !strings.Contains(md, "| "+r.Name+" |") {
			t.Errorf("%s.md has no row for %s", base, r.Name)
		}
	}
	for _, p := range []string{base + ".png", base + "-bars.png"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("no plot: %v", err)
		}
	}
	pngs, _ := filepath.Glob(base + "*.png")
	for _, p := range pngs {
		f, err := os.Open(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if _, err := png.Decode(f); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		f.Close()
	}
}

func fmtF(v float64, prec int) string {
	if v == 0 {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func fmtLat(l *Latency) string {
	if l == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f / %.0f (%d)", l.P50, l.P99, l.Max, l.Count)
}

// fmtWall is the median wall time, with the range of several runs, or
// "never" when the median run was not done.
func fmtWall(r BenchResult) string {
	if !r.Completed {
		return fmt.Sprintf("**never** (%.0f)", r.WallSeconds)
	}
	if r.Runs > 1 {
		return fmt.Sprintf("%.1f (%.1f–%.1f)", r.WallSeconds, r.WallMin, r.WallMax)
	}
	return fmt.Sprintf("%.1f", r.WallSeconds)
}

func fmtRuns(r BenchResult) string {
	s := strconv.Itoa(r.Runs)
	if r.CompletedRuns < r.Runs {
		s = fmt.Sprintf("%d (%d done)", r.Runs, r.CompletedRuns)
	}
	if r.Long {
		s += " †"
	}
	return s
}

const modeHeader = "| mode | runs | wall s (range) | ideal s | / ideal | peak unavailable (start) | PDB exceeded | CPU s stsroller + cluster | CPU ms/pod | stsroller writes/pod | API server writes/pod | syncs | sync p50/p99 ms | reaction ms p50/p99/max (n) | PDB lag ms p50/p99/max |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"

func modeRow(r BenchResult) string {
	exceeded := "–"
	if r.PDBExceeded != nil {
		exceeded = map[bool]string{true: "**yes**", false: "no"}[*r.PDBExceeded]
	}
	ratio := "–"
	if r.Completed {
		ratio = fmt.Sprintf("%.2f", r.Ratio)
	}
	sync := "–"
	if r.Syncs > 0 {
		sync = fmt.Sprintf("%.1f / %.1f", r.SyncP50Ms, r.SyncP99Ms)
	}
	cpu := fmt.Sprintf("%.2f + %.1f", r.StsrollerCPUSeconds, r.ClusterCPUSeconds)
	if r.Controller == "built-in" {
		cpu = fmt.Sprintf("– + %.1f", r.ClusterCPUSeconds)
	}
	writesPerPod := "–"
	if r.Controller == "stsroller" && r.Requests != nil {
		writesPerPod = fmt.Sprintf("%.2f", r.WritesPerPod)
	}
	return fmt.Sprintf("| %s | %s | %s | %.1f | %s | %d (%d) | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		r.Name, fmtRuns(r), fmtWall(r), r.IdealSeconds, ratio, r.PeakUnavailable, r.StartUnavailable, exceeded,
		cpu, fmtF(r.CPUPerPodMs, 1), writesPerPod, fmtF(r.APIServerWritesPerPod, 1), fmtF(r.Syncs, 0), sync,
		fmtLat(r.Reaction), fmtLat(r.PDBLag))
}

// benchPair is a scenario and b with the stsroller and the built-in mode of
// it (either may be missing).
type benchPair struct {
	scenario string
	b        int
	ours     *BenchResult
	builtin  *BenchResult
}

func pairs(results []BenchResult) []*benchPair {
	var out []*benchPair
	index := map[string]*benchPair{}
	for i := range results {
		r := &results[i]
		k := fmt.Sprintf("%s|%d", r.Scenario, r.MaxUnavailable)
		p := index[k]
		if p == nil {
			p = &benchPair{scenario: r.Scenario, b: r.MaxUnavailable}
			index[k] = p
			out = append(out, p)
		}
		if r.Controller == "built-in" {
			p.builtin = r
		} else {
			p.ours = r
		}
	}
	return out
}

func comparisonRow(p *benchPair) string {
	wall := func(r *BenchResult) string {
		if r == nil {
			return "–"
		}
		return fmtWall(*r)
	}
	toIdeal := func(r *BenchResult) string {
		if r == nil || !r.Completed {
			return "–"
		}
		return fmt.Sprintf("%.2f", r.Ratio)
	}
	ratio := "–"
	if p.ours != nil && p.builtin != nil && p.ours.Completed && p.builtin.Completed {
		ratio = fmt.Sprintf("**%.2f**", p.ours.WallSeconds/p.builtin.WallSeconds)
	}
	var ideal float64
	long := false
	runs := ""
	for _, r := range []*BenchResult{p.ours, p.builtin} {
		if r != nil {
			ideal, long = r.IdealSeconds, long || r.Long
			if runs == "" {
				runs = strconv.Itoa(r.Runs)
			} else if runs != strconv.Itoa(r.Runs) {
				runs += " / " + strconv.Itoa(r.Runs)
			}
		}
	}
	if long {
		runs += " †"
	}
	perPod := func(r *BenchResult) string {
		if r == nil {
			return "–"
		}
		return fmtF(r.CPUPerPodMs, 1)
	}
	return fmt.Sprintf("| %s | %d | %s | %.1f | %s | %s | %s | %s | %s | %s / %s |\n", p.scenario, p.b, runs, ideal,
		wall(p.ours), wall(p.builtin), ratio, toIdeal(p.ours), toIdeal(p.builtin), perPod(p.ours), perPod(p.builtin))
}

func markdownReport(rep *BenchReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# stsroller bench %s\n\n", rep.Stamp)
	if len(rep.Dirty) == 0 {
		fmt.Fprintf(&b, "**Commit %s**, clean tree.", rep.Commit)
	} else {
		shown := rep.Dirty
		if len(shown) > 8 {
			shown = append(append([]string(nil), shown[:8]...), fmt.Sprintf("and %d more", len(rep.Dirty)-8))
		}
		fmt.Fprintf(&b, "**Commit %s with a DIRTY tree**: %d changes not committed (%s); these figures are not those of %s.",
			rep.Commit, len(rep.Dirty), strings.Join(shown, ", "), rep.Commit)
	}
	if rep.Binary != "" {
		fmt.Fprintf(&b, " stsroller binary: %s (STSROLLER_BINARY, not built from the tree).", rep.Binary)
	}
	fmt.Fprintf(&b, "\n\nLocal cluster (e2e/cluster, %d kwok nodes); kwok ready delay %d ms, delete delay %d ms; cap per mode %s, or 3 × its ideal if longer, doubled for several StatefulSets at once",
		rep.Nodes, rep.ReadyDelayMs, rep.DeleteDelay, time.Duration(rep.CapSeconds*float64(time.Second)))
	if len(rep.FeatureGates) > 0 {
		fmt.Fprintf(&b, "; API server gates %v", rep.FeatureGates)
	}
	fmt.Fprintf(&b, ". Runs per mode, each on a fresh StatefulSet: %d, the long modes (†) %d; wall time is the median with the range (min–max) of the runs, every other figure the median run's. The whole run took %.0f min.",
		rep.Runs, rep.LongRuns, rep.DurationSeconds/60)
	if rep.Smoke {
		b.WriteString(" **Smoke run** (tiny sizes: the figures mean nothing).")
	}
	b.WriteString("\n\n## stsroller against the built-in\n\n" +
		"stsroller's b is its max-unavailable, the built-in's its RollingUpdate maxUnavailable. " +
		"Ratios below 1 are stsroller faster; ideal = ceil(N/b') × (delete delay + ready delay), b' = b, or min(b, PDB maxUnavailable) with a PDB. " +
		"CPU is stsroller's and the whole local cluster's per pod replaced.\n\n")
	b.WriteString("| scenario | b | runs | ideal s | stsroller wall s (range) | built-in wall s (range) | stsroller / built-in | stsroller / ideal | built-in / ideal | CPU ms/pod stsroller / built-in |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range pairs(rep.Results) {
		b.WriteString(comparisonRow(p))
	}
	b.WriteString("\n## Every mode\n\n")
	b.WriteString(modeHeader)
	for _, r := range rep.Results {
		b.WriteString(modeRow(r))
	}
	for _, r := range rep.Results {
		if r.DNSPropagation != nil {
			fmt.Fprintf(&b, "\n%s: DNS propagation (a new pod's IP to its dns-propagated condition) p50/p99/max %s ms.\n", r.Name, fmtLat(r.DNSPropagation))
		}
	}
	b.WriteString("\n" + measuredHow + "\n")
	for _, r := range rep.Results {
		if r.NewRemoved > 0 {
			fmt.Fprintf(&b, "\n**%s: %d pods created during the rollout were removed before its end** (the controller's or another's doing: see the API server's writes).\n", r.Name, r.NewRemoved)
		}
	}
	var never []string
	for _, r := range rep.Results {
		if !r.Completed {
			never = append(never, fmt.Sprintf("- %s: %s", r.Name, r.Reason))
		}
	}
	if len(never) > 0 {
		b.WriteString("\nNever completed (median run):\n" + strings.Join(never, "\n") + "\n")
	}
	var reqs []string
	for _, r := range rep.Results {
		if r.Requests == nil {
			continue
		}
		line := fmt.Sprintf("- %s: %d writes for %d pods replaced; %s", r.Name, r.Writes, r.Replaced, sortedCounts(r.Requests))
		if len(r.FailedRequests) > 0 {
			line += "; not 2xx: " + sortedCounts(r.FailedRequests)
		}
		line += fmt.Sprintf("; LISTs after sync: %d; syncs took %.1f s in all, waited %.1f ms for a worker on average; requests waited %.1f s for the client rate limit",
			sumCounts(r.ListsAfterSync), r.SyncSeconds, r.QueueWaitMeanMs, r.ThrottledSeconds)
		reqs = append(reqs, line)
	}
	if len(reqs) > 0 {
		b.WriteString("\n## stsroller's API requests during the rollout\n\nFrom its stsroller_api_requests_total (verb resource=count), median run:\n\n" + strings.Join(reqs, "\n") + "\n")
	}
	var cluster []string
	for _, r := range rep.Results {
		if len(r.APIServerWrites) == 0 && len(r.ClusterCPU) == 0 {
			continue
		}
		cluster = append(cluster, fmt.Sprintf("- %s: writes %s; CPU s %s", r.Name, sortedCounts(r.APIServerWrites), sortedFloats(r.ClusterCPU)))
	}
	if len(cluster) > 0 {
		b.WriteString("\n<details><summary>The API server's writes (every client's) and the cluster's CPU by component</summary>\n\n" +
			strings.Join(cluster, "\n") + "\n\n</details>\n")
	}
	if rep.Scale != nil {
		b.WriteString("\n" + rep.Scale.markdown())
	}
	return b.String()
}

// measuredHow says what each figure is, under the tables.
const measuredHow = `How each figure is measured (bench/README.md says more):
- **wall**: from the template change to every pod Ready at the update revision, as one watch of this test sees the pods.
- **peak unavailable**: of all the mode's pods (start: unavailable before the change); **PDB exceeded**: a StatefulSet had more unavailable than its PDB's maxUnavailable (or than it started with), not counting pods that turned unready on their own (seen Ready earlier in the run, not terminating: an involuntary disruption, which no PDB prevents; the harness's kwok pods with a readiness gate do this for a moment).
- **CPU**: user + system from /proc of the stsroller process (stsroller modes) plus every process of the local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok), from the change to the end; per pod replaced for both controllers.
- **stsroller writes/pod**: its requests of a verb other than get, list and watch (stsroller_api_requests_total, scraped before and after), per pod replaced, removals included. **API server writes/pod**: every client's writes the API server answered (apiserver_request_total), per pod replaced.
- **reaction**: the idle time of a freed slot. Each time a pod of a rolled StatefulSet turns available (Ready, not terminating) is matched, first in first out, to the next removal of an old pod of that StatefulSet (deletionTimestamp seen, or the pod gone); n is the matched pairs. Removals with no freed slot waiting (the first batch) are not counted.
- **PDB lag**: a new pod seen Ready to its PDB's status seen allowing one more disruption (the latest such pod): the disruption controller's floor.
- **syncs**: stsroller_sync_duration_seconds (count, p50/p99 from its buckets).`

// sortedCounts and sortedFloats render a map as "k=v, ..." in key order.
func sortedCounts(m map[string]int) string { return sortedJoin(m, "%s=%d") }

func sortedFloats(m map[string]float64) string { return sortedJoin(m, "%s=%.2f") }

func sortedJoin[V any](m map[string]V, format string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf(format, k, m[k])
	}
	return strings.Join(parts, ", ")
}

func sumCounts(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
