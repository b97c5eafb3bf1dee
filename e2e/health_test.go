//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// The Prometheus health gate (stsroller.io/health-query, issue 20) with
// Debian's Prometheus: a small exporter in the test serves the gauge
// stsroller_e2e_db_healthy, whose value the test sets, and Prometheus
// scrapes it every second. Each test runs its own exporter, Prometheus and
// stsroller.

// exporter serves one gauge whose value the test controls.
type exporter struct {
	value atomic.Int64
	addr  string
}

func startExporter(t *testing.T, value int64) *exporter {
	t.Helper()
	e := &exporter{}
	e.value.Store(value)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# TYPE stsroller_e2e_db_healthy gauge\nstsroller_e2e_db_healthy %d\n", e.value.Load())
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

const healthQuery = `min(stsroller_e2e_db_healthy)`

// newGatedRollout starts an exporter at value, a Prometheus scraping it, and
// a rollout of n pods gated on healthQuery with the annotations given, and
// stsroller evaluating the query every second.
func newGatedRollout(t *testing.T, n int32, value int64, annotations map[string]string) (*rollout, *exporter, *promServer) {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus on $PATH (apt-get install prometheus; .ci/run does)")
	}
	if framework.Deployed() {
		t.Skip("the deployed controller cannot reach a Prometheus on this host's loopback")
	}
	e := startExporter(t, value)
	prom := startPrometheus(t, bin, fmt.Sprintf("- job_name: db\n  static_configs:\n  - targets: [%q]\n", e.addr))
	prom.wait(t, "the exporter scraped", `up{job="db"} == 1`, true)
	ann := map[string]string{policy.AnnotationHealthQuery: healthQuery}
	for k, v := range annotations {
		ann[k] = v
	}
	r := newRollout(t, rolloutOptions{replicas: n, annotations: ann, noControllerYet: true})
	r.controller = framework.StartController(t, r.client, framework.ControllerOptions{Binary: binary(t), Namespace: r.ns,
		Args: []string{"--prometheus-url=" + prom.base, "--health-interval=1s"}})
	return r, e, prom
}

// TestHealthGateHoldsBetweenBatches: after the first batch the database
// turns unhealthy; no healthy pod is removed until the query has held again
// for health-stable-seconds, and the status says so with the last value.
func TestHealthGateHoldsBetweenBatches(t *testing.T) {
	t.Parallel()
	const stable = 8 * time.Second
	r, e, _ := newGatedRollout(t, 6, 1, map[string]string{policy.AnnotationMaxUnavailable: "2",
		policy.AnnotationHealthStableSeconds: strconv.Itoa(int(stable / time.Second))})
	gateStart := time.Now()
	rev := r.newRevision("2")
	r.waitDeletions(2)
	e.value.Store(0)
	if first := r.watch.Deletions()[0].At; first.Sub(gateStart) < stable {
		t.Errorf("the first batch went %s after the gate started, before the query had held for %s", first.Sub(gateStart), stable)
	}
	// Unhealthy: nothing more for 15 s, and the status names the value.
	err := framework.Consistently(t.Context(), 15*time.Second, 250*time.Millisecond, func(context.Context) error {
		if n := len(r.watch.Deletions()); n > 2 {
			return fmt.Errorf("%d pods removed while the database is unhealthy, want the first batch of 2 only", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st := r.status()
	if st == nil || st.Phase != policy.PhaseRolling || st.Reason != policy.ReasonWaitingForHealth || !strings.Contains(st.Message, "last value: 0") {
		t.Errorf("status %+v: want Rolling/%s with the last value 0", st, policy.ReasonWaitingForHealth)
	}
	if st != nil && (st.HealthGate == nil || st.HealthGate.State != policy.HealthClosed) {
		t.Errorf("status healthGate %+v: want state %s", st.HealthGate, policy.HealthClosed)
	}
	// Healthy again: the next batch waits stable-seconds from now.
	healthy := time.Now()
	e.value.Store(1)
	r.waitDeletions(3)
	if third := r.watch.Deletions()[2].At; third.Sub(healthy) < stable {
		t.Errorf("the next batch went %s after the database turned healthy again, before %s", third.Sub(healthy), stable)
	}
	r.waitRolledOut(rev, 6)
	r.checkEachOnceWithin(2, "the gated rollout")
}

// TestHealthGatePrometheusDown: with Prometheus stopped the gate holds
// (fail closed): Blocked, HealthGateError, nothing removed.
func TestHealthGatePrometheusDown(t *testing.T) {
	t.Parallel()
	r, _, prom := newGatedRollout(t, 3, 1, map[string]string{policy.AnnotationMaxUnavailable: "1",
		policy.AnnotationHealthStableSeconds: "1"})
	if err := prom.proc.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.newRevision("2")
	r.waitEvent(policy.ReasonHealthGateError, corev1.EventTypeWarning)
	r.noneReplaced(10 * time.Second)
	if st := r.status(); st == nil || st.Phase != policy.PhaseBlocked || st.Reason != policy.ReasonHealthGateError {
		t.Errorf("status %+v: want Blocked/%s", st, policy.ReasonHealthGateError)
	}
}

// TestHealthGateNeverOpens: a query that never holds stops the rollout with
// Stalled, HealthGateFailed and a Warning event after health-timeout-seconds,
// and no pod is removed.
func TestHealthGateNeverOpens(t *testing.T) {
	t.Parallel()
	r, _, _ := newGatedRollout(t, 3, 0, map[string]string{policy.AnnotationMaxUnavailable: "1",
		policy.AnnotationHealthStableSeconds: "1", policy.AnnotationHealthTimeoutSeconds: "6"})
	changed := time.Now()
	r.newRevision("2")
	ev := r.waitEvent(policy.ReasonHealthGateFailed, corev1.EventTypeWarning)
	if d := time.Since(changed); d < 6*time.Second {
		t.Errorf("%s after %s, before the timeout of 6 s", policy.ReasonHealthGateFailed, d)
	}
	if st := r.status(); st == nil || st.Phase != policy.PhaseStalled || st.Reason != policy.ReasonHealthGateFailed {
		t.Errorf("status %+v: want Stalled/%s (event %q)", st, policy.ReasonHealthGateFailed, ev.Message)
	}
	if n := len(r.watch.Deletions()); n != 0 {
		t.Errorf("%d pods removed while the gate never opened", n)
	}
}
