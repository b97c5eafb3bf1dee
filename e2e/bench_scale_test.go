//go:build e2e

package e2e

// The footprint at scale (STSROLLER_BENCH_SCALE=1, or make bench-scale): in
// one namespace, many small StatefulSets, a few of growing size up to a big
// one, and pods that belong to no StatefulSet, with stsroller watching all
// namespaces. By default 10,000 pods in opted-in StatefulSets (390 × 10, one
// of 100, one of 1,000 and one of 5,000) and 20,000 other pods. It reports
// stsroller's RSS and CPU idle and during concurrent rollouts, its API
// requests by verb and resource (from its own stsroller_api_requests_total),
// LISTs after its informers synced, the sync duration against the
// StatefulSet's size (the histogram stsroller_sync_duration_seconds over
// syncs caused by touching each StatefulSet), and what one PDB status change
// costs (syncs and CPU), for a PDB over one StatefulSet and one over several:
// it must grow with the StatefulSets the PDB selects, not with all of them.
//
// Sizes: STSROLLER_BENCH_SCALE_SETS (default 390) StatefulSets of
// STSROLLER_BENCH_SCALE_PODS (10) pods, STSROLLER_BENCH_SCALE_BIG (5000) for
// the biggest, STSROLLER_BENCH_SCALE_EXTRA (20000) pods of no StatefulSet,
// STSROLLER_BENCH_SCALE_ROLL (50) rollouts at once,
// STSROLLER_BENCH_SCALE_GROUP (10) small StatefulSets under one PDB.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
)

// groupLabel puts the pods of several small StatefulSets under one PDB.
const groupLabel = "bench.stsroller.io/group"

// ScaleReport is the footprint at scale.
type ScaleReport struct {
	Sets           int     `json:"statefulsets"`
	PodsPerSet     int     `json:"pods_per_statefulset"`
	Big            int     `json:"big_statefulset_pods"`
	ExtraPods      int     `json:"pods_of_no_statefulset"`
	StatefulSetPod int     `json:"statefulset_pods"`
	Rollouts       int     `json:"concurrent_rollouts"`
	Group          int     `json:"statefulsets_under_one_pdb"`
	SetupSeconds   float64 `json:"setup_seconds"`

	SyncedRSSMiB   float64 `json:"synced_rss_mib"`
	IdleRSSMiB     float64 `json:"idle_rss_mib"`
	IdleCPUPerMin  float64 `json:"idle_cpu_seconds_per_minute"`
	IdleSeconds    float64 `json:"idle_seconds"`
	RolloutSeconds float64 `json:"rollout_seconds"`
	RolloutDone    bool    `json:"rollout_completed"`
	RolloutCPU     float64 `json:"rollout_cpu_seconds"`
	PeakRSSMiB     float64 `json:"peak_rss_mib"`
	RolloutSyncs   float64 `json:"rollout_syncs"`
	RolloutSyncP50 float64 `json:"rollout_sync_p50_ms"`
	RolloutSyncP99 float64 `json:"rollout_sync_p99_ms"`

	SyncBySize []SizeSync `json:"sync_by_size"`
	// PDBEvents is what one PDB status change costs, for a PDB over one
	// StatefulSet and for one over Group of them.
	PDBEvents      []PDBEventCost `json:"pdb_events"`
	StartRequests  map[string]int `json:"api_requests_until_synced"`
	IdleRequests   map[string]int `json:"api_requests_idle"`
	RollRequests   map[string]int `json:"api_requests_rollouts"`
	ListsAfterSync map[string]int `json:"lists_after_sync"`
	Notes          []string       `json:"notes,omitempty"`
}

// SizeSync is the sync duration of a StatefulSet of Pods pods, from the
// histogram over Syncs syncs caused by touching it (Mean from its sum).
type SizeSync struct {
	Pods  int     `json:"pods"`
	Syncs float64 `json:"syncs"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Mean  float64 `json:"mean_ms"`
}

// PDBEventCost is what one status change of a PDB selecting Selects
// StatefulSets cost stsroller: the test writes its status once and the
// disruption controller writes it back, Updates being the PDB's updates a
// watch saw in all; Syncs are stsroller's syncs until they settle, CPUMs its
// CPU above the idle rate (at /proc's 10 ms resolution) and Requests its API
// requests. Two updates close together may make one sync per StatefulSet
// (the work queue merges them) or two.
type PDBEventCost struct {
	PDB      string  `json:"pdb"`
	Selects  int     `json:"statefulsets_selected"`
	Updates  int     `json:"pdb_updates_seen"`
	Syncs    float64 `json:"syncs"`
	CPUMs    float64 `json:"cpu_ms"`
	Requests int     `json:"api_requests"`
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return n
}

func runBenchScale(t *testing.T, cfg benchConfig, client kubernetes.Interface) *ScaleReport {
	ctx := t.Context()
	rep := &ScaleReport{
		Sets: envInt(t, "STSROLLER_BENCH_SCALE_SETS", 390), PodsPerSet: envInt(t, "STSROLLER_BENCH_SCALE_PODS", 10),
		Big: envInt(t, "STSROLLER_BENCH_SCALE_BIG", 5000), ExtraPods: envInt(t, "STSROLLER_BENCH_SCALE_EXTRA", 20000),
		Rollouts: envInt(t, "STSROLLER_BENCH_SCALE_ROLL", 50), Group: envInt(t, "STSROLLER_BENCH_SCALE_GROUP", 10),
	}
	if cfg.smoke {
		rep.Sets, rep.PodsPerSet, rep.Big, rep.ExtraPods, rep.Rollouts, rep.Group = 4, 2, 12, 30, 2, 2
	}
	rep.Group = max(0, min(rep.Group, rep.Sets/2))
	sizes := []int{rep.PodsPerSet}
	for _, n := range []int{100, 1000} {
		if n < rep.Big && n > rep.PodsPerSet {
			sizes = append(sizes, n)
		}
	}
	sizes = append(sizes, rep.Big)
	stsPods := rep.Sets * rep.PodsPerSet
	for _, n := range sizes[1:] {
		stsPods += n
	}
	rep.StatefulSetPod = stsPods
	began := time.Now()
	ensureNodes(t, client, stsPods+stsPods/10+rep.Rollouts*rep.PodsPerSet)

	// A client of its own for the set-up, with a high rate.
	rc, err := framework.Config()
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 1000, 2000
	fast, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ns := benchNamespace(ctx, t, client)
	defer drainNamespace(t, client, ns)
	createExtraPods(t, fast, ns, rep.ExtraPods)
	t.Logf("scale: %d pods of no StatefulSet created after %s", rep.ExtraPods, time.Since(began).Round(time.Second))

	// The last Group small StatefulSets share one PDB (their pods carry
	// groupLabel); every other small one has a PDB of its own.
	grouped := func(i int) bool { return i >= rep.Sets-rep.Group }
	spec := benchSpec{group: "scale", n: rep.PodsPerSet, sets: 1, b: 1}
	var failed atomic.Int32
	parallel(rep.Sets, 16, func(i int) {
		name := fmt.Sprintf("s-%04d", i)
		sts := benchStatefulSet(cfg, name, spec, false)
		if grouped(i) {
			sts.Spec.Template.Labels[groupLabel] = "g"
		}
		if _, err := fast.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
			t.Errorf("creating %s: %v", name, err)
			failed.Add(1)
			return
		}
		if !grouped(i) {
			createBenchPDB(t, fast, ns, name, 1)
		}
	})
	if rep.Group > 0 {
		mu := intstr.FromInt32(1)
		if _, err := fast.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "group"},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &mu,
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{groupLabel: "g"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range sizes[1:] {
		s := spec
		s.n, s.b = n, 10
		if _, err := fast.AppsV1().StatefulSets(ns).Create(ctx, benchStatefulSet(cfg, fmt.Sprintf("big-%d", n), s, false), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if failed.Load() > 0 {
		t.FailNow()
	}
	err = framework.Eventually(ctx, 30*time.Minute, 5*time.Second, func(ctx context.Context) error {
		l, err := client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range l.Items {
			ready += int(s.Status.ReadyReplicas)
		}
		if ready < stsPods {
			return fmt.Errorf("%d of %d StatefulSet pods ready", ready, stsPods)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rep.SetupSeconds = time.Since(began).Seconds()
	t.Logf("scale: %d StatefulSet pods ready after %s", stsPods, time.Since(began).Round(time.Second))

	// stsroller over all namespaces.
	ctl := startBenchController(t, "")
	rep.StartRequests, _ = stsrollerRequests(promText{}, ctl.synced)
	rep.SyncedRSSMiB = ctl.rss()
	// Let the first plans of every StatefulSet pass, then measure idle.
	settle(ctx, ctl, 5*time.Second, 2*time.Minute)
	idle := 30 * time.Second
	if cfg.smoke {
		idle = 3 * time.Second
	}
	m0 := ctl.metrics(ctx)
	cpu0 := ctl.cpu()
	time.Sleep(idle)
	rep.IdleSeconds = idle.Seconds()
	rep.IdleCPUPerMin = (ctl.cpu() - cpu0) * 60 / idle.Seconds()
	rep.IdleRSSMiB = ctl.rss()
	rep.IdleRequests, _ = stsrollerRequests(m0, ctl.metrics(ctx))

	// Sync duration against size: touch each StatefulSet's annotations and
	// read the histogram's growth.
	touches := 20
	if cfg.smoke {
		touches = 3
	}
	for _, n := range sizes {
		name := fmt.Sprintf("big-%d", n)
		if n == rep.PodsPerSet {
			name = "s-0000"
		}
		m0 := ctl.metrics(ctx)
		for i := range touches {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"bench.stsroller.io/touch":"%d"}}}`, i)
			if _, err := client.AppsV1().StatefulSets(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		settle(ctx, ctl, 2*time.Second, time.Minute)
		m1 := ctl.metrics(ctx)
		syncs, p50, p99 := syncStats(m0, m1)
		z := SizeSync{Pods: n, Syncs: syncs, P50: nanZero(p50 * 1000), P99: nanZero(p99 * 1000)}
		if syncs > 0 {
			z.Mean = (m1["stsroller_sync_duration_seconds_sum"] - m0["stsroller_sync_duration_seconds_sum"]) * 1000 / syncs
		}
		rep.SyncBySize = append(rep.SyncBySize, z)
	}
	// One PDB status change: what it costs, over one StatefulSet and over
	// a group of them.
	rep.PDBEvents = append(rep.PDBEvents, pdbEventCost(t, client, ctl, ns, "s-0000", 1, rep.IdleCPUPerMin))
	if rep.Group > 0 {
		rep.PDBEvents = append(rep.PDBEvents, pdbEventCost(t, client, ctl, ns, "group", rep.Group, rep.IdleCPUPerMin))
	}

	// Concurrent rollouts of small StatefulSets (each with a PDB of its own).
	m0 = ctl.metrics(ctx)
	cpu0 = ctl.cpu()
	start := time.Now()
	roll := min(rep.Rollouts, rep.Sets-rep.Group)
	parallel(roll, 16, func(i int) {
		patch := `{"spec":{"template":{"spec":{"containers":[{"name":"db","env":[{"name":"VERSION","value":"2"}]}]}}}}`
		if _, err := client.AppsV1().StatefulSets(ns).Patch(ctx, fmt.Sprintf("s-%04d", i), types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Error(err)
		}
	})
	var peak float64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			peak = max(peak, ctl.rss())
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	})
	rep.RolloutDone = framework.Eventually(ctx, cfg.cap, time.Second, func(ctx context.Context) error {
		done := 0
		for i := range roll {
			s, err := client.AppsV1().StatefulSets(ns).Get(ctx, fmt.Sprintf("s-%04d", i), metav1.GetOptions{})
			if err != nil {
				return err
			}
			if s.Status.ObservedGeneration >= s.Generation && s.Status.UpdatedReplicas == *s.Spec.Replicas &&
				s.Status.ReadyReplicas == *s.Spec.Replicas {
				done++
			}
		}
		if done < roll {
			return fmt.Errorf("%d of %d rollouts done", done, roll)
		}
		return nil
	}) == nil
	rep.RolloutSeconds = time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	rep.Rollouts = roll
	rep.PeakRSSMiB = max(peak, rep.IdleRSSMiB)
	rep.RolloutCPU = ctl.cpu() - cpu0
	m1 := ctl.metrics(ctx)
	rep.RolloutSyncs, rep.RolloutSyncP50, rep.RolloutSyncP99 = syncStats(m0, m1)
	rep.RolloutSyncP50, rep.RolloutSyncP99 = nanZero(rep.RolloutSyncP50*1000), nanZero(rep.RolloutSyncP99*1000)
	rep.RollRequests, _ = stsrollerRequests(m0, m1)
	rep.ListsAfterSync = ctl.listsAfterSync(m1)
	return rep
}

// pdbEventCost writes the status of the PDB name (disruptionsAllowed set
// off its value: a status change like the disruption controller's, which
// then writes it back) and counts, until stsroller's syncs settle, the PDB's
// updates seen by a watch, stsroller's syncs, its requests and its CPU above
// the idle rate.
func pdbEventCost(t *testing.T, client kubernetes.Interface, ctl *benchController, ns, name string, selects int, idleCPUPerMin float64) PDBEventCost {
	ctx := t.Context()
	settle(ctx, ctl, 3*time.Second, 2*time.Minute)
	// From the current state (no resourceVersion: no "too large resource
	// version" from a lagging watch cache), its ADDED event first.
	w, err := client.PolicyV1().PodDisruptionBudgets(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	added := make(chan struct{})
	var updates atomic.Int32
	go func() {
		first := true
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added:
				if first {
					close(added)
					first = false
				}
			case watch.Modified:
				updates.Add(1)
			}
		}
	}()
	select {
	case <-added:
	case <-time.After(30 * time.Second):
		t.Fatalf("no ADDED event of PDB %s within 30 s", name)
	}
	pdb, err := client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m0, cpu0, start := ctl.metrics(ctx), ctl.cpu(), time.Now()
	pdb.Status.DisruptionsAllowed = 1 - min(pdb.Status.DisruptionsAllowed, 1)
	if _, err := client.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	settle(ctx, ctl, 3*time.Second, 2*time.Minute)
	// The quiet time settle waited for is idle too: take the idle rate off.
	cpu := (ctl.cpu() - cpu0 - idleCPUPerMin*time.Since(start).Minutes()) * 1000
	m1 := ctl.metrics(ctx)
	syncs, _, _ := syncStats(m0, m1)
	reqs, _ := stsrollerRequests(m0, m1)
	return PDBEventCost{PDB: name, Selects: selects, Updates: int(updates.Load()), Syncs: syncs, CPUMs: max(cpu, 0), Requests: sumCounts(reqs)}
}

// settle waits until stsroller's sync count has not moved for quiet, at most
// limit.
func settle(ctx context.Context, ctl *benchController, quiet, limit time.Duration) {
	deadline := time.Now().Add(limit)
	last, since := -1.0, time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		n := ctl.metrics(ctx)["stsroller_sync_duration_seconds_count"]
		if n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// parallel runs f(0..n-1) on workers goroutines.
func parallel(n, workers int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// createExtraPods creates n pods that belong to no StatefulSet, bound to a
// node that kwok does not manage: they stay Pending and cost the cluster
// nothing but their objects (they tolerate the node's not-ready taints).
func createExtraPods(t *testing.T, client kubernetes.Interface, ns string, n int) {
	t.Helper()
	ctx := t.Context()
	const node = "bench-idle-node"
	_, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
		Labels: map[string]string{"kubernetes.io/hostname": node}}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	var failed atomic.Int32
	parallel(n, 32, func(i int) {
		if failed.Load() > 10 {
			return
		}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("other-%05d", i), Labels: map[string]string{"app": "other"}},
			Spec: corev1.PodSpec{
				NodeName:    node,
				Containers:  []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
				Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
				// Deleted at once at the end: nothing runs them.
				TerminationGracePeriodSeconds: ptr.To[int64](0),
			},
		}
		if _, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			if failed.Add(1) <= 3 {
				t.Errorf("creating %s: %v", p.Name, err)
			}
		}
	})
	if failed.Load() > 0 {
		t.FailNow()
	}
}

func (s *ScaleReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Footprint at scale\n\n%d pods in opted-in StatefulSets (%d × %d, %d of them under one PDB and the others with a PDB each, and StatefulSets of %v pods), "+
		"%d pods of no StatefulSet, one namespace, stsroller watching all namespaces (set-up %.0f s).\n\n",
		s.StatefulSetPod, s.Sets, s.PodsPerSet, s.Group, sizesOf(s.SyncBySize[1:]), s.ExtraPods, s.SetupSeconds)
	b.WriteString("| figure | value |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("StatefulSet pods watched", strconv.Itoa(s.StatefulSetPod))
	row("RSS", fmt.Sprintf("%.1f MiB once synced, %.1f MiB idle, %.1f MiB at the peak of the rollouts", s.SyncedRSSMiB, s.IdleRSSMiB, s.PeakRSSMiB))
	row("CPU idle", fmt.Sprintf("%.2f s per minute (over %.0f s)", s.IdleCPUPerMin, s.IdleSeconds))
	for _, z := range s.SyncBySize {
		row(fmt.Sprintf("sync of a %d-pod StatefulSet", z.Pods), fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, mean %.2f ms (%.0f syncs)", z.P50, z.P99, z.Mean, z.Syncs))
	}
	for _, e := range s.PDBEvents {
		row(fmt.Sprintf("one status change of a PDB over %d StatefulSet(s)", e.Selects),
			fmt.Sprintf("%.0f syncs, %.0f CPU ms, %d API requests (%d updates of the PDB seen: the test's write, the disruption controller's answer)",
				e.Syncs, e.CPUMs, e.Requests, e.Updates))
	}
	done := "done"
	if !s.RolloutDone {
		done = "**not done** within the cap"
	}
	row(fmt.Sprintf("%d concurrent rollouts", s.Rollouts), fmt.Sprintf("%.1f s (%s), %.2f CPU s, %.0f syncs, p50/p99 %.1f/%.1f ms",
		s.RolloutSeconds, done, s.RolloutCPU, s.RolloutSyncs, s.RolloutSyncP50, s.RolloutSyncP99))
	row("LISTs after the informers synced", fmt.Sprintf("%d %s", sumCounts(s.ListsAfterSync), sortedCounts(s.ListsAfterSync)))
	row("API requests until synced", sortedCounts(s.StartRequests))
	row("API requests idle", sortedCounts(s.IdleRequests))
	row("API requests during the rollouts", sortedCounts(s.RollRequests))
	for _, n := range s.Notes {
		b.WriteString("\n" + n + "\n")
	}
	return b.String()
}

func sizesOf(z []SizeSync) []int {
	out := make([]int, len(z))
	for i, s := range z {
		out[i] = s.Pods
	}
	sort.Ints(out)
	return out
}
