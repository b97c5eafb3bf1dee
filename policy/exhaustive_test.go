package policy

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/pdb"
)

// The exhaustive exploration (issue 16, item 4's moonshot): for a 3-pod
// StatefulSet, every interleaving of the cluster's events and the planner's
// rounds up to a depth, with states deduplicated, checked against the
// invariants after every plan. Where the simulation draws a few thousand
// random runs, this visits every reachable state of a small model.

// xPod is one pod of the model; a zero value is a missing pod.
type xPod struct {
	present     bool
	updated     bool // at the update revision it was created for
	rev         string
	ready       bool
	terminating bool
	// unobserved: removed by the planner, the informer does not show it yet.
	unobserved bool
	leader     bool
	gen        int // incarnation, for the UID
}

// xState is the model's whole state; comparable, so it dedupes as a map key.
type xState struct {
	pods       [3]xPod
	updateRev  string
	reverted   bool
	paused     bool
	pdbAllowed int32 // the budget's status as stored (it lags until refreshed)
	crashes    int
	// phase, reason and prevRev are the status the last plan wrote.
	phase   Phase
	reason  string
	prevRev string
}

type xConfig struct {
	maxUnavailable  int
	pdbMinAvailable int // < 0: no budget
}

func (c xConfig) String() string {
	return fmt.Sprintf("max-unavailable=%d pdbMinAvailable=%d", c.maxUnavailable, c.pdbMinAvailable)
}

func (s xState) healthy() int32 {
	n := int32(0)
	for _, p := range s.pods {
		if p.present && p.ready && !p.terminating {
			n++
		}
	}
	return n
}

func (s xState) describe() string {
	var b strings.Builder
	for _, p := range s.pods {
		c := "-"
		switch {
		case !p.present:
		case p.terminating:
			c = "t"
		case p.rev == s.updateRev && p.ready:
			c = "n"
		case p.rev == s.updateRev:
			c = "N"
		case p.ready:
			c = "o"
		default:
			c = "O"
		}
		if p.leader {
			c += "*"
		}
		if p.unobserved {
			c += "?"
		}
		b.WriteString(c + " ")
	}
	fmt.Fprintf(&b, "rev=%s paused=%v pdb=%d", s.updateRev, s.paused, s.pdbAllowed)
	return b.String()
}

// input is the planner's view of s.
func (s xState) input(cfg xConfig, now time.Time) Input {
	a := map[string]string{AnnotationMaxUnavailable: strconv.Itoa(cfg.maxUnavailable)}
	if s.paused {
		a[AnnotationPaused] = "true"
	}
	sts := newSet(3, a)
	sts.Status.UpdateRevision = s.updateRev
	c, err := ParseConfig(sts)
	in := Input{StatefulSet: sts, Config: c, ConfigError: err, Service: headlessService(true), Now: now}
	if s.phase != "" {
		in.Previous = &Status{Phase: s.phase, Reason: s.reason, UpdateRevision: s.prevRev}
	}
	for o, p := range s.pods {
		if !p.present {
			continue
		}
		uid := types.UID(fmt.Sprintf("%d-%d", o, p.gen))
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + strconv.Itoa(o), Namespace: "ns", UID: uid,
				Labels: map[string]string{"app": "web", "controller-revision-hash": p.rev}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.0.%d.%d", o, p.gen),
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse,
					LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour))}}},
		}
		if p.ready {
			pod.Status.Conditions[0].Status = corev1.ConditionTrue
		}
		if p.leader {
			pod.Labels["stsroller.io/role"] = "leader"
		}
		switch {
		case p.unobserved:
			if in.Removing == nil {
				in.Removing = map[types.UID]Method{}
			}
			in.Removing[uid] = MethodEvict
		case p.terminating:
			pod.DeletionTimestamp = ptr.To(metav1.NewTime(now))
		}
		in.Pods = append(in.Pods, pod)
	}
	if cfg.pdbMinAvailable >= 0 {
		b := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Generation: 1},
			Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt(cfg.pdbMinAvailable)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
			Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: s.pdbAllowed},
		}
		for o, p := range s.pods {
			if p.present && p.unobserved {
				// Evicted, not yet seen: the budget's status counts it.
				if b.Status.DisruptedPods == nil {
					b.Status.DisruptedPods = map[string]metav1.Time{}
				}
				b.Status.DisruptedPods["web-"+strconv.Itoa(o)] = metav1.NewTime(now)
			}
		}
		in.Budgets, in.BudgetError = pdb.ForPods([]*policyv1.PodDisruptionBudget{b}, in.Pods)
	}
	return in
}

// check verifies one plan against the model, by the model's own counting.
func (s xState) check(cfg xConfig, plan Plan) []string {
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	if s.paused && len(plan.Deletions) > 0 {
		fail("%d removals while paused", len(plan.Deletions))
	}
	unavailable, inFlight := 0, 0
	var otherOutdated []int
	for o, p := range s.pods {
		gone := !p.present || p.terminating || p.unobserved
		if gone || !p.ready {
			unavailable++
		}
		if gone || p.rev == s.updateRev && !p.ready {
			inFlight++
		}
		if !gone && p.rev != s.updateRev && !p.leader {
			otherOutdated = append(otherOutdated, o)
		}
	}
	evicted, deleted := 0, 0
	for _, d := range plan.Deletions {
		o, err := strconv.Atoi(strings.TrimPrefix(d.Pod.Name, "web-"))
		if err != nil || o < 0 || o > 2 || !s.pods[o].present {
			fail("removal of %s, which does not exist", d.Pod.Name)
			continue
		}
		p := s.pods[o]
		switch {
		case p.terminating || p.unobserved:
			fail("%s removed again, on its way out already", d.Pod.Name)
		case p.rev == s.updateRev:
			fail("%s removed at the update revision %s", d.Pod.Name, s.updateRev)
		case d.Pod.UID != types.UID(fmt.Sprintf("%d-%d", o, p.gen)):
			fail("%s removed with another incarnation's UID", d.Pod.Name)
		}
		switch d.Method {
		case MethodDelete:
			if p.ready {
				fail("%s is Ready but deleted without eviction", d.Pod.Name)
			}
			deleted++
		case MethodEvict:
			if !p.ready {
				fail("%s is not Ready but evicted", d.Pod.Name)
			}
			if p.leader && (len(otherOutdated) > 0 || inFlight > 0 || len(plan.Deletions) > 1) {
				fail("leader %s evicted with other outdated pods %v, %d in flight, in a plan of %d", d.Pod.Name, otherOutdated, inFlight, len(plan.Deletions))
			}
			evicted++
		default:
			fail("%s: method %s without the drain handshake", d.Pod.Name, d.Method)
		}
	}
	if evicted > 0 && unavailable+evicted > cfg.maxUnavailable {
		fail("evicted %d with %d unavailable; max-unavailable %d", evicted, unavailable, cfg.maxUnavailable)
	}
	if deleted > 0 && inFlight+deleted > cfg.maxUnavailable {
		fail("deleted %d unhealthy with %d replacements in flight; max-unavailable %d", deleted, inFlight, cfg.maxUnavailable)
	}
	if cfg.pdbMinAvailable >= 0 && evicted > int(s.pdbAllowed) {
		fail("evicted %d, the budget allows %d", evicted, s.pdbAllowed)
	}
	return errs
}

// xEvent is one transition of the model.
type xEvent struct {
	name string
	next func(xState) (xState, bool)
}

// events lists every transition; the planner's round is one of them.
func xEvents(cfg xConfig) []xEvent {
	var evs []xEvent
	for o := range 3 {
		pod := func(f func(*xPod, *xState) bool) func(xState) (xState, bool) {
			return func(s xState) (xState, bool) {
				ok := f(&s.pods[o], &s)
				return s, ok
			}
		}
		evs = append(evs,
			xEvent{fmt.Sprintf("ready %d", o), pod(func(p *xPod, _ *xState) bool {
				if !p.present || p.ready || p.terminating {
					return false
				}
				p.ready = true
				return true
			})},
			xEvent{fmt.Sprintf("crash %d", o), pod(func(p *xPod, s *xState) bool {
				if !p.present || !p.ready || p.terminating || s.crashes >= 2 {
					return false
				}
				p.ready, s.crashes = false, s.crashes+1
				return true
			})},
			xEvent{fmt.Sprintf("observe %d", o), pod(func(p *xPod, _ *xState) bool {
				if !p.unobserved {
					return false
				}
				p.unobserved = false
				return true
			})},
			xEvent{fmt.Sprintf("gone %d", o), pod(func(p *xPod, _ *xState) bool {
				if !p.present || !p.terminating || p.unobserved {
					return false
				}
				*p = xPod{gen: p.gen}
				return true
			})},
			xEvent{fmt.Sprintf("create %d", o), pod(func(p *xPod, s *xState) bool {
				if p.present {
					return false
				}
				*p = xPod{present: true, rev: s.updateRev, gen: p.gen + 1}
				return true
			})},
			xEvent{fmt.Sprintf("leader %d", o), pod(func(p *xPod, s *xState) bool {
				if !p.present || p.leader {
					return false
				}
				for i := range s.pods {
					s.pods[i].leader = false
				}
				p.leader = true
				return true
			})},
		)
	}
	evs = append(evs,
		xEvent{"pause/resume", func(s xState) (xState, bool) { s.paused = !s.paused; return s, true }},
		xEvent{"revert", func(s xState) (xState, bool) {
			if s.reverted {
				return s, false
			}
			s.updateRev, s.reverted = oldRev, true
			return s, true
		}},
		xEvent{"budget refresh", func(s xState) (xState, bool) {
			if cfg.pdbMinAvailable < 0 {
				return s, false
			}
			n := max(0, s.healthy()-int32(cfg.pdbMinAvailable))
			if n == s.pdbAllowed {
				return s, false
			}
			s.pdbAllowed = n
			return s, true
		}},
	)
	return evs
}

// plan runs the planner on s, checks it, and applies it as the API server
// would (an eviction spends the budget's stored headroom, or is refused).
func (s xState) plan(cfg xConfig, now time.Time) (xState, Plan, []string) {
	p := Compute(s.input(cfg, now))
	errs := s.check(cfg, p)
	for _, d := range p.Deletions {
		o, err := strconv.Atoi(strings.TrimPrefix(d.Pod.Name, "web-"))
		if err != nil || o < 0 || o > 2 {
			continue
		}
		pod := &s.pods[o]
		if !pod.present || pod.terminating {
			continue
		}
		if d.Method == MethodEvict && cfg.pdbMinAvailable >= 0 {
			if s.pdbAllowed <= 0 {
				continue // 429
			}
			s.pdbAllowed--
		}
		pod.terminating, pod.unobserved = true, true
	}
	s.phase, s.reason, s.prevRev = p.Status.Phase, p.Status.Reason, p.Status.UpdateRevision
	return s, p, errs
}

// TestExhaustiveSmallRollouts explores, for 3 pods at the old revision with
// the leader on one of them, every sequence of up to depth events (pods
// turning Ready, crashing at most twice, terminating pods going, missing
// ones recreated at the update revision, removals observed late, leadership
// moving, pause and resume, one revert, the budget's status refreshed late)
// and planner rounds, deduplicating states, and checks the invariants after
// every plan.
func TestExhaustiveSmallRollouts(t *testing.T) {
	depth := 12
	if testing.Short() {
		depth = 9
	}
	for _, cfg := range []xConfig{{1, -1}, {2, -1}, {2, 2}, {3, 1}} {
		t.Run(cfg.String(), func(t *testing.T) {
			start := xState{updateRev: newRev}
			for o := range start.pods {
				start.pods[o] = xPod{present: true, rev: oldRev, ready: true}
			}
			start.pods[1].leader = true
			if cfg.pdbMinAvailable >= 0 {
				start.pdbAllowed = max(0, start.healthy()-int32(cfg.pdbMinAvailable))
			}
			evs := xEvents(cfg)
			type item struct {
				s     xState
				trace []string
			}
			seen := map[xState]int{start: 0}
			frontier := []item{{start, nil}}
			plans := 0
			for d := 0; d < depth && len(frontier) > 0; d++ {
				var next []item
				now := t0.Add(time.Duration(d) * time.Second)
				add := func(s xState, it item, what string) {
					if _, ok := seen[s]; ok {
						return
					}
					seen[s] = d + 1
					next = append(next, item{s, append(append([]string(nil), it.trace...), what)})
				}
				for _, it := range frontier {
					s, p, errs := it.s.plan(cfg, now)
					plans++
					if len(errs) > 0 {
						t.Fatalf("%s: after %v, in [%s] the plan %v broke an invariant:\n  %s",
							cfg, it.trace, it.s.describe(), deletionNames(p), strings.Join(errs, "\n  "))
					}
					add(s, it, fmt.Sprintf("plan%v", deletionNames(p)))
					for _, e := range evs {
						if s2, ok := e.next(it.s); ok {
							add(s2, it, e.name)
						}
					}
				}
				frontier = next
			}
			t.Logf("%s: %d states to depth %d, %d plans checked", cfg, len(seen), depth, plans)
			if plans < 1000 {
				t.Errorf("only %d plans checked: the exploration is not exploring", plans)
			}
		})
	}
}

func deletionNames(p Plan) []string {
	var out []string
	for _, d := range p.Deletions {
		out = append(out, d.Pod.Name+":"+string(d.Method))
	}
	return out
}
