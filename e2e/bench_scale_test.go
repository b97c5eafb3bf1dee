//go:build e2e

package e2e

// The footprint at scale (STSROLLER_BENCH_SCALE=1, or make bench-scale): in
// one namespace, many small StatefulSets with a PodDisruptionBudget each, a
// few of growing size up to a big one, and pods that belong to no
// StatefulSet, with stsroller watching all namespaces. It reports stsroller's
// RSS and CPU idle and during concurrent rollouts, its API requests by verb
// and resource (through the counting proxy), LISTs after its informers
// synced, the sync duration against the StatefulSet's size, and how many
// syncs one PDB change causes.
//
// Sizes: STSROLLER_BENCH_SCALE_SETS (default 1000) StatefulSets of
// STSROLLER_BENCH_SCALE_PODS (10) pods, STSROLLER_BENCH_SCALE_BIG (5000) for
// the biggest, STSROLLER_BENCH_SCALE_EXTRA (20000) pods of no StatefulSet,
// STSROLLER_BENCH_SCALE_ROLL (50) rollouts at once.

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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
)

// ScaleReport is the footprint at scale.
type ScaleReport struct {
	Sets           int     `json:"statefulsets"`
	PodsPerSet     int     `json:"pods_per_statefulset"`
	Big            int     `json:"big_statefulset_pods"`
	ExtraPods      int     `json:"pods_of_no_statefulset"`
	StatefulSetPod int     `json:"statefulset_pods"`
	Rollouts       int     `json:"concurrent_rollouts"`
	SetupSeconds   float64 `json:"setup_seconds"`

	IdleRSSMiB      float64 `json:"idle_rss_mib"`
	IdleCPUPerMin   float64 `json:"idle_cpu_seconds_per_minute"`
	IdleSeconds     float64 `json:"idle_seconds"`
	RolloutSeconds  float64 `json:"rollout_seconds"`
	RolloutDone     bool    `json:"rollout_completed"`
	RolloutCPU      float64 `json:"rollout_cpu_seconds"`
	PeakRSSMiB      float64 `json:"peak_rss_mib"`
	RolloutSyncs    float64 `json:"rollout_syncs"`
	RolloutSyncP50  float64 `json:"rollout_sync_p50_ms"`
	RolloutSyncP99  float64 `json:"rollout_sync_p99_ms"`
	SyncsPerPDBEdit float64 `json:"syncs_per_pdb_change"`

	SyncBySize     []SizeSync     `json:"sync_by_size"`
	StartRequests  map[string]int `json:"api_requests_until_synced"`
	IdleRequests   map[string]int `json:"api_requests_idle"`
	RollRequests   map[string]int `json:"api_requests_rollouts"`
	ListsAfterSync map[string]int `json:"lists_after_sync"`
	Notes          []string       `json:"notes,omitempty"`
}

// SizeSync is the sync duration of a StatefulSet of Pods pods, from the
// histogram over Syncs syncs caused by touching it.
type SizeSync struct {
	Pods  int     `json:"pods"`
	Syncs float64 `json:"syncs"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
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
		Sets: envInt(t, "STSROLLER_BENCH_SCALE_SETS", 1000), PodsPerSet: envInt(t, "STSROLLER_BENCH_SCALE_PODS", 10),
		Big: envInt(t, "STSROLLER_BENCH_SCALE_BIG", 5000), ExtraPods: envInt(t, "STSROLLER_BENCH_SCALE_EXTRA", 20000),
		Rollouts: envInt(t, "STSROLLER_BENCH_SCALE_ROLL", 50),
	}
	if cfg.smoke {
		rep.Sets, rep.PodsPerSet, rep.Big, rep.ExtraPods, rep.Rollouts = 4, 2, 12, 30, 2
	}
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
	ns := framework.Namespace(ctx, t, client)
	defer drainNamespace(t, client, ns)
	createExtraPods(t, fast, ns, rep.ExtraPods)
	t.Logf("scale: %d pods of no StatefulSet created after %s", rep.ExtraPods, time.Since(began).Round(time.Second))

	spec := benchSpec{group: "scale", n: rep.PodsPerSet, sets: 1, b: 1}
	var failed atomic.Int32
	parallel(rep.Sets, 16, func(i int) {
		name := fmt.Sprintf("s-%04d", i)
		if _, err := fast.AppsV1().StatefulSets(ns).Create(ctx, benchStatefulSet(cfg, name, spec, false), metav1.CreateOptions{}); err != nil {
			t.Errorf("creating %s: %v", name, err)
			failed.Add(1)
			return
		}
		createBenchPDB(t, fast, ns, name, 1)
	})
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
	rep.StartRequests, _ = ctl.requests()
	// Let the first plans of every StatefulSet pass, then measure idle.
	settle(ctx, ctl, 5*time.Second, 2*time.Minute)
	idle := 30 * time.Second
	if cfg.smoke {
		idle = 3 * time.Second
	}
	req0, _ := ctl.requests()
	cpu0 := ctl.cpu()
	time.Sleep(idle)
	rep.IdleSeconds = idle.Seconds()
	rep.IdleCPUPerMin = (ctl.cpu() - cpu0) * 60 / idle.Seconds()
	rep.IdleRSSMiB = ctl.rss()
	req1, _ := ctl.requests()
	rep.IdleRequests = diffCounts(req1, req0)

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
		syncs, p50, p99 := syncStats(m0, ctl.metrics(ctx))
		rep.SyncBySize = append(rep.SyncBySize, SizeSync{Pods: n, Syncs: syncs, P50: nanZero(p50 * 1000), P99: nanZero(p99 * 1000)})
	}
	// One PDB change: how many syncs follow.
	m0 := ctl.metrics(ctx)
	if _, err := client.PolicyV1().PodDisruptionBudgets(ns).Patch(ctx, "s-0000", types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"bench.stsroller.io/touch":"1"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	settle(ctx, ctl, 3*time.Second, 2*time.Minute)
	rep.SyncsPerPDBEdit, _, _ = syncStats(m0, ctl.metrics(ctx))

	// Concurrent rollouts of small StatefulSets.
	req2, _ := ctl.requests()
	m0 = ctl.metrics(ctx)
	cpu0 = ctl.cpu()
	start := time.Now()
	roll := min(rep.Rollouts, rep.Sets)
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
	rep.PeakRSSMiB = max(peak, rep.IdleRSSMiB)
	rep.RolloutCPU = ctl.cpu() - cpu0
	rep.RolloutSyncs, rep.RolloutSyncP50, rep.RolloutSyncP99 = syncStats(m0, ctl.metrics(ctx))
	rep.RolloutSyncP50, rep.RolloutSyncP99 = nanZero(rep.RolloutSyncP50*1000), nanZero(rep.RolloutSyncP99*1000)
	req3, lists := ctl.requests()
	rep.RollRequests = diffCounts(req3, req2)
	rep.ListsAfterSync = lists
	return rep
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

func diffCounts(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
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
	fmt.Fprintf(&b, "## Footprint at scale\n\n%d StatefulSets × %d pods with a PDB each, StatefulSets of %v pods, "+
		"%d pods of no StatefulSet, one namespace, stsroller watching all namespaces (set-up %.0f s).\n\n",
		s.Sets, s.PodsPerSet, sizesOf(s.SyncBySize[1:]), s.ExtraPods, s.SetupSeconds)
	b.WriteString("| figure | value |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("StatefulSet pods watched", strconv.Itoa(s.StatefulSetPod))
	row("RSS idle", fmt.Sprintf("%.1f MiB", s.IdleRSSMiB))
	row("CPU idle", fmt.Sprintf("%.2f s per minute (over %.0f s)", s.IdleCPUPerMin, s.IdleSeconds))
	done := "done"
	if !s.RolloutDone {
		done = "**not done** within the cap"
	}
	row(fmt.Sprintf("%d concurrent rollouts", s.Rollouts), fmt.Sprintf("%.1f s (%s), %.2f CPU s, peak RSS %.1f MiB, %.0f syncs, p50/p99 %.1f/%.1f ms",
		s.RolloutSeconds, done, s.RolloutCPU, s.PeakRSSMiB, s.RolloutSyncs, s.RolloutSyncP50, s.RolloutSyncP99))
	row("syncs caused by one PDB change", fmt.Sprintf("%.0f", s.SyncsPerPDBEdit))
	for _, z := range s.SyncBySize {
		row(fmt.Sprintf("sync of a %d-pod StatefulSet", z.Pods), fmt.Sprintf("p50 %.2f ms, p99 %.2f ms (%.0f syncs)", z.P50, z.P99, z.Syncs))
	}
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
