//go:build e2e

package e2e

// TestBench is `make bench`: one run on one local cluster that rolls out
// StatefulSets side by side with stsroller and with the built-in
// RollingUpdate, each mode on its own fresh StatefulSet in its own namespace,
// one after the other, and writes bench/results/<stamp>.md (a table), .json
// (every figure, and the unavailable pods over time) and .png (plotted by
// the separate module bench/plot).
//
//	make bench        # STSROLLER_BENCH=full
//	make bench-smoke  # STSROLLER_BENCH=smoke: tiny sizes, checks the outputs only
//
// Environment: STSROLLER_BENCH (full | smoke; unset: skipped),
// STSROLLER_BENCH_OUT (output directory; default bench/results of the
// module), STSROLLER_BENCH_CAP (how long a mode may take before it counts as
// "never"; default 3m, the 10m would make the run too long),
// STSROLLER_BENCH_READY_DELAY and STSROLLER_BENCH_DELETE_DELAY (kwok's
// delays, default 300ms and 200ms, set per pod through the template's
// annotations so that every mode has the same), STSROLLER_BENCH_ONLY (a
// regular expression: run only the modes whose name matches).
//
// Figures are measured, never asserted: the machine is shared.

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
}

func (c benchConfig) step() time.Duration { return c.readyDelay + c.deleteDelay }

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
	if c.smoke && os.Getenv("STSROLLER_BENCH_CAP") == "" {
		c.cap = 20 * time.Second
	}
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
	group string // healthy, pdb, broken, multi, dns
	n     int    // pods per StatefulSet
	sets  int    // StatefulSets rolled at once
	b     int    // stsroller's max-unavailable, or the built-in's maxUnavailable
	// builtin: the built-in RollingUpdate with maxUnavailable b; else
	// stsroller with max-unavailable b.
	builtin bool
	pdb     int // a PodDisruptionBudget per StatefulSet with this maxUnavailable; 0: none
	broken  int // pods (every n/broken-th ordinal) kept unready at the old revision
}

func (s benchSpec) mode() string {
	if s.builtin {
		return fmt.Sprintf("built-in maxUnavailable=%d", s.b)
	}
	return fmt.Sprintf("stsroller max-unavailable=%d", s.b)
}

func (s benchSpec) name() string {
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
	return n + " " + s.mode()
}

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

// BenchResult is every figure of one mode.
type BenchResult struct {
	Name              string `json:"name"`
	Group             string `json:"group"`
	Mode              string `json:"mode"`
	Pods              int    `json:"pods"`
	Sets              int    `json:"statefulsets"`
	MaxUnavailable    int    `json:"max_unavailable"`
	PDBMaxUnavailable int    `json:"pdb_max_unavailable,omitempty"`
	Broken            int    `json:"broken,omitempty"`

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

	// CPUOf says whose CPU ControllerCPUSeconds is: stsroller's process, or
	// the whole kube-controller-manager for the built-in modes.
	CPUOf                string  `json:"cpu_of"`
	ControllerCPUSeconds float64 `json:"controller_cpu_seconds"`
	CPUPerPodMs          float64 `json:"cpu_ms_per_pod_replaced"`
	// ClusterCPUSeconds is the CPU of the local cluster's own processes
	// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
	// during the mode: the load each mode puts on the control plane, in both.
	ClusterCPUSeconds float64 `json:"cluster_cpu_seconds,omitempty"`
	RSSMiB            float64 `json:"rss_mib,omitempty"`
	Syncs             float64 `json:"syncs,omitempty"`
	SyncP50Ms         float64 `json:"sync_p50_ms,omitempty"`
	SyncP99Ms         float64 `json:"sync_p99_ms,omitempty"`
	// SyncSeconds is the time all syncs took together; QueueWaitMeanMs the
	// mean time a StatefulSet waited in the work queue for a worker; and
	// ThrottledSeconds the time requests waited for the client's own rate
	// limit (--kube-api-qps): where the controller's time went.
	SyncSeconds      float64 `json:"sync_seconds,omitempty"`
	QueueWaitMeanMs  float64 `json:"queue_wait_mean_ms,omitempty"`
	ThrottledSeconds float64 `json:"throttled_seconds,omitempty"`
	// Reaction is the time from the latest event that freed budget (a new
	// pod seen Ready, or a PDB seen allowing more disruptions) to the next
	// deletion seen, both as this test's watch saw them.
	Reaction *Latency `json:"reaction,omitempty"`
	// PDBLag is the time from a new pod seen Ready to its PDB's status seen
	// allowing one more disruption: the floor the disruption controller sets.
	PDBLag *Latency `json:"pdb_status_lag,omitempty"`
	// DNSPropagation is, with the DNS gate, the time from a new pod's IP to
	// its dns-propagated condition.
	DNSPropagation *Latency       `json:"dns_propagation,omitempty"`
	Requests       map[string]int `json:"api_requests,omitempty"`
	ListsAfterSync map[string]int `json:"lists_after_sync,omitempty"`
	Series         []Point        `json:"series"`
}

// BenchReport is the JSON file.
type BenchReport struct {
	Stamp        string         `json:"stamp"`
	Smoke        bool           `json:"smoke"`
	Commit       string         `json:"commit"`
	ReadyDelayMs int64          `json:"ready_delay_ms"`
	DeleteDelay  int64          `json:"delete_delay_ms"`
	CapSeconds   float64        `json:"cap_seconds"`
	FeatureGates map[string]int `json:"apiserver_feature_gates,omitempty"`
	Results      []BenchResult  `json:"results"`
	Scale        *ScaleReport   `json:"scale,omitempty"`
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
		}
	}
	var out []benchSpec
	for _, n := range []int{100, 300} {
		out = append(out, benchSpec{group: "healthy", n: n, sets: 1, b: 1, builtin: true})
		for _, b := range []int{1, 10, 25} {
			out = append(out, benchSpec{group: "healthy", n: n, sets: 1, b: b})
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
		benchSpec{group: "broken", n: 100, sets: 1, b: 1, pdb: 10, broken: 10, builtin: true},
		benchSpec{group: "broken", n: 100, sets: 1, b: 10, pdb: 10, broken: 10, builtin: true},
		benchSpec{group: "multi", n: 100, sets: 10, b: 10},
		benchSpec{group: "multi", n: 100, sets: 10, b: 10, builtin: true},
	)
	return out
}

func TestBench(t *testing.T) {
	cfg := loadBenchConfig(t)
	client := framework.Client(t)
	report := &BenchReport{
		Stamp: cfg.stamp, Smoke: cfg.smoke, Commit: gitCommit(),
		ReadyDelayMs: cfg.readyDelay.Milliseconds(), DeleteDelay: cfg.deleteDelay.Milliseconds(),
		CapSeconds: cfg.cap.Seconds(), FeatureGates: featureGates(t, client),
	}
	specs := benchSpecs(cfg)
	need := 0
	for _, s := range specs {
		need = max(need, 2*s.n*s.sets)
	}
	ensureNodes(t, client, need)
	for _, s := range specs {
		if cfg.only != nil && !cfg.only.MatchString(s.name()) {
			continue
		}
		var res BenchResult
		ok := t.Run(strings.ReplaceAll(s.name(), " ", "_"), func(t *testing.T) {
			res = runBenchMode(t, cfg, client, s)
		})
		if ok {
			report.Results = append(report.Results, res)
			t.Logf("%s", tableRow(res))
		}
	}
	if !cfg.smoke && os.Getenv("STSROLLER_BENCH_DNS") != "0" && (cfg.only == nil || cfg.only.MatchString("dns")) {
		t.Run("dns", func(t *testing.T) {
			report.Results = append(report.Results, runBenchDNS(t, cfg, client, 100, 10))
		})
	}
	if os.Getenv("STSROLLER_BENCH_SCALE") == "1" {
		t.Run("scale", func(t *testing.T) { report.Scale = runBenchScale(t, cfg, client) })
	}
	writeBenchReport(t, cfg, report)
}

func gitCommit() string {
	root, err := framework.ModuleRoot()
	if err != nil {
		return ""
	}
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// featureGates reads kubernetes_feature_enabled of the API server for the
// gates the built-in modes depend on. The controller manager's own gate is
// shown by the built-in modes' peak unavailable (above 1 only with it on).
func featureGates(t *testing.T, client kubernetes.Interface) map[string]int {
	raw, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Logf("reading the API server's /metrics: %v", err)
		return nil
	}
	out := map[string]int{}
	for _, line := range strings.Split(string(raw), "\n") {
		for _, g := range []string{"MaxUnavailableStatefulSet"} {
			if strings.HasPrefix(line, "kubernetes_feature_enabled{") && strings.Contains(line, `name="`+g+`"`) {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				out[g] = int(v)
			}
		}
	}
	return out
}

// ensureNodes adds kwok nodes (kwok manages every node with its annotation)
// until the cluster can hold pods pods at 250 a node, and waits until they
// are Ready with a pod CIDR.
func ensureNodes(t *testing.T, client kubernetes.Interface, pods int) {
	t.Helper()
	ctx := t.Context()
	want := (pods + 249) / 250
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := 0
	for _, n := range nodes.Items {
		if n.Annotations[kwok.NodeAnnotation] == kwok.NodeAnnotationValue {
			have++
		}
	}
	if have >= want {
		return
	}
	var tmpl *corev1.Node
	for i := range nodes.Items {
		if nodes.Items[i].Annotations[kwok.NodeAnnotation] == kwok.NodeAnnotationValue {
			tmpl = &nodes.Items[i]
		}
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

func runBenchMode(t *testing.T, cfg benchConfig, client kubernetes.Interface, s benchSpec) BenchResult {
	ctx := t.Context()
	ns := framework.Namespace(ctx, t, client)
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
	rec := newBenchRecorder(ctx, t, client, ns, benchLabel, total)
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

	res := BenchResult{Name: s.name(), Group: s.group, Mode: s.mode(), Pods: s.n, Sets: s.sets,
		MaxUnavailable: s.b, PDBMaxUnavailable: s.pdb, Broken: s.broken * s.sets}
	var ctl *benchController
	var cpu0 float64
	var m0 promText
	kcm := 0
	clusterPIDs := localClusterPIDs()
	clusterCPU0 := sumCPU(clusterPIDs)
	if s.builtin {
		res.CPUOf = "kube-controller-manager (whole process)"
		if kcm = controllerManagerPID(); kcm != 0 {
			cpu0, _ = procCPU(kcm)
		}
	} else {
		res.CPUOf = "stsroller"
		ctl = startBenchController(t, ns)
		// Let it plan the settled StatefulSets once before the clock starts.
		time.Sleep(2 * time.Second)
		cpu0, m0 = ctl.cpu(), ctl.metrics(ctx)
	}

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

	snap := rec.result(start)
	res.Series, res.StartUnavailable, res.PeakUnavailable = snap.series, snap.startU, snap.peak
	res.Reaction, res.PDBLag = latencyOf(snap.reaction), latencyOf(snap.pdbLag)
	if s.pdb > 0 {
		exceeded := snap.peak > max(s.pdb, snap.startU)
		res.PDBExceeded = &exceeded
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
	replaced := float64(snap.replaced)
	if len(clusterPIDs) > 0 {
		res.ClusterCPUSeconds = sumCPU(clusterPIDs) - clusterCPU0
	}
	if s.builtin {
		if kcm != 0 {
			cpu1, _ := procCPU(kcm)
			res.ControllerCPUSeconds = cpu1 - cpu0
		}
	} else {
		m1 := ctl.metrics(ctx)
		res.ControllerCPUSeconds = ctl.cpu() - cpu0
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
		res.Requests, res.ListsAfterSync = ctl.requests()
	}
	if replaced > 0 {
		res.CPUPerPodMs = res.ControllerCPUSeconds * 1000 / replaced
	}
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
// records, as this watch sees them, the unavailable pods over time, new pods
// turning Ready, old pods being deleted, and PDBs allowing more disruptions.
type benchRecorder struct {
	store    cache.Store
	replicas int

	mu        sync.Mutex
	started   bool
	start     time.Time
	old       map[types.UID]bool
	updateRev map[string]bool
	series    []Point
	lastU     int
	startU    int
	peak      int
	doneAt    time.Time
	readyAt   []time.Time
	deleteAt  []time.Time
	pdbFreeAt []time.Time
	allowed   map[string]int32
	pdbStore  cache.Store
}

func newBenchRecorder(ctx context.Context, t testing.TB, client kubernetes.Interface, ns, selector string, replicas int) *benchRecorder {
	r := &benchRecorder{replicas: replicas, lastU: -1, updateRev: map[string]bool{}, allowed: map[string]int32{}}
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
			p, _ := obj.(*corev1.Pod)
			if p != nil && p.DeletionTimestamp == nil {
				r.podDeleted(p)
			}
			r.measure()
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

func (r *benchRecorder) podChanged(old, cur *corev1.Pod) {
	now := time.Now()
	if (old == nil || old.DeletionTimestamp == nil) && cur.DeletionTimestamp != nil {
		r.podDeleted(cur)
	}
	if cur.DeletionTimestamp == nil && framework.PodReady(cur) && (old == nil || !framework.PodReady(old)) {
		r.mu.Lock()
		if r.started && !r.old[cur.UID] {
			r.readyAt = append(r.readyAt, now)
		}
		r.mu.Unlock()
	}
	r.measure()
}

func (r *benchRecorder) podDeleted(p *corev1.Pod) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started && r.old[p.UID] {
		r.deleteAt = append(r.deleteAt, now)
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

// counts returns the pods Ready and not terminating, and of those the ones
// at an update revision.
func (r *benchRecorder) counts() (ready, updatedReady int) {
	r.mu.Lock()
	revs := r.updateRev
	r.mu.Unlock()
	for _, obj := range r.store.List() {
		p := obj.(*corev1.Pod)
		if p.DeletionTimestamp != nil || !framework.PodReady(p) {
			continue
		}
		ready++
		if revs[p.Labels[appsv1.ControllerRevisionHashLabelKey]] {
			updatedReady++
		}
	}
	return ready, updatedReady
}

func (r *benchRecorder) measure() {
	now := time.Now()
	ready, updated := r.counts()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return
	}
	u := r.replicas - ready
	if u != r.lastU {
		r.series = append(r.series, Point{T: now.Sub(r.start).Seconds(), U: u})
		r.lastU = u
	}
	r.peak = max(r.peak, u)
	if updated == r.replicas && r.doneAt.IsZero() && len(r.updateRev) > 0 {
		r.doneAt = now
	}
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
	ready, _ := r.counts()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.old = map[types.UID]bool{}
	for _, obj := range r.store.List() {
		r.old[obj.(*corev1.Pod).UID] = true
	}
	r.start = time.Now()
	r.started = true
	r.startU = r.replicas - ready
	r.lastU, r.peak = r.startU, r.startU
	r.series = []Point{{T: 0, U: r.startU}}
	return r.start
}

func (r *benchRecorder) setUpdateRevision(rev string) {
	r.mu.Lock()
	r.updateRev = maps2(r.updateRev, rev)
	r.mu.Unlock()
	r.measure()
}

func maps2(m map[string]bool, k string) map[string]bool {
	out := map[string]bool{k: true}
	for x := range m {
		out[x] = true
	}
	return out
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
	doneAt           time.Time
	reaction, pdbLag []time.Duration
	replaced         int
}

func (r *benchRecorder) result(start time.Time) benchSnapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := benchSnapshot{series: append([]Point(nil), r.series...), startU: r.startU, peak: r.peak, doneAt: r.doneAt,
		replaced: len(r.deleteAt)}
	freeing := append(append([]time.Time(nil), r.readyAt...), r.pdbFreeAt...)
	sort.Slice(freeing, func(i, j int) bool { return freeing[i].Before(freeing[j]) })
	for _, d := range r.deleteAt {
		// The latest event that freed budget before this deletion.
		i := sort.Search(len(freeing), func(i int) bool { return !freeing[i].Before(d) }) - 1
		if i >= 0 {
			s.reaction = append(s.reaction, d.Sub(freeing[i]))
		}
	}
	for _, f := range r.pdbFreeAt {
		i := sort.Search(len(r.readyAt), func(i int) bool { return !r.readyAt[i].Before(f) }) - 1
		if i >= 0 {
			s.pdbLag = append(s.pdbLag, f.Sub(r.readyAt[i]))
		}
	}
	return s
}

// writeBenchReport writes <stamp>.json, <stamp>.md and, through bench/plot,
// <stamp>.png, then checks that all three are there and readable.
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
	pngs, _ := filepath.Glob(base + "*.png")
	if len(pngs) == 0 {
		t.Errorf("no plot %s*.png", base)
	}
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
	return fmt.Sprintf("%.0f / %.0f / %.0f", l.P50, l.P99, l.Max)
}

const tableHeader = "| mode | done | wall s | ideal s | ratio | peak unavail | PDB exceeded | ctl CPU s | CPU ms/pod | cluster CPU s | syncs | sync p50/p99 ms | reaction ms p50/p99/max | PDB lag ms p50/p99/max |\n" +
	"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"

func tableRow(r BenchResult) string {
	done := "yes"
	if !r.Completed {
		done = "**never**"
	}
	exceeded := "–"
	if r.PDBExceeded != nil {
		exceeded = map[bool]string{true: "**yes**", false: "no"}[*r.PDBExceeded]
	}
	ratio := "–"
	if r.Completed {
		ratio = fmt.Sprintf("%.2f", r.Ratio)
	}
	cpu := fmtF(r.ControllerCPUSeconds, 2)
	if r.CPUOf != "stsroller" && r.ControllerCPUSeconds > 0 {
		cpu += " (KCM)"
	}
	sync := "–"
	if r.Syncs > 0 {
		sync = fmt.Sprintf("%.1f / %.1f", r.SyncP50Ms, r.SyncP99Ms)
	}
	return fmt.Sprintf("| %s | %s | %.1f | %.1f | %s | %d (from %d) | %s | %s | %s | %s | %s | %s | %s | %s |\n",
		r.Name, done, r.WallSeconds, r.IdealSeconds, ratio, r.PeakUnavailable, r.StartUnavailable, exceeded,
		cpu, fmtF(r.CPUPerPodMs, 1), fmtF(r.ClusterCPUSeconds, 1), fmtF(r.Syncs, 0), sync, fmtLat(r.Reaction), fmtLat(r.PDBLag))
}

func markdownReport(rep *BenchReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# stsroller bench %s\n\n", rep.Stamp)
	fmt.Fprintf(&b, "Commit %s; local cluster (kwok); kwok ready delay %d ms, delete delay %d ms; cap per mode %s, or 3 × its ideal if longer, doubled for several StatefulSets at once",
		rep.Commit, rep.ReadyDelayMs, rep.DeleteDelay, time.Duration(rep.CapSeconds*float64(time.Second)))
	if len(rep.FeatureGates) > 0 {
		fmt.Fprintf(&b, "; API server gates %v", rep.FeatureGates)
	}
	if rep.Smoke {
		b.WriteString("; **smoke run** (tiny sizes: the figures mean nothing)")
	}
	b.WriteString(".\n\nIdeal = ceil(N/b') × (delete delay + ready delay), b' = b, or min(b, PDB maxUnavailable) with a PDB; " +
		"with the DNS gate each step adds the median propagation. Reaction = from the latest budget-freeing event " +
		"(new pod seen Ready, PDB seen allowing more) to the next deletion seen, both through one watch of this test. " +
		"PDB lag = new pod seen Ready to its PDB's status seen allowing one more (the disruption controller's floor). " +
		"CPU of the built-in modes is the whole kube-controller-manager's.\n\n")
	b.WriteString(tableHeader)
	for _, r := range rep.Results {
		b.WriteString(tableRow(r))
	}
	var never []string
	for _, r := range rep.Results {
		if !r.Completed {
			never = append(never, fmt.Sprintf("- %s: %s", r.Name, r.Reason))
		}
	}
	if len(never) > 0 {
		b.WriteString("\nNever completed:\n" + strings.Join(never, "\n") + "\n")
	}
	var reqs []string
	for _, r := range rep.Results {
		if len(r.Requests) > 0 {
			reqs = append(reqs, fmt.Sprintf("- %s: %s; LISTs after sync: %d; syncs took %.1f s in all, waited %.1f ms for a worker on average; requests waited %.1f s for the client rate limit",
				r.Name, sortedCounts(r.Requests), sumCounts(r.ListsAfterSync), r.SyncSeconds, r.QueueWaitMeanMs, r.ThrottledSeconds))
		}
	}
	if len(reqs) > 0 {
		b.WriteString("\nstsroller's API requests (verb resource=count):\n" + strings.Join(reqs, "\n") + "\n")
	}
	if rep.Scale != nil {
		b.WriteString("\n" + rep.Scale.markdown())
	}
	return b.String()
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
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
