package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const healthQuery = `min(db_healthy) > 0`

// healthy is a gate that has held since d before t0.
func healthyFor(d time.Duration) HealthState {
	return HealthState{Checked: true, Healthy: true, HealthySince: t0.Add(-d), Value: "1"}
}

// unhealthyFor is a gate that has failed since d before t0.
func unhealthyFor(d time.Duration) HealthState {
	return HealthState{Checked: true, UnhealthySince: t0.Add(-d), Value: "0"}
}

func TestComputeHealthGate(t *testing.T) {
	gate := func(kv ...string) map[string]string {
		return ann(append([]string{AnnotationHealthQuery, healthQuery, AnnotationHealthStableSeconds, "30",
			AnnotationHealthTimeoutSeconds, "600", AnnotationMaxUnavailable, "1"}, kv...)...)
	}
	tests := []struct {
		name        string
		annotations map[string]string
		pods        []*corev1.Pod
		health      HealthState
		healthErr   error
		previous    *Status
		want        []deletion
		wantPhase   Phase
		wantReason  string
		wantState   string
		wantRequeue time.Duration
		wantInMsg   string
	}{{
		name:        "no query: no gate, the rollout goes at once",
		annotations: ann(AnnotationMaxUnavailable, "1"),
		pods:        pods("o", "o", "o"),
		want:        []deletion{evict("web-2")},
		wantPhase:   PhaseRolling,
		wantReason:  ReasonDeletingPods,
	}, {
		name:        "open: held for longer than stable-seconds, the step goes",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		health:      healthyFor(time.Minute),
		want:        []deletion{evict("web-2")},
		wantPhase:   PhaseRolling,
		wantReason:  ReasonDeletingPods,
		wantState:   HealthOpen,
	}, {
		name:        "not yet evaluated: the first step waits too",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthUnknown,
	}, {
		name:        "closed: nothing healthy goes, the message has the last value",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		health:      unhealthyFor(10 * time.Second),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthClosed,
		wantRequeue: 600 * time.Second, // from the rollout's start, later than the gate's closing
		wantInMsg:   "last value: 0",
	}, {
		name:        "closed: an unhealthy outdated pod is still repaired",
		annotations: gate(),
		pods:        pods("o", "o", "O"),
		health:      unhealthyFor(10 * time.Second),
		want:        []deletion{del("web-2")},
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthClosed,
		wantInMsg:   "meanwhile removing unhealthy web-2",
	}, {
		name:        "stable for 10 s of 30: waits the 20 s left",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		health:      healthyFor(10 * time.Second),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthWaiting,
		wantRequeue: 20 * time.Second,
		wantInMsg:   "the gate opens at 2030-01-02T03:04:25Z",
	}, {
		name:        "stable for exactly stable-seconds: open",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		health:      healthyFor(30 * time.Second),
		want:        []deletion{evict("web-2")},
		wantPhase:   PhaseRolling,
		wantReason:  ReasonDeletingPods,
		wantState:   HealthOpen,
	}, {
		name:        "healthy for long, but the last step was 5 s ago: stable-seconds count from the step",
		annotations: gate(),
		pods:        []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev)},
		health: func() HealthState {
			h := healthyFor(time.Hour)
			h.LastStep = t0.Add(-5 * time.Second)
			return h
		}(),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthWaiting,
		wantRequeue: 25 * time.Second,
	}, {
		name:        "stable-seconds 0: open as soon as it holds",
		annotations: gate(AnnotationHealthStableSeconds, "0"),
		pods:        pods("o", "o", "o"),
		health:      healthyFor(0),
		want:        []deletion{evict("web-2")},
		wantPhase:   PhaseRolling,
		wantReason:  ReasonDeletingPods,
		wantState:   HealthOpen,
	}, {
		name:        "error: fail closed, Blocked, HealthGateError",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		health:      HealthState{Checked: true, UnhealthySince: t0.Add(-time.Second), Err: "dial tcp 127.0.0.1:9: connection refused"},
		wantPhase:   PhaseBlocked,
		wantReason:  ReasonHealthGateError,
		wantState:   HealthError,
		wantInMsg:   "connection refused",
	}, {
		name:        "timeout: closed for health-timeout-seconds since the last progress: Stalled, HealthGateFailed",
		annotations: gate(AnnotationHealthTimeoutSeconds, "60"),
		pods:        []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev)},
		health:      unhealthyFor(2 * time.Minute),
		previous:    rollingSince(61*time.Second, 1),
		wantPhase:   PhaseStalled,
		wantReason:  ReasonHealthGateFailed,
		wantState:   HealthClosed,
		wantInMsg:   "health-timeout-seconds 1m0s",
	}, {
		name:        "timeout counts from the gate going unhealthy when that is later than the last progress",
		annotations: gate(AnnotationHealthTimeoutSeconds, "60"),
		pods:        []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev)},
		health:      unhealthyFor(50 * time.Second),
		previous:    rollingSince(5*time.Minute, 1),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthClosed,
		wantRequeue: 10 * time.Second,
	}, {
		name:        "timeout counts from the last step when that is later",
		annotations: gate(AnnotationHealthTimeoutSeconds, "60"),
		pods:        []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev)},
		health: func() HealthState {
			h := unhealthyFor(5 * time.Minute)
			h.LastStep = t0.Add(-20 * time.Second)
			return h
		}(),
		previous:    rollingSince(5*time.Minute, 1),
		wantPhase:   PhaseRolling,
		wantReason:  ReasonWaitingForHealth,
		wantState:   HealthClosed,
		wantRequeue: 40 * time.Second,
	}, {
		name:        "an error past the timeout stalls too",
		annotations: gate(AnnotationHealthTimeoutSeconds, "60"),
		pods:        pods("o", "o", "o"),
		health:      HealthState{Checked: true, UnhealthySince: t0.Add(-2 * time.Minute), Err: "server error"},
		previous:    rollingSince(2*time.Minute, 0),
		wantPhase:   PhaseStalled,
		wantReason:  ReasonHealthGateFailed,
		wantState:   HealthError,
	}, {
		name:        "no Prometheus known: InvalidConfig",
		annotations: gate(),
		pods:        pods("o", "o", "o"),
		healthErr:   errors.New("no Prometheus URL"),
		wantPhase:   PhaseInvalid,
		wantReason:  ReasonInvalidConfig,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sts := newSet(3, tt.annotations)
			in := input(t, sts, tt.pods)
			in.Health, in.HealthError, in.Previous = tt.health, tt.healthErr, tt.previous
			p := Compute(in)
			if diff := cmp.Diff(tt.want, deletionsOf(p)); diff != "" {
				t.Errorf("deletions (-want +got):\n%s", diff)
			}
			if p.Status.Phase != tt.wantPhase || p.Status.Reason != tt.wantReason {
				t.Errorf("status = %s/%s (%s), want %s/%s", p.Status.Phase, p.Status.Reason, p.Status.Message, tt.wantPhase, tt.wantReason)
			}
			gotState := ""
			if p.Status.HealthGate != nil {
				gotState = p.Status.HealthGate.State
			}
			if gotState != tt.wantState {
				t.Errorf("health gate state = %q, want %q", gotState, tt.wantState)
			}
			if tt.wantRequeue != 0 && p.RequeueAfter != tt.wantRequeue {
				t.Errorf("requeue = %s, want %s", p.RequeueAfter, tt.wantRequeue)
			}
			if !strings.Contains(p.Status.Message, tt.wantInMsg) {
				t.Errorf("message %q does not say %q", p.Status.Message, tt.wantInMsg)
			}
		})
	}
}

// TestHealthGateRollout plays a rollout step by step with a gate that the
// test turns: a step never goes unless the gate has held for stable-seconds
// since the later of its going healthy and the last step.
func TestHealthGateRollout(t *testing.T) {
	sts := newSet(4, ann(AnnotationHealthQuery, healthQuery, AnnotationHealthStableSeconds, "30", AnnotationMaxUnavailable, "1"))
	ps := pods("o", "o", "o", "o")
	now := t0
	h := HealthState{Checked: true, Healthy: true, HealthySince: now.Add(-time.Hour), Value: "1"}
	var prev *Status
	var steps []time.Time
	for range 1000 {
		if len(steps) == 4 {
			break
		}
		cfg, _ := ParseConfig(sts)
		in := Input{StatefulSet: sts, Config: cfg, Pods: ps, Health: h, Previous: prev, Now: now}
		p := Compute(in)
		prev = &p.Status
		if len(p.Deletions) > 0 {
			from := laterOf(h.HealthySince, h.LastStep)
			if !h.Healthy || now.Sub(from) < 30*time.Second {
				t.Fatalf("at %s: a step went with the gate at %+v", now.Sub(t0), h)
			}
			steps = append(steps, now)
			h.LastStep = now
			for _, d := range p.Deletions {
				o, _ := Ordinal(sts, d.Pod)
				ps[o] = newPod(o, newRev)
				ps[o].Status.Conditions[0].LastTransitionTime = metav1.NewTime(now)
			}
			// The database turns unhealthy for 10 s after the second step.
			if len(steps) == 2 {
				h.Healthy, h.HealthySince, h.UnhealthySince = false, time.Time{}, now
			}
		}
		if !h.Healthy && now.Sub(h.UnhealthySince) >= 10*time.Second {
			h.Healthy, h.HealthySince, h.UnhealthySince = true, now, time.Time{}
		}
		now = now.Add(time.Second)
	}
	if len(steps) != 4 {
		t.Fatalf("%d steps, want 4", len(steps))
	}
	want := []time.Duration{0, 30 * time.Second, 70 * time.Second, 100 * time.Second}
	for i, s := range steps {
		if got := s.Sub(t0); got != want[i] {
			t.Errorf("step %d at %s, want %s", i, got, want[i])
		}
	}
}

func TestParseHealthConfig(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    Config
		wantBad string
	}{
		{name: "defaults", ann: ann(AnnotationHealthQuery, " up > 0 "),
			want: Config{HealthQuery: "up > 0", HealthStable: 30 * time.Second, HealthTimeout: 600 * time.Second}},
		{name: "all set", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthStableSeconds, "0",
			AnnotationHealthTimeoutSeconds, "5", AnnotationHealthPrometheusURL, "https://prom.example:9090/prefix"),
			want: Config{HealthQuery: "up", HealthTimeout: 5 * time.Second, HealthPrometheusURL: "https://prom.example:9090/prefix"}},
		{name: "empty query", ann: ann(AnnotationHealthQuery, "  "), wantBad: AnnotationHealthQuery},
		{name: "negative stable", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthStableSeconds, "-1"), wantBad: AnnotationHealthStableSeconds},
		{name: "stable not a number", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthStableSeconds, "30s"), wantBad: AnnotationHealthStableSeconds},
		{name: "timeout 0", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthTimeoutSeconds, "0"), wantBad: AnnotationHealthTimeoutSeconds},
		{name: "relative URL", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthPrometheusURL, "prometheus:9090"), wantBad: AnnotationHealthPrometheusURL},
		{name: "ftp URL", ann: ann(AnnotationHealthQuery, "up", AnnotationHealthPrometheusURL, "ftp://prom"), wantBad: AnnotationHealthPrometheusURL},
		{name: "bad number without a query is still invalid", ann: ann(AnnotationHealthTimeoutSeconds, "x"), wantBad: AnnotationHealthTimeoutSeconds},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig(newSet(3, tt.ann))
			if tt.wantBad != "" {
				var ce *ConfigError
				if !errors.As(err, &ce) || ce.Annotation != tt.wantBad {
					t.Fatalf("err = %v, want a ConfigError for %s", err, tt.wantBad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := Config{HealthQuery: cfg.HealthQuery, HealthStable: cfg.HealthStable, HealthTimeout: cfg.HealthTimeout,
				HealthPrometheusURL: cfg.HealthPrometheusURL}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHealthFromStatusRoundTrip(t *testing.T) {
	sts := newSet(3, ann(AnnotationHealthQuery, healthQuery))
	for _, h := range []HealthState{{}, healthyFor(time.Hour), healthyFor(10 * time.Second), unhealthyFor(time.Minute),
		{Checked: true, UnhealthySince: t0.Add(-time.Second), Err: "boom"}} {
		in := input(t, sts, pods("o", "o", "o"))
		in.Health = h
		p := Compute(in)
		back := in
		back.Health = HealthFromStatus(&p.Status)
		q := Compute(back)
		if p.Status.Reason != q.Status.Reason || !cmp.Equal(deletionsOf(p), deletionsOf(q)) {
			t.Errorf("from %+v: %s %v; from its status: %s %v", h, p.Status.Reason, deletionsOf(p), q.Status.Reason, deletionsOf(q))
		}
	}
}
