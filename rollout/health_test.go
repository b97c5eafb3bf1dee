package rollout

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/policy"
)

// fakeHealth is a HealthGate whose answer the test sets.
type fakeHealth struct {
	mu     sync.Mutex
	state  policy.HealthState
	err    error
	asked  []string // url|query per Observe
	steps  []time.Time
	forgot int
}

func (h *fakeHealth) Observe(_ cache.ObjectName, url, query string) (policy.HealthState, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = append(h.asked, url+"|"+query)
	s := h.state
	if len(h.steps) > 0 {
		s.LastStep = h.steps[len(h.steps)-1]
	}
	return s, h.err
}

func (h *fakeHealth) Stepped(_ cache.ObjectName, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.steps = append(h.steps, at)
}

func (h *fakeHealth) Forget(cache.ObjectName) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgot++
}

// gatedFixture: three healthy outdated pods, max-unavailable 2, and a health
// query with a stable-seconds of 30.
func gatedFixture(t *testing.T, h HealthGate) (*fixture, cache.ObjectName) {
	f := newFixture(t)
	f.health = h
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "2",
		policy.AnnotationHealthQuery: "min(db_up) > 0", policy.AnnotationHealthStableSeconds: "30",
		policy.AnnotationHealthPrometheusURL: "http://prometheus.example:9090"})
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	return f, key(sts)
}

// TestHealthGateOpenEvictsAndSteps: a query that has held for longer than
// stable-seconds lets the batch go; each eviction is a step the gate hears of.
func TestHealthGateOpenEvictsAndSteps(t *testing.T) {
	h := &fakeHealth{state: policy.HealthState{Checked: true, Healthy: true, HealthySince: now.Add(-time.Minute), Value: "1"}}
	f, k := gatedFixture(t, h)
	if err := f.run(k); err != nil {
		t.Fatal(err)
	}
	got := describe(f.actions())
	if len(got) != 4 || !strings.HasPrefix(got[1], "create pods/eviction") || !strings.HasPrefix(got[2], "create pods/eviction") {
		t.Fatalf("actions %v: want the batch of 2 evicted", got)
	}
	if diff := cmp.Diff([]string{"http://prometheus.example:9090|min(db_up) > 0"}, h.asked); diff != "" {
		t.Errorf("asked (-want +got):\n%s", diff)
	}
	if len(h.steps) != 2 {
		t.Errorf("%d steps told to the gate, want one per eviction (2)", len(h.steps))
	}
	// Right after that step, the gate waits stable-seconds again.
	f.c.expectations.forget(k)
	if err := f.run(k); err != nil {
		t.Fatal(err)
	}
	if st := f.status(); st.Reason != policy.ReasonWaitingForHealth {
		t.Errorf("after a step: reason %s, want %s until the query held 30 s after it", st.Reason, policy.ReasonWaitingForHealth)
	}
}

// TestHealthGateClosedRemovesNothing: a query that does not hold, or cannot
// be evaluated, or is not evaluated yet, lets no healthy pod go; an error is
// Blocked with HealthGateError (fail closed).
func TestHealthGateClosedRemovesNothing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  policy.HealthState
		phase  policy.Phase
		reason string
	}{
		{"unknown", policy.HealthState{}, policy.PhaseRolling, policy.ReasonWaitingForHealth},
		{"unhealthy", policy.HealthState{Checked: true, UnhealthySince: now.Add(-time.Minute), Value: "0"}, policy.PhaseRolling, policy.ReasonWaitingForHealth},
		{"not yet stable", policy.HealthState{Checked: true, Healthy: true, HealthySince: now.Add(-10 * time.Second), Value: "1"}, policy.PhaseRolling, policy.ReasonWaitingForHealth},
		{"error", policy.HealthState{Checked: true, UnhealthySince: now.Add(-time.Minute), Err: "connection refused"}, policy.PhaseBlocked, policy.ReasonHealthGateError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &fakeHealth{state: tc.state}
			f, k := gatedFixture(t, h)
			if err := f.run(k); err != nil {
				t.Fatal(err)
			}
			for _, a := range describe(f.actions()) {
				if strings.Contains(a, "eviction") || strings.HasPrefix(a, "delete pods") {
					t.Errorf("%s: removed a pod: %s", tc.name, a)
				}
			}
			if st := f.status(); st.Phase != tc.phase || st.Reason != tc.reason {
				t.Errorf("%s: status %s/%s, want %s/%s", tc.name, st.Phase, st.Reason, tc.phase, tc.reason)
			}
			if len(h.steps) != 0 {
				t.Errorf("%s: %d steps told to the gate", tc.name, len(h.steps))
			}
		})
	}
}

// TestHealthGateWithoutGateOrURL: a query stsroller cannot evaluate at all
// (no gate, no Prometheus URL) is InvalidConfig, and removes nothing.
func TestHealthGateWithoutGateOrURL(t *testing.T) {
	for name, h := range map[string]HealthGate{
		"no gate": nil,
		"no URL":  &fakeHealth{err: errors.New("no Prometheus URL: set --prometheus-url or stsroller.io/health-prometheus-url")},
	} {
		t.Run(name, func(t *testing.T) {
			f, k := gatedFixture(t, h)
			if err := f.run(k); err != nil {
				t.Fatal(err)
			}
			for _, a := range describe(f.actions()) {
				if strings.Contains(a, "eviction") || strings.HasPrefix(a, "delete pods") {
					t.Errorf("removed a pod: %s", a)
				}
			}
			if st := f.status(); st.Phase != policy.PhaseInvalid {
				t.Errorf("status %s/%s %q, want Invalid", st.Phase, st.Reason, st.Message)
			}
		})
	}
}

// TestHealthGateForgottenWithoutQuery: a StatefulSet whose query is removed
// stops the gate's evaluations.
func TestHealthGateForgottenWithoutQuery(t *testing.T) {
	h := &fakeHealth{}
	f := newFixture(t)
	f.health = h
	sts := newSts("web", 1, nil)
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "new", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if h.forgot == 0 || len(h.asked) != 0 {
		t.Errorf("forgot %d times, asked %v: want the gate told to forget, never asked", h.forgot, h.asked)
	}
}
