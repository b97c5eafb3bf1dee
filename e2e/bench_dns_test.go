//go:build e2e

package e2e

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// runBenchDNS rolls out n pods with max-unavailable b behind the DNS gate:
// BIND (primary and secondary) and external-dns at a short interval, through
// the DNS tests' own set-up (newDNSRollout: the template of dbStatefulSet,
// so kwok's delays are the cluster's, 500 ms each, not the benchmark's).
func runBenchDNS(t *testing.T, cfg benchConfig, client kubernetes.Interface, n, b int) BenchResult {
	r := newDNSRollout(t, dnsRolloutOptions{replicas: int32(n), maxUnavailable: b})
	defer drainNamespace(t, client, r.ns)
	rec := newBenchRecorder(t.Context(), t, client, r.ns, "app=db", n)
	if err := rec.waitReady(t.Context(), n, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	res := BenchResult{Name: fmt.Sprintf("dns N=%d stsroller max-unavailable=%d", n, b), Group: "dns",
		Mode: fmt.Sprintf("stsroller max-unavailable=%d", b), Pods: n, Sets: 1, MaxUnavailable: b, CPUOf: "stsroller"}
	pid := findPID(binary(t), "--namespace="+r.ns)
	var cpu0 float64
	if pid != 0 {
		cpu0, _ = procCPU(pid)
	}
	start := rec.begin()
	rev := r.newRevision("2")
	rec.setUpdateRevision(rev)
	done := rec.waitDone(t.Context(), 1, cfg.cap)
	end := time.Now()
	snap := rec.result(start)
	res.Series, res.StartUnavailable, res.PeakUnavailable = snap.series, snap.startU, snap.peak
	res.Reaction = latencyOf(snap.reaction)
	if pid != 0 {
		cpu1, _ := procCPU(pid)
		res.ControllerCPUSeconds = cpu1 - cpu0
		if snap.replaced > 0 {
			res.CPUPerPodMs = res.ControllerCPUSeconds * 1000 / float64(snap.replaced)
		}
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
	if res.DNSPropagation != nil {
		res.Name += fmt.Sprintf(" (propagation p50 %.0f ms)", res.DNSPropagation.P50)
		res.Name = strings.TrimSpace(res.Name)
	}
	return res
}
