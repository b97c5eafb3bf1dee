package policy

import (
	"cmp"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/stsroller/stsroller/pdb"
)

func askDrain(name string) deletion { return deletion{name, MethodRequestDrain} }

// askedAgo gives the pod a drain request for the update revision, made d
// before t0.
func askedAgo(d time.Duration) podOpt { return askedFor(newRev, d) }

// askedFor gives the pod a drain request for revision rev, made d before t0.
func askedFor(rev string, d time.Duration) podOpt {
	return func(p *corev1.Pod) {
		annotate(p, AnnotationDrainRequested, t0.Add(-d).Format(time.RFC3339Nano))
		annotate(p, AnnotationDrainRevision, rev)
	}
}

// withdrawalsOf names the pods whose drain requests the plan withdraws.
func withdrawalsOf(p Plan) []string {
	var out []string
	for _, w := range p.Withdrawals {
		out = append(out, w.Pod.Name)
	}
	return out
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
	at := func(d time.Duration) string { return t0.Add(-d).Format(time.RFC3339Nano) }
	tests := []struct {
		name          string
		annotations   map[string]string
		replicas      int32
		pods          func() []*corev1.Pod
		edit          func(*Input)
		want          []deletion
		wantWhy       []Removal
		wantWithdrawn []string
		wantPhase     Phase
		wantReason    string
		wantWaiting   map[string]string
		wantRequeue   time.Duration
		wantInMessage string
	}{{
		name:        "a healthy pod is asked, not evicted; the status lists only requests already made",
		annotations: drainSet("1"),
		pods:        func() []*corev1.Pod { return pods("o", "o", "o") },
		want:        []deletion{askDrain("web-2")},
		wantWhy:     []Removal{RemovalDrainRequest},
		wantReason:  ReasonWaitingForDrain,
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
		wantWaiting: map[string]string{"web-2": at(10 * time.Second)},
		wantRequeue: 50 * time.Second,
	}, {
		name:        "an answered pod is evicted",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(10*time.Second), drainComplete)}
		},
		want:       []deletion{evict("web-2")},
		wantWhy:    []Removal{RemovalDrained},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "an unanswered pod is evicted at the timeout",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(60*time.Second))}
		},
		want:       []deletion{evict("web-2")},
		wantWhy:    []Removal{RemovalDrainTimedOut},
		wantReason: ReasonDeletingPods,
	}, {
		name:        "an unanswered pod 1 ms before its timeout waits: the request's time has sub-second precision",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(60*time.Second-time.Millisecond))}
		},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": at(60*time.Second - time.Millisecond)},
		wantRequeue: time.Millisecond,
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
		want:       []deletion{askDrain("web-2")},
		wantReason: ReasonWaitingForDrain,
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
		edit:          func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 0}) },
		wantReason:    ReasonWaitingForDrain,
		wantWaiting:   map[string]string{"web-2": at(10 * time.Second)},
		wantInMessage: "web-2 (answered; held by its PodDisruptionBudget)",
	}, {
		name:        "a request whose time cannot be read never times out",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			p := newPod(2, oldRev)
			annotate(p, AnnotationDrainRequested, "yesterday")
			annotate(p, AnnotationDrainRevision, newRev)
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), p}
		},
		wantReason:  ReasonWaitingForDrain,
		wantWaiting: map[string]string{"web-2": "yesterday"},
	}, {
		name:        "without the handshake a request annotation is ignored: an eviction as any other",
		annotations: ann(AnnotationMaxUnavailable, "1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev, askedAgo(10*time.Second)), newPod(2, oldRev, askedAgo(10*time.Second))}
		},
		want:          []deletion{evict("web-2")},
		wantWhy:       []Removal{RemovalOutdated},
		wantWithdrawn: []string{"web-1"},
		wantReason:    ReasonDeletingPods,
	}, {
		// Issue 15, bug 3: requests (and answers) left by an earlier
		// rollout are not this rollout's.
		name:        "requests and answers of another revision count for nothing: asked anew within max-unavailable, the rest withdrawn",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev, askedFor("web-older", 2*time.Hour), drainComplete),
				newPod(1, oldRev, askedFor("web-older", 2*time.Hour), drainComplete), newPod(2, oldRev, askedFor("web-older", 2*time.Hour))}
		},
		want:          []deletion{askDrain("web-2")},
		wantWithdrawn: []string{"web-1", "web-0"},
		wantReason:    ReasonWaitingForDrain,
	}, {
		name:        "a request that names no revision (made before revisions were named) is withdrawn",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			p := newPod(1, oldRev, drainComplete)
			annotate(p, AnnotationDrainRequested, t0.Add(-time.Hour).Format(time.RFC3339))
			return []*corev1.Pod{newPod(0, newRev), p, newPod(2, newRev)}
		},
		want:       []deletion{askDrain("web-1")},
		wantReason: ReasonWaitingForDrain,
	}, {
		name:        "after a revert the pods asked are current: their requests are withdrawn, nothing is removed",
		annotations: drainSet("2"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, newRev), newPod(1, newRev, askedFor("web-other", time.Minute), drainComplete),
				newPod(2, newRev, askedFor("web-other", time.Minute))}
		},
		wantWithdrawn: []string{"web-2", "web-1"},
		wantPhase:     PhaseIdle,
		wantReason:    ReasonUpToDate,
	}, {
		name:        "paused: every request is withdrawn",
		annotations: ann(AnnotationDrainTimeoutSeconds, timeout, AnnotationMaxUnavailable, "2", AnnotationPaused, "true"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev, askedAgo(time.Second)), newPod(2, oldRev, askedAgo(time.Second), drainComplete)}
		},
		wantWithdrawn: []string{"web-2", "web-1"},
		wantPhase:     PhasePaused,
		wantReason:    ReasonPaused,
	}, {
		name:        "the partition raised mid-drain: requests beyond what is left to update are withdrawn",
		annotations: ann(AnnotationDrainTimeoutSeconds, timeout, AnnotationMaxUnavailable, "2", AnnotationPartition, "3"),
		replicas:    4,
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, askedAgo(time.Second), drainComplete),
				newPod(3, oldRev, askedAgo(time.Second), drainComplete)}
		},
		want:          []deletion{evict("web-3")},
		wantWithdrawn: []string{"web-2"},
		wantReason:    ReasonDeletingPods,
	}, {
		// Issue 15, bug 4.
		name:        "an answered pod is not evicted while max-unavailable is used up (an updated pod crashed)",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev, askedAgo(10*time.Second), drainComplete), newPod(2, newRev, notReady)}
		},
		wantReason:    ReasonWaitingForDrain,
		wantWaiting:   map[string]string{"web-1": at(10 * time.Second)},
		wantInMessage: "web-1 (answered; held: 2 of 3 pods unavailable or draining (max-unavailable 1))",
	}, {
		// Issue 15, bug 5.
		name:        "a pod asked that became the leader is not evicted while other outdated pods remain: its request is withdrawn",
		annotations: drainSet("1"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, oldRev), newPod(1, newRev), newPod(2, oldRev, leader, askedAgo(10*time.Second), drainComplete)}
		},
		want:          []deletion{askDrain("web-0")},
		wantWithdrawn: []string{"web-2"},
		wantReason:    ReasonWaitingForDrain,
	}, {
		name:        "an answered leader waits until every replacement is available",
		annotations: drainSet("3"),
		pods: func() []*corev1.Pod {
			return []*corev1.Pod{newPod(0, newRev, notReady), newPod(1, newRev), newPod(2, oldRev, leader, askedAgo(10*time.Second), drainComplete)}
		},
		wantReason:    ReasonWaitingForDrain,
		wantWaiting:   map[string]string{"web-2": at(10 * time.Second)},
		wantInMessage: "the leader waits until every other pod is updated and available",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			replicas := cmp.Or(tc.replicas, 3)
			in := input(t, newSet(replicas, tc.annotations), tc.pods())
			if tc.edit != nil {
				tc.edit(&in)
			}
			plan := Compute(in)
			if diff := gocmp.Diff(tc.want, deletionsOf(plan)); diff != "" {
				t.Errorf("deletions (-want +got):\n%s", diff)
			}
			if tc.wantWhy != nil {
				var why []Removal
				for _, d := range plan.Deletions {
					why = append(why, d.Why)
				}
				if diff := gocmp.Diff(tc.wantWhy, why); diff != "" {
					t.Errorf("removal reasons (-want +got):\n%s", diff)
				}
			}
			if diff := gocmp.Diff(tc.wantWithdrawn, withdrawalsOf(plan)); diff != "" {
				t.Errorf("withdrawn (-want +got):\n%s", diff)
			}
			wantPhase := cmp.Or(tc.wantPhase, PhaseRolling)
			if plan.Status.Phase != wantPhase || plan.Status.Reason != tc.wantReason {
				t.Errorf("status %s/%s (%s), want %s/%s", plan.Status.Phase, plan.Status.Reason, plan.Status.Message, wantPhase, tc.wantReason)
			}
			if tc.wantInMessage != "" && !strings.Contains(plan.Status.Message, tc.wantInMessage) {
				t.Errorf("message %q does not say %q", plan.Status.Message, tc.wantInMessage)
			}
			if diff := gocmp.Diff(tc.wantWaiting, plan.Status.WaitingForDrain); diff != "" {
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
