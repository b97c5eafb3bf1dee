package policy

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/pdb"
)

func rollingSince(progress time.Duration, updatedAvailable int32) *Status {
	return &Status{
		Phase:              PhaseRolling,
		Reason:             ReasonDeletingPods,
		UpdateRevision:     newRev,
		UpdatedAvailable:   updatedAvailable,
		LastTransitionTime: metav1.NewTime(t0.Add(-progress)),
		LastProgressTime:   ptr.To(metav1.NewTime(t0.Add(-progress))),
	}
}

func ann(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func withReadinessGate(sts *appsv1.StatefulSet) *appsv1.StatefulSet {
	sts.Spec.Template.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: ConditionDNSPropagated}}
	return sts
}

func headlessService(publishNotReady bool) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, PublishNotReadyAddresses: publishNotReady},
	}
}

func propagated(names ...string) map[string]DNSState {
	m := map[string]DNSState{}
	for _, n := range names {
		m[n] = DNSState{Propagated: true}
	}
	return m
}

func TestCompute(t *testing.T) {
	const dnsDomain = "web.example.com"
	tests := []struct {
		name       string
		sts        *appsv1.StatefulSet
		pods       []*corev1.Pod
		edit       func(*Input)
		wantPhase  Phase
		wantReason string
		want       []deletion
		check      func(*testing.T, Plan)
	}{
		// Step 1: nothing while not OnDelete, misconfigured, paused, behind,
		// or waiting for our own deletions.
		{
			name: "not OnDelete",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
				return s
			}(),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseInvalid,
			wantReason: ReasonNotOnDelete,
		},
		{
			name:       "invalid config",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "0")),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseInvalid,
			wantReason: ReasonInvalidConfig,
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, AnnotationMaxUnavailable) {
					t.Errorf("message %q does not name %s", p.Status.Message, AnnotationMaxUnavailable)
				}
			},
		},
		{
			name:       "paused",
			sts:        newSet(3, ann(AnnotationPaused, "true")),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhasePaused,
			wantReason: ReasonPaused,
		},
		{
			name: "generation not observed",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Generation = 2
				return s
			}(),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseIdle,
			wantReason: ReasonGenerationNotObserved,
		},
		{
			name: "generation not observed keeps the rollout's phase",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Generation = 2
				return s
			}(),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 0) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonGenerationNotObserved,
		},
		{
			name: "update revision not reported",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Status.UpdateRevision = ""
				return s
			}(),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseIdle,
			wantReason: ReasonGenerationNotObserved,
		},
		{
			// Issue 18: a removal of ours not yet observed counts at once
			// as a pod on its way out, instead of holding the whole plan.
			name:       "our removal not yet observed counts as unavailable: max-unavailable 1 is used up",
			sts:        newSet(3, nil),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.Removing = map[types.UID]Method{in.Pods[2].UID: MethodEvict} },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name:       "our removal not yet observed: the plan goes on within max-unavailable 3",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.Removing = map[types.UID]Method{in.Pods[2].UID: MethodEvict} },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-0"), evict("web-1")},
		},
		{
			name: "an eviction not yet observed holds its budget's disruption while the status does not count it",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods: pods("o", "o", "o"),
			edit: func(in *Input) {
				in.Removing = map[types.UID]Method{in.Pods[2].UID: MethodEvict}
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 1})
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name: "an eviction the budget's status counts already is not counted twice",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods: pods("o", "o", "o"),
			edit: func(in *Input) {
				in.Removing = map[types.UID]Method{in.Pods[2].UID: MethodEvict}
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 1, Disrupted: map[string]bool{"web-2": true}})
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},

		// Step 2: unhealthy outdated pods first, deleted, in waves.
		{
			name:       "unhealthy outdated before healthy even with a lower ordinal",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-0"), evict("web-2")},
		},
		{
			name: "pending and crash-looping pods are unhealthy",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "2")),
			pods: []*corev1.Pod{
				newPod(0, oldRev, pending),
				newPod(1, oldRev, crashLooping),
				newPod(2, oldRev),
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-1"), del("web-0")},
			check: func(t *testing.T, p Plan) {
				for _, d := range p.Deletions {
					want := map[string]string{"web-0": "Pending", "web-1": "CrashLoopBackOff"}[d.Pod.Name]
					if !strings.Contains(d.Message, want) {
						t.Errorf("deletion message %q does not say %s", d.Message, want)
					}
				}
			},
		},
		{
			name:       "at most max-unavailable unhealthy replacements at once",
			sts:        newSet(5, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("O", "O", "O", "O", "O"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-4"), del("web-3")},
		},
		{
			name:       "replacements in flight count against the unhealthy wave",
			sts:        newSet(5, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("O", "O", "O", "-", "N"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name:       "one replacement in flight leaves room for one",
			sts:        newSet(5, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("O", "O", "O", "n", "N"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-2")},
		},
		{
			name:       "outdated unhealthy leaves no room for healthy",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("O", "O", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-1"), del("web-0")},
		},

		// Step 3: healthy outdated pods while unavailable < max-unavailable.
		{
			name:       "highest ordinal first",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2")},
		},
		{
			name:       "batch of max-unavailable",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "3")),
			pods:       pods("o", "o", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-3"), evict("web-2"), evict("web-1")},
		},
		{
			name:       "max-unavailable as a percentage",
			sts:        newSet(10, ann(AnnotationMaxUnavailable, "30%")),
			pods:       pods("o", "o", "o", "o", "o", "o", "o", "o", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-9"), evict("web-8"), evict("web-7")},
		},
		{
			name:       "an updated pod not yet ready counts as unavailable",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("o", "o", "o", "N"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2")},
		},
		{
			name:       "a missing pod counts as unavailable",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("o", "o", "-"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name: "a terminating pod counts as unavailable",
			sts:  newSet(3, nil),
			pods: []*corev1.Pod{
				newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, terminating),
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name:       "max-unavailable used up",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "N"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},

		// PodDisruptionBudgets.
		{
			name:       "PDB headroom limits evictions",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "3")),
			pods:       pods("o", "o", "o", "o"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 1}) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-3")},
		},
		{
			name:       "PDB without headroom blocks",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "o"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 0}) },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonBlockedByPDB,
		},
		{
			name:       "PDB spent on our own replacements is waiting, not blocked",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "3")),
			pods:       pods("o", "o", "o", "N"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 0}) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, "allows no more disruptions") {
					t.Errorf("message %q does not name the budget", p.Status.Message)
				}
			},
		},
		{
			name:       "stale PDB blocks",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "o"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Stale: true}) },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonBlockedByPDB,
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, "not yet observed") {
					t.Errorf("message %q does not say the budget is stale", p.Status.Message)
				}
			},
		},
		{
			name:       "stale PDB blocks whatever its count says",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "o"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 2, Stale: true}) },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonBlockedByPDB,
		},
		{
			name:       "PDB does not hold back unhealthy pods",
			sts:        newSet(3, nil),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 0}) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-0")},
		},
		{
			name: "PDB over some pods only",
			sts:  newSet(4, ann(AnnotationMaxUnavailable, "2")),
			pods: pods("o", "o", "o", "o"),
			edit: func(in *Input) {
				in.Budgets = map[string][]pdb.Budget{"web-3": {{Name: "web-3", Allowed: 0}}}
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2"), evict("web-1")},
		},
		{
			name: "two PDBs over one pod",
			sts:  newSet(3, nil),
			pods: pods("O", "o", "o"),
			edit: func(in *Input) {
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 3})
				in.Budgets["web-1"] = append(in.Budgets["web-1"], pdb.Budget{Name: "web-1", Allowed: 1})
			},
			wantPhase:  PhaseBlocked,
			wantReason: ReasonMultiplePDBs,
			// The unhealthy pod costs no budget: its repair goes on.
			want: []deletion{del("web-0")},
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, "web-1 (web, web-1)") {
					t.Errorf("message %q does not name the pod and its budgets", p.Status.Message)
				}
			},
		},
		{
			name:       "budgets that cannot be read block",
			sts:        newSet(3, nil),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.BudgetError = errors.New("PodDisruptionBudget ns/x: invalid selector") },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonBlockedByPDB,
			want:       []deletion{del("web-0")},
		},
		{
			name: "two PDBs over one pod stop every eviction",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods: pods("o", "o", "o"),
			edit: func(in *Input) {
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web", Allowed: 3})
				in.Budgets["web-0"] = append(in.Budgets["web-0"], pdb.Budget{Name: "web-0", Allowed: 1})
			},
			wantPhase:  PhaseBlocked,
			wantReason: ReasonMultiplePDBs,
		},
		{
			name: "a DNS server that cannot be asked stops evictions, not repairs",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "2", AnnotationDNSDomain, "web.example.com")),
			pods: pods("O", "o", "o"),
			edit: func(in *Input) {
				in.DNS = propagated("web-0", "web-1")
				in.DNS["web-2"] = DNSState{Unreachable: true, Message: "ns2: i/o timeout"}
			},
			wantPhase:  PhaseBlocked,
			wantReason: ReasonDNSUnreachable,
			want:       []deletion{del("web-0")},
		},

		// Step 4: leader last.
		{
			name:       "leader last",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1"), evict("web-0")},
		},
		{
			name:       "leader once it is the last outdated pod",
			sts:        newSet(3, nil),
			pods:       []*corev1.Pod{newPod(0, newRev), newPod(1, oldRev, leader), newPod(2, newRev)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name:       "leader waits for an unhealthy outdated pod",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, oldRev, notReady), newPod(1, newRev), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-0")},
		},
		{
			// Issue 15, bug 2: the leader goes alone, after every other
			// pod's replacement, even with room for more.
			name:       "leader waits while another pod's replacement is on its way, max-unavailable 3",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, oldRev, terminating), newPod(1, newRev), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name:       "leader waits while an updated pod is not yet available",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, newRev, notReady), newPod(1, newRev), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name:       "leader goes alone once every other pod is updated and available",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, newRev), newPod(1, newRev), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2")},
		},
		{
			name:       "two leaders: one at a time",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods:       []*corev1.Pod{newPod(0, newRev), newPod(1, oldRev, leader), newPod(2, oldRev, leader)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2")},
		},
		{
			name:       "unhealthy leader goes first",
			sts:        newSet(3, nil),
			pods:       []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, oldRev, leader, notReady)},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-2")},
		},
		{
			name: "custom leader selector",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "3", AnnotationLeaderSelector, "role=primary")),
			pods: []*corev1.Pod{
				newPod(0, oldRev), newPod(1, oldRev, func(p *corev1.Pod) { p.Labels["role"] = "primary" }), newPod(2, oldRev, leader),
			},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-2"), evict("web-0")},
		},

		// Step 6: partition.
		{
			name:       "partition keeps pods at the old revision",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "4", AnnotationPartition, "2")),
			pods:       pods("o", "o", "o", "o"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-3"), evict("web-2")},
		},
		{
			name:       "partition counts pods already updated",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "4", AnnotationPartition, "2")),
			pods:       pods("O", "o", "o", "n"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{del("web-0")},
		},
		{
			name:       "partition counts missing pods",
			sts:        newSet(4, ann(AnnotationMaxUnavailable, "4", AnnotationPartition, "2")),
			pods:       pods("o", "o", "-", "n"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			name: "a completed partitioned rollout stays complete while a pod is recreated",
			sts:  newSet(4, ann(AnnotationPartition, "2")),
			pods: pods("o", "o", "n", "-"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, UpdateRevision: newRev}
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			name: "an idle partitioned StatefulSet stays idle while a pod is recreated",
			sts:  newSet(4, ann(AnnotationPartition, "2")),
			pods: pods("o", "o", "n", "-"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseIdle, Reason: ReasonUpToDate, UpdateRevision: newRev}
			},
			wantPhase:  PhaseIdle,
			wantReason: ReasonUpToDate,
		},
		{
			name:       "partition reached completes the rollout",
			sts:        newSet(4, ann(AnnotationPartition, "2")),
			pods:       pods("o", "O", "n", "n"),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 1) },
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			name:       "partition above replicas",
			sts:        newSet(3, ann(AnnotationPartition, "5")),
			pods:       pods("o", "o", "o"),
			wantPhase:  PhaseIdle,
			wantReason: ReasonUpToDate,
		},

		// minReadySeconds.
		{
			name: "ready for less than minReadySeconds is not available",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Spec.MinReadySeconds = 30
				return s
			}(),
			pods:       []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev, readyFor(10*time.Second))},
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
			check: func(t *testing.T, p Plan) {
				if p.RequeueAfter != 20*time.Second {
					t.Errorf("RequeueAfter = %v, want 20s", p.RequeueAfter)
				}
				if p.Status.Available != 2 || p.Status.UpdatedAvailable != 0 {
					t.Errorf("available %d, updated available %d; want 2, 0", p.Status.Available, p.Status.UpdatedAvailable)
				}
			},
		},
		{
			name: "ready for minReadySeconds is available",
			sts: func() *appsv1.StatefulSet {
				s := newSet(3, nil)
				s.Spec.MinReadySeconds = 30
				return s
			}(),
			pods:       []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev, readyFor(30*time.Second))},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name:       "no minReadySeconds: Ready is available even when the kubelet's clock is ahead",
			sts:        newSet(3, nil),
			pods:       []*corev1.Pod{newPod(0, oldRev), newPod(1, oldRev), newPod(2, newRev, readyFor(-5*time.Second))},
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},

		// The DNS gate.
		{
			name:       "DNS gate: not propagated is not available",
			sts:        newSet(3, ann(AnnotationDNSDomain, dnsDomain)),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.DNS = propagated("web-0", "web-1") },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForDNS,
			check: func(t *testing.T, p Plan) {
				if diff := cmp.Diff(map[string]string{"web-2": ""}, p.Status.WaitingForDNS); diff != "" {
					t.Errorf("WaitingForDNS (-want +got):\n%s", diff)
				}
				if p.Status.Available != 2 || p.Status.UpdatedAvailable != 0 {
					t.Errorf("available %d, updated available %d; want 2, 0", p.Status.Available, p.Status.UpdatedAvailable)
				}
			},
		},
		{
			name:       "DNS gate: propagated",
			sts:        newSet(3, ann(AnnotationDNSDomain, dnsDomain)),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.DNS = propagated("web-0", "web-1", "web-2") },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name: "DNS gate: a server cannot be asked",
			sts:  newSet(3, ann(AnnotationDNSDomain, dnsDomain)),
			pods: pods("O", "o", "n"),
			edit: func(in *Input) {
				in.DNS = propagated("web-0", "web-1")
				in.DNS["web-2"] = DNSState{Unreachable: true, Message: "ns1.example.com: i/o timeout"}
			},
			wantPhase:  PhaseBlocked,
			wantReason: ReasonDNSUnreachable,
		},
		{
			name: "DNS gate: unreachable never counts as propagated",
			sts:  newSet(3, ann(AnnotationDNSDomain, dnsDomain)),
			pods: pods("n", "n", "n"),
			edit: func(in *Input) {
				in.DNS = propagated("web-0", "web-1")
				in.DNS["web-2"] = DNSState{Propagated: true, Unreachable: true, Message: "ns1.example.com: i/o timeout"}
			},
			wantPhase:  PhaseIdle,
			wantReason: ReasonUpToDate,
			check: func(t *testing.T, p Plan) {
				if p.Status.Available != 2 {
					t.Errorf("available %d, want 2", p.Status.Available)
				}
			},
		},
		{
			name:       "DNS gate: no servers",
			sts:        newSet(3, ann(AnnotationDNSDomain, dnsDomain)),
			pods:       pods("O", "o", "o"),
			edit:       func(in *Input) { in.DNSError = errors.New("no authoritative servers for web.example.com") },
			wantPhase:  PhaseInvalid,
			wantReason: ReasonInvalidConfig,
		},
		{
			name:       "DNS gate off: DNS state is not read",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "n"),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name:       "readiness gate without publishNotReadyAddresses",
			sts:        withReadinessGate(newSet(3, ann(AnnotationDNSDomain, dnsDomain))),
			pods:       pods("O", "o", "n"),
			edit:       func(in *Input) { in.Service = headlessService(false); in.DNS = propagated("web-0", "web-1", "web-2") },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonDNSGateDeadlock,
		},
		{
			name:       "readiness gate without the DNS gate",
			sts:        withReadinessGate(newSet(3, nil)),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.Service = headlessService(true) },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonDNSGateDeadlock,
		},
		{
			name:       "readiness gate without the Service",
			sts:        withReadinessGate(newSet(3, ann(AnnotationDNSDomain, dnsDomain))),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.DNS = propagated("web-0", "web-1", "web-2") },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonDNSGateDeadlock,
		},
		{
			name:       "readiness gate with publishNotReadyAddresses",
			sts:        withReadinessGate(newSet(3, ann(AnnotationDNSDomain, dnsDomain))),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.Service = headlessService(true); in.DNS = propagated("web-0", "web-1", "web-2") },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
		},
		{
			name:       "readiness gate deadlock without a rollout is no rollout",
			sts:        withReadinessGate(newSet(3, ann(AnnotationDNSDomain, dnsDomain))),
			pods:       pods("n", "n", "n"),
			edit:       func(in *Input) { in.Service = headlessService(false); in.DNS = propagated("web-0", "web-1", "web-2") },
			wantPhase:  PhaseIdle,
			wantReason: ReasonDNSGateDeadlock,
		},

		// The progress deadline.
		{
			name:       "progress deadline exceeded",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "N"),
			edit:       func(in *Input) { in.Previous = rollingSince(11*time.Minute, 0) },
			wantPhase:  PhaseStalled,
			wantReason: ReasonProgressDeadlineExceeded,
			check: func(t *testing.T, p Plan) {
				if got := p.Status.LastProgressTime; got == nil || !got.Time.Equal(t0.Add(-11*time.Minute)) {
					t.Errorf("LastProgressTime = %v, want %v", got, t0.Add(-11*time.Minute))
				}
				if !p.Status.LastTransitionTime.Time.Equal(t0) {
					t.Errorf("LastTransitionTime = %v, want %v", p.Status.LastTransitionTime, t0)
				}
			},
		},
		{
			name:       "progress deadline not yet reached",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "N"),
			edit:       func(in *Input) { in.Previous = rollingSince(4*time.Minute, 0) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
			check: func(t *testing.T, p Plan) {
				if p.RequeueAfter != 6*time.Minute {
					t.Errorf("RequeueAfter = %v, want 6m", p.RequeueAfter)
				}
				if !p.Status.LastTransitionTime.Time.Equal(t0.Add(-4 * time.Minute)) {
					t.Errorf("LastTransitionTime = %v, want the previous one", p.Status.LastTransitionTime)
				}
			},
		},
		{
			name:       "custom progress deadline",
			sts:        newSet(3, ann(AnnotationProgressDeadlineSeconds, "60")),
			pods:       pods("o", "o", "N"),
			edit:       func(in *Input) { in.Previous = rollingSince(2*time.Minute, 0) },
			wantPhase:  PhaseStalled,
			wantReason: ReasonProgressDeadlineExceeded,
		},
		{
			name:       "progress resets the deadline",
			sts:        newSet(3, nil),
			pods:       pods("o", "o", "n"),
			edit:       func(in *Input) { in.Previous = rollingSince(11*time.Minute, 0) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-1")},
			check: func(t *testing.T, p Plan) {
				if got := p.Status.LastProgressTime; got == nil || !got.Time.Equal(t0) {
					t.Errorf("LastProgressTime = %v, want %v", got, t0)
				}
			},
		},
		{
			name: "stalled keeps its transition time",
			sts:  newSet(3, nil),
			pods: pods("o", "o", "N"),
			edit: func(in *Input) {
				in.Previous = rollingSince(20*time.Minute, 0)
				in.Previous.Phase, in.Previous.Reason = PhaseStalled, ReasonProgressDeadlineExceeded
				in.Previous.LastTransitionTime = metav1.NewTime(t0.Add(-5 * time.Minute))
			},
			wantPhase:  PhaseStalled,
			wantReason: ReasonProgressDeadlineExceeded,
			check: func(t *testing.T, p Plan) {
				if !p.Status.LastTransitionTime.Time.Equal(t0.Add(-5 * time.Minute)) {
					t.Errorf("LastTransitionTime = %v, want %v", p.Status.LastTransitionTime, t0.Add(-5*time.Minute))
				}
			},
		},
		{
			name:       "a stalled rollout still replaces what it may",
			sts:        newSet(3, ann(AnnotationMaxUnavailable, "2")),
			pods:       pods("o", "o", "N"),
			edit:       func(in *Input) { in.Previous = rollingSince(11*time.Minute, 0) },
			wantPhase:  PhaseStalled,
			wantReason: ReasonProgressDeadlineExceeded,
			want:       []deletion{evict("web-1")},
		},

		// Idle and Complete.
		{
			name:       "idle",
			sts:        newSet(3, nil),
			pods:       pods("n", "n", "n"),
			wantPhase:  PhaseIdle,
			wantReason: ReasonUpToDate,
		},
		{
			name:       "complete",
			sts:        newSet(3, nil),
			pods:       pods("n", "n", "n"),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 2) },
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			name: "complete stays complete",
			sts:  newSet(3, nil),
			pods: pods("n", "n", "n"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, UpdateRevision: newRev}
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			name: "a revision nobody rolled out is idle",
			sts:  newSet(3, nil),
			pods: pods("n", "n", "n"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, UpdateRevision: "web-older"}
			},
			wantPhase:  PhaseIdle,
			wantReason: ReasonUpToDate,
		},
		{
			name:       "updated pods not yet available",
			sts:        newSet(3, nil),
			pods:       pods("n", "n", "N"),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 2) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
		},
		{
			// kubernetes#... bug 4 of issue 9: the kept old pod crashing
			// after the target was reached is no rollout, so no Blocked,
			// no Stalled.
			name: "a pod kept by the partition crashing after the rollout",
			sts:  newSet(3, ann(AnnotationPartition, "1")),
			pods: pods("O", "n", "n"),
			edit: func(in *Input) {
				in.Previous = rollingSince(time.Hour, 2)
				in.Previous.Phase, in.Previous.Reason = PhaseRolling, ReasonWaitingForAvailability
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			// What turned such a StatefulSet Blocked, then Stalled: a guard
			// that only a rollout under way consults.
			name: "a pod kept by the partition crashing after the rollout, its DNS server unreachable",
			sts:  newSet(3, ann(AnnotationPartition, "1", AnnotationDNSDomain, "web.example.com")),
			pods: pods("O", "n", "n"),
			edit: func(in *Input) {
				in.Previous = rollingSince(time.Hour, 2)
				in.DNS = propagated("web-1", "web-2")
				in.DNS["web-0"] = DNSState{Unreachable: true, Message: "ns2: i/o timeout"}
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},
		{
			name: "a pod kept by the partition crashing after completion",
			sts:  newSet(3, ann(AnnotationPartition, "1")),
			pods: pods("O", "n", "n"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, UpdateRevision: newRev}
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonRolloutComplete,
		},

		// A StatefulSet being deleted: its pods may never come back.
		{
			name: "a StatefulSet being deleted gets no deletions",
			sts: func() *appsv1.StatefulSet {
				sts := newSet(3, ann(AnnotationMaxUnavailable, "3"))
				sts.DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-time.Second)))
				return sts
			}(),
			pods:       pods("O", "o", "o"),
			wantPhase:  PhaseBlocked,
			wantReason: ReasonStatefulSetDeleting,
		},
		{
			name: "a StatefulSet being deleted after its rollout stays complete",
			sts: func() *appsv1.StatefulSet {
				sts := newSet(3, nil)
				sts.DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-time.Second)))
				return sts
			}(),
			pods: pods("n", "n", "n"),
			edit: func(in *Input) {
				in.Previous = &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, UpdateRevision: newRev}
			},
			wantPhase:  PhaseComplete,
			wantReason: ReasonStatefulSetDeleting,
		},

		// Pods whose revision cannot be told are left alone.
		{
			name: "a pod without a revision label is never removed",
			sts:  newSet(3, ann(AnnotationMaxUnavailable, "3")),
			pods: func() []*corev1.Pod {
				ps := pods("o", "n", "o")
				delete(ps[2].Labels, appsv1.ControllerRevisionHashLabelKey)
				return ps
			}(),
			wantPhase:  PhaseRolling,
			wantReason: ReasonDeletingPods,
			want:       []deletion{evict("web-0")},
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, "web-2") {
					t.Errorf("message %q does not name the pod left alone", p.Status.Message)
				}
			},
		},
		{
			name: "only pods without a revision label left",
			sts:  newSet(3, nil),
			pods: func() []*corev1.Pod {
				ps := pods("n", "n", "o")
				delete(ps[2].Labels, appsv1.ControllerRevisionHashLabelKey)
				return ps
			}(),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 2) },
			wantPhase:  PhaseBlocked,
			wantReason: ReasonUnknownRevision,
		},

		// A pod stuck terminating is named, with what holds it.
		{
			name: "a pod stuck terminating on a finalizer",
			sts:  newSet(3, nil),
			pods: func() []*corev1.Pod {
				ps := pods("o", "o", "n")
				ps[1].Labels[appsv1.ControllerRevisionHashLabelKey] = newRev
				ps[1].DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-time.Hour)))
				ps[1].Finalizers = []string{"example.com/hold"}
				return ps
			}(),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 1) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(p.Status.Message, "web-1") || !strings.Contains(p.Status.Message, "example.com/hold") {
					t.Errorf("message %q does not name the stuck pod and its finalizer", p.Status.Message)
				}
			},
		},
		{
			name: "a pod terminating within its grace period is not stuck",
			sts:  newSet(3, nil),
			pods: func() []*corev1.Pod {
				ps := pods("o", "o", "n")
				ps[1].DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(10 * time.Second)))
				ps[1].Finalizers = []string{"example.com/hold"}
				return ps
			}(),
			edit:       func(in *Input) { in.Previous = rollingSince(time.Minute, 1) },
			wantPhase:  PhaseRolling,
			wantReason: ReasonWaitingForAvailability,
			check: func(t *testing.T, p Plan) {
				if strings.Contains(p.Status.Message, "stuck") {
					t.Errorf("message %q calls a pod in its grace period stuck", p.Status.Message)
				}
				if p.RequeueAfter != 10*time.Second+stuckAfter {
					t.Errorf("requeue after %s, want when the pod would turn stuck", p.RequeueAfter)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, tc.sts, tc.pods)
			if tc.edit != nil {
				tc.edit(&in)
			}
			p := Compute(in)
			if p.Status.Phase != tc.wantPhase || p.Status.Reason != tc.wantReason {
				t.Errorf("phase %s, reason %s; want %s, %s (message %q)",
					p.Status.Phase, p.Status.Reason, tc.wantPhase, tc.wantReason, p.Status.Message)
			}
			if diff := cmp.Diff(tc.want, deletionsOf(p)); diff != "" {
				t.Errorf("deletions (-want +got):\n%s", diff)
			}
			if p.Status.Message == "" {
				t.Errorf("status has no message")
			}
			for _, d := range p.Deletions {
				if d.Message == "" {
					t.Errorf("deletion of %s has no message", d.Pod.Name)
				}
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}

// The status is written only when it changes (Status.SameAs), and each write
// wakes the controller again: a status that says something new at every plan
// would be written in a loop.
func TestComputeStatusIsStableWhileNothingChanges(t *testing.T) {
	tests := []struct {
		name string
		pods []*corev1.Pod
		prev *Status
	}{
		{"rolling", pods("o", "o", "N"), rollingSince(time.Minute, 0)},
		{"stalled", pods("o", "o", "N"), rollingSince(20*time.Minute, 0)},
		{"complete", pods("n", "n", "n"), rollingSince(time.Minute, 2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, newSet(3, nil), tc.pods)
			in.Previous = tc.prev
			first := Compute(in).Status
			for _, later := range []time.Duration{time.Second, 3 * time.Second, time.Minute} {
				in.Previous = &first
				in.Now = t0.Add(later)
				next := Compute(in).Status
				if !next.SameAs(&first) {
					t.Errorf("%v later the status changed with nothing else:\n%s\n%s", later, first.Encode(), next.Encode())
				}
			}
		})
	}
}

func TestEvents(t *testing.T) {
	rolling := &Status{Phase: PhaseRolling, Reason: ReasonDeletingPods, UpdateRevision: newRev, Replicas: 3}
	tests := []struct {
		name       string
		prev, next *Status
		want       []Event
	}{
		{
			name: "rollout starts",
			prev: &Status{Phase: PhaseIdle, Reason: ReasonUpToDate, UpdateRevision: oldRev},
			next: rolling,
			want: []Event{{corev1.EventTypeNormal, ReasonRolloutStarted, "Rolling out revision web-new to 3 pods"}},
		},
		{
			name: "rollout starts with no previous status",
			prev: nil,
			next: rolling,
			want: []Event{{corev1.EventTypeNormal, ReasonRolloutStarted, "Rolling out revision web-new to 3 pods"}},
		},
		{
			name: "rollout started once",
			prev: rolling,
			next: &Status{Phase: PhaseRolling, Reason: ReasonWaitingForAvailability, UpdateRevision: newRev, Replicas: 3},
		},
		{
			name: "a new revision during a rollout starts another",
			prev: &Status{Phase: PhaseRolling, Reason: ReasonDeletingPods, UpdateRevision: oldRev, Replicas: 3},
			next: rolling,
			want: []Event{{corev1.EventTypeNormal, ReasonRolloutStarted, "Rolling out revision web-new to 3 pods"}},
		},
		{
			name: "blocked by a PDB is a warning",
			prev: rolling,
			next: &Status{Phase: PhaseBlocked, Reason: ReasonBlockedByPDB, Message: "no more", UpdateRevision: newRev},
			want: []Event{{corev1.EventTypeWarning, ReasonBlockedByPDB, "no more"}},
		},
		{
			name: "same reason, no duplicate",
			prev: &Status{Phase: PhaseBlocked, Reason: ReasonBlockedByPDB, Message: "web-2", UpdateRevision: newRev},
			next: &Status{Phase: PhaseBlocked, Reason: ReasonBlockedByPDB, Message: "web-1", UpdateRevision: newRev},
		},
		{
			name: "stalled is a warning, once",
			prev: rolling,
			next: &Status{Phase: PhaseStalled, Reason: ReasonProgressDeadlineExceeded, Message: "stalled", UpdateRevision: newRev},
			want: []Event{{corev1.EventTypeWarning, ReasonProgressDeadlineExceeded, "stalled"}},
		},
		{
			name: "stalled, still",
			prev: &Status{Phase: PhaseStalled, Reason: ReasonProgressDeadlineExceeded, UpdateRevision: newRev},
			next: &Status{Phase: PhaseStalled, Reason: ReasonProgressDeadlineExceeded, UpdateRevision: newRev},
		},
		{
			name: "not OnDelete is a warning",
			prev: nil,
			next: &Status{Phase: PhaseInvalid, Reason: ReasonNotOnDelete, Message: "RollingUpdate"},
			want: []Event{{corev1.EventTypeWarning, ReasonNotOnDelete, "RollingUpdate"}},
		},
		{
			name: "invalid config is a warning",
			prev: &Status{Phase: PhaseIdle, Reason: ReasonUpToDate},
			next: &Status{Phase: PhaseInvalid, Reason: ReasonInvalidConfig, Message: "annotation"},
			want: []Event{{corev1.EventTypeWarning, ReasonInvalidConfig, "annotation"}},
		},
		{
			name: "DNS gate deadlock is a warning",
			prev: &Status{Phase: PhaseIdle, Reason: ReasonUpToDate},
			next: &Status{Phase: PhaseIdle, Reason: ReasonDNSGateDeadlock, Message: "deadlock"},
			want: []Event{{corev1.EventTypeWarning, ReasonDNSGateDeadlock, "deadlock"}},
		},
		{
			name: "paused is normal",
			prev: rolling,
			next: &Status{Phase: PhasePaused, Reason: ReasonPaused, Message: "paused", UpdateRevision: newRev},
			want: []Event{{corev1.EventTypeNormal, ReasonPaused, "paused"}},
		},
		{
			name: "complete is normal",
			prev: rolling,
			next: &Status{Phase: PhaseComplete, Reason: ReasonRolloutComplete, Message: "done", UpdateRevision: newRev},
			want: []Event{{corev1.EventTypeNormal, ReasonRolloutComplete, "done"}},
		},
		{
			name: "deleting pods is quiet",
			prev: &Status{Phase: PhaseRolling, Reason: ReasonWaitingForAvailability, UpdateRevision: newRev},
			next: rolling,
		},
		{
			name: "up to date is quiet",
			prev: nil,
			next: &Status{Phase: PhaseIdle, Reason: ReasonUpToDate},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Events(tc.prev, tc.next)); diff != "" {
				t.Errorf("Events (-want +got):\n%s", diff)
			}
		})
	}
}

// Every warning reason is reported as a Warning, and a reason is never both
// loud and quiet.
func TestReasonsAreWarningsOrQuiet(t *testing.T) {
	for r := range warningReasons {
		if quietReasons[r] {
			t.Errorf("reason %s is both a warning and quiet", r)
		}
		got := Events(nil, &Status{Phase: PhaseInvalid, Reason: r})
		if len(got) != 1 || got[0].Type != corev1.EventTypeWarning {
			t.Errorf("Events for %s = %v, want one Warning", r, got)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	st := Compute(func() Input {
		in := input(t, newSet(3, ann(AnnotationDNSDomain, "web.example.com")), pods("o", "o", "n"))
		in.DNS = propagated("web-0", "web-1")
		return in
	}()).Status
	got := ParseStatus(map[string]string{AnnotationStatus: st.Encode()})
	if got == nil || !got.SameAs(&st) {
		t.Fatalf("ParseStatus(Encode()) = %+v, want %+v", got, st)
	}
	if ParseStatus(map[string]string{AnnotationStatus: "{"}) != nil || ParseStatus(nil) != nil {
		t.Errorf("ParseStatus of a missing or broken annotation is not nil")
	}
}

func TestOrdinal(t *testing.T) {
	sts := newSet(3, nil)
	tests := []struct {
		name string
		want int
		ok   bool
	}{
		{"web-0", 0, true},
		{"web-12", 12, true},
		{"web-1000", 1000, true},
		{"web-", 0, false},
		{"web-01", 0, false},
		{"web-+1", 0, false},
		{"web--1", 0, false},
		{"web-1a", 0, false},
		{"web-1-2", 0, false},
		{"webx-1", 0, false},
		{"db-1", 0, false},
		{"web-99999999999999999999", 0, false},
	}
	for _, tc := range tests {
		got, ok := Ordinal(sts, newPod(0, oldRev, func(p *corev1.Pod) { p.Name = tc.name }))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Ordinal(%s) = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// A StatefulSet may ask for any number of replicas: the plan grows with the
// pods that exist, not with spec.replicas, so a huge replicas count with no
// pods plans in bounded memory and time.
func TestComputeHugeReplicas(t *testing.T) {
	for _, n := range []int32{1 << 20, math.MaxInt32} {
		sts := newSet(n, ann(AnnotationMaxUnavailable, "25%"))
		in := input(t, sts, pods("o", "O", "n"))
		in.Previous = rollingSince(time.Minute, 1)
		var plan Plan
		allocs := testing.AllocsPerRun(3, func() { plan = Compute(in) })
		if plan.Status.Replicas != n || plan.Status.Phase != PhaseRolling {
			t.Errorf("replicas %d: status %+v", n, plan.Status)
		}
		// Three pods exist; every other ordinal is missing, so the
		// replacements in flight (missing pods) use up max-unavailable and
		// nothing is removed.
		if len(plan.Deletions) != 0 {
			t.Errorf("replicas %d: deletions %v", n, deletionsOf(plan))
		}
		if allocs > 100 {
			t.Errorf("replicas %d: %.0f allocations a plan; it must not grow with replicas", n, allocs)
		}
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Compute(in)
			}
		})
		if bytes := res.AllocedBytesPerOp(); bytes > 64<<10 {
			t.Errorf("replicas %d: %d bytes a plan; it must not grow with replicas", n, bytes)
		}
	}
}

// The status annotation must stay small whatever the size: 5,000 pods
// waiting for DNS are counted, and only the first few named.
func TestStatusStaysSmall(t *testing.T) {
	const n = 5000
	sts := newSet(n, ann(AnnotationDNSDomain, "web.example.com", AnnotationMaxUnavailable, "100%"))
	var ps []*corev1.Pod
	in := input(t, sts, nil)
	in.DNS = map[string]DNSState{}
	for o := range n {
		p := newPod(o, newRev)
		ps = append(ps, p)
		in.DNS[p.Name] = DNSState{Message: strings.Repeat("ns1.example.com: answered 10.0.0.1, not the pod's IP; ", 20)}
	}
	in.Pods = ps
	in.Previous = rollingSince(time.Minute, 0)
	plan := Compute(in)
	if plan.Status.Reason != ReasonWaitingForDNS || plan.Status.WaitingForDNSCount != n {
		t.Fatalf("reason %s, %d waiting for DNS; want %s, %d", plan.Status.Reason, plan.Status.WaitingForDNSCount, ReasonWaitingForDNS, n)
	}
	if got := len(plan.Status.Encode()); got > 4<<10 {
		t.Errorf("status of %d bytes, want at most 4 KiB", got)
	}
	if len(plan.Status.WaitingForDNS) != maxListed {
		t.Errorf("%d pods named, want %d", len(plan.Status.WaitingForDNS), maxListed)
	}
}

// Messages go into the status annotation and into events: however many pods
// a StatefulSet has, they name only a few.
func TestComputeMessagesStaySmall(t *testing.T) {
	const n = 3000
	var ps []*corev1.Pod
	for o := range n {
		ps = append(ps, newPod(o, oldRev))
	}
	tests := []struct {
		name   string
		edit   func(*Input)
		reason string
	}{
		{"blocked by a budget", func(in *Input) {
			in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "web"})
		}, ReasonBlockedByPDB},
		{"two budgets over every pod", func(in *Input) {
			in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "a", Allowed: 1})
			for _, p := range in.Pods {
				in.Budgets[p.Name] = append(in.Budgets[p.Name], pdb.Budget{Name: "b", Allowed: 1})
			}
		}, ReasonMultiplePDBs},
		{"deleting many", func(in *Input) {
			in.Config.MaxUnavailable = n
		}, ReasonDeletingPods},
		{"DNS servers unreachable", func(in *Input) {
			in.Config.DNSDomain = "web.example.com"
			in.DNS = map[string]DNSState{}
			for _, p := range in.Pods {
				in.DNS[p.Name] = DNSState{Unreachable: true, Message: "ns1.example.com: i/o timeout"}
			}
		}, ReasonDNSUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := input(t, newSet(n, nil), ps)
			tc.edit(&in)
			p := Compute(in)
			if p.Status.Reason != tc.reason {
				t.Fatalf("reason %s, want %s", p.Status.Reason, tc.reason)
			}
			if len(p.Status.Message) > 2000 {
				t.Errorf("message of %d bytes: %.200s...", len(p.Status.Message), p.Status.Message)
			}
			if !strings.Contains(p.Status.Message, "more") {
				t.Errorf("message %q does not say how many more", p.Status.Message)
			}
		})
	}
}
