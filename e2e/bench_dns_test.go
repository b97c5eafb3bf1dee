//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/e2e/framework"
)

// runBenchDNS rolls out n pods with max-unavailable b behind the DNS gate:
// BIND (primary and secondary) and external-dns at a short interval, through
// the DNS tests' own set-up (newDNSRollout: the template of dbStatefulSet,
// so kwok's delays are the cluster's, 500 ms each, not the benchmark's, and
// its own stsroller, which serves no /metrics: no request counts here).
func runBenchDNS(t *testing.T, cfg benchConfig, client kubernetes.Interface, n, b int) BenchResult {
	// The DNS rollout's namespace goes when the run ends: wait for it (this
	// cleanup runs after the namespace's own), so that the namespace
	// controller's work does not count in the next run.
	var ns string
	t.Cleanup(func() { waitNamespaceGone(client, ns) })
	r := newDNSRollout(t, dnsRolloutOptions{replicas: int32(n), maxUnavailable: b})
	ns = r.ns
	defer drainNamespace(t, client, r.ns)
	rec := newBenchRecorder(t.Context(), t, client, r.ns, "app=db", 1, n)
	if err := rec.waitReady(t.Context(), n, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	res := BenchResult{Name: fmt.Sprintf("dns N=%d stsroller max-unavailable=%d", n, b), Scenario: fmt.Sprintf("dns N=%d", n),
		Group: "dns", Controller: "stsroller", Mode: fmt.Sprintf("stsroller max-unavailable=%d", b), Pods: n, Sets: 1, MaxUnavailable: b}
	pid, _ := findPID(binary(t), "--namespace="+r.ns)
	procs := localClusterProcs()
	u0 := readUsage(t.Context(), t, client, procs, nil)
	var cpu0 float64
	if pid != 0 {
		cpu0, _ = procCPU(pid)
	}
	start := rec.begin()
	rev := r.newRevision("2")
	rec.setUpdateRevision(rev)
	done := rec.waitDone(t.Context(), 1, cfg.cap)
	end := time.Now()
	u1 := readUsage(t.Context(), t, client, procs, nil)
	if pid != 0 {
		cpu1, _ := procCPU(pid)
		u0.ctlCPU, u1.ctlCPU = cpu0, cpu1
	}
	snap := rec.result()
	res.Series, res.StartUnavailable, res.PeakUnavailable = snap.series, snap.startU, snap.peak
	res.Reaction, res.FirstRemovals, res.Replaced, res.NewRemoved = latencyOf(snap.reaction), snap.unmatched, snap.replaced, snap.newRemoved
	account(&res, u0, u1, nil)
	res.StsrollerCPUSeconds = u1.ctlCPU - u0.ctlCPU
	if res.Replaced > 0 {
		res.CPUPerPodMs = (res.StsrollerCPUSeconds + res.ClusterCPUSeconds) * 1000 / float64(res.Replaced)
	}
	pods, _ := r.rec.snapshot()
	var prop []time.Duration
	for _, p := range pods {
		if p.ipAt.After(start) && !p.propagatedAt.IsZero() {
			prop = append(prop, p.propagatedAt.Sub(p.ipAt))
		}
	}
	res.DNSPropagation = latencyOf(prop)
	// The DNS rollout's pods use the cluster's kwok delays, 500 ms each.
	step := time.Second.Seconds()
	if res.DNSPropagation != nil {
		step += res.DNSPropagation.P50 / 1000
	}
	res.IdealSeconds = math.Ceil(float64(n)/float64(b)) * step
	if done {
		res.Completed = true
		res.WallSeconds = snap.doneAt.Sub(start).Seconds()
		res.Ratio = res.WallSeconds / res.IdealSeconds
	} else {
		res.WallSeconds = end.Sub(start).Seconds()
		res.Reason = fmt.Sprintf("not done after %s: %s; stsroller status: %s", cfg.cap, rec.progress(),
			statusSummary(t.Context(), client, r.ns, r.sts.Name))
	}
	return res
}

// waitNamespaceGone waits (at most two minutes) until the namespace ns is
// deleted.
func waitNamespaceGone(client kubernetes.Interface, ns string) {
	if ns == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = framework.Eventually(ctx, 2*time.Minute, time.Second, func(ctx context.Context) error {
		_, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("namespace %s still there", ns)
	})
}
