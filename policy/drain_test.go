package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/stsroller/stsroller/pdb"
)

func askDrain(name string) deletion { return deletion{name, MethodRequestDrain} }

// askedAgo gives the pod a drain request made d before t0.
func askedAgo(d time.Duration) podOpt {
	return func(p *corev1.Pod) { annotate(p, AnnotationDrainRequested, t0.Add(-d).Format(time.RFC3339)) }
}

func drainComplete(p *corev1.Pod) { annotate(p, AnnotationDrainComplete, "done") }

func annotate(p *corev1.Pod, k, v string) {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[k] = v
}

func TestComputeDrain(t *testing.T) {
	const timeout = "60"
	drainSet := func(maxUnavailable string) map[string]string {
		return ann(AnnotationDrainTimeoutSeconds, timeout, AnnotationMaxUnavailable, maxUnavailable)
	}
	at := func(d time.Duration) string { return t0.Add(-d).Format(time.RFC3339) }
	tests := []struct {
		name        string
		annotations map[string]string
		pods        func() []*corev1.Pod
		edit        func(*Input)
		want        []deletion
		wantReason  string
		wantWaiting map[string]string
		wantRequeue time.Duration
	}{{
		name:        "a healthy pod is asked, not evicted",
		annotations: drainSet("1"),
		pods:        func() []*corev1.Pod { return pods("o", "o", "o") },
		want:        []deletion{askDrain("web-2")},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(0)},
	}, {
		name:        "a pod asked counts as unavailable: nobody else is asked, it is not asked twice",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second))}
		},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(10 * time.Second)},
		wantRequeue: 50 * time.Second,
	}, {
		name:        "within max-unavailable 2, the next pod is asked",
		annotations: drainSet("2"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second))}
		},
		want:        []deletion{askDrain("web-1")},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-1": at(0), "web-2": at(10 * time.Second)},
		wantRequeue: 50 * time.Second,
	}, {
		name:        "an answered pod is evicted",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second), drainComplete)}
		},
		want:       []deletion{evict("web-2")},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "an unanswered pod is evicted at the timeout",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(60*time.Second))}
		},
		want:       []deletion{evict("web-2")},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "an unhealthy pod is deleted at once, without a handshake",
		annotations: drainSet("1"),
		pods:        func() []*corev1.Pod { return pods("o", "o", "O") },
		want:        []deletion{del("web-2")},
		wantReason:  ReasonDeletingPods,
	}, {
		name:        "a pod asked that turned unhealthy is deleted as unhealthy",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second), notReady)}
		},
		want:       []deletion{del("web-2")},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "the leader waits for a pod still draining",
		annotations: drainSet("2"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, newRev), newPod(1, oldRev, askedAgo(10*time.Second)), newPod(2, oldRev, leader)}
		},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-1": at(10 * time.Second)},
		wantRequeue: 50 * time.Second,
	}, {
		name:        "the leader is asked last",
		annotations: drainSet("2"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, newRev), newPod(1, newRev), newPod(2, oldRev, leader)}
		},
		want:        []deletion{askDrain("web-2")},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(0)},
	}, {
		name:        "a pod asked holds its PDB's disruption: nobody else is asked",
		annotations: drainSet("3"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second))}
		},
		edit:        func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 1}) },
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(10 * time.Second)},
		wantRequeue: 50 * time.Second,
	}, {
		name:        "an answered pod is evicted with its own PDB disruption",
		annotations: drainSet("3"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second), drainComplete)}
		},
		edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 1}) },
		want:       []deletion{evict("web-2")},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "an answered pod whose PDB allows nothing waits, still counted",
		annotations: drainSet("3"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second), drainComplete)}
		},
		edit:        func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 0}) },
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(10 * time.Second)},
	}, {
		name:        "a request whose time cannot be read never times out",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			p := newPod(2, oldRev)
			annotate(p, AnnotationDrainRequested, "yesterday")
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), p}
		},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": "yesterday"},
	}, {
		name:        "without the handshake a request annotation is ignored",
		annotations: ann(AnnotationMaxUnavailable, "1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second))}
		},
		want:       []deletion{evict("web-2")},
		wantReason: ReasonDeletingPods,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, newSet(3, tc.annotations), tc.pods())
			if tc.edit != nil {
				tc.edit(&in)
			}
			plan := Compute(in)
			if diff := cmp.Diff(tc.want, deletionsOf(plan)); diff != "" {
				t.Errorf("deletions (-want +got):\n%s", diff)
			}
			if plan.Status.Phase != PhaseRolling || plan.Status.Reason != tc.wantReason {
				t.Errorf("status %s/%s (%s), want %s/%s", plan.Status.Phase, plan.Status.Reason, plan.Status.Message, PhaseRolling, tc.wantReason)
			}
			if diff := cmp.Diff(tc.wantWaiting, plan.Status.WaitingForDrain); diff != "" {
				t.Errorf("waitingForDrain (-want +got):\n%s", diff)
			}
			if tc.wantRequeue > 0 && plan.RequeueAfter != tc.wantRequeue {
				t.Errorf("RequeueAfter = %s, want %s", plan.RequeueAfter, tc.wantRequeue)
			}
			if tc.wantReason == ReasonWaitingForDrain {
				for n := range tc.wantWaiting {
					if !strings.Contains(plan.Status.Message, n) {
						t.Errorf("message %q does not name %s", plan.Status.Message, n)
					}
				}
			}
		})
	}
}
