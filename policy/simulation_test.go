package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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

// The simulation runs whole rollouts against a small model of a cluster: the
// StatefulSet controller recreating deleted pods at the update revision, pods
// turning Ready (or never, for a broken revision), the disruption controller
// keeping a PodDisruptionBudget's status, the eviction API enforcing it,
// external-dns publishing new pods, pods crashing and the leader moving. After
// every step it checks the planner's invariants (see check).

const simStep = 5 * time.Second

// simConfig is one simulated rollout.
type simConfig struct {
	replicas        int
	maxUnavailable  string // the annotation's value
	partition       int
	minReadySeconds int32
	// dns turns the DNS gate on; readinessGate also puts its condition in
	// the pod template, so pods turn Ready only once their name resolves.
	dns, readinessGate bool
	// pdbMinAvailable is the budget's minAvailable; < 0 for no budget.
	pdbMinAvailable int
	// pdbLag: the disruption controller's status is one step behind.
	pdbLag bool
	// broken: pods of the new revision never turn Ready.
	broken bool
	// chaosSteps: for so many steps pods crash, the budget goes stale,
	// deletions are not yet observed and DNS servers cannot be asked.
	chaosSteps int
	// rollbackAt: at this step the template is reverted (updateRevision back
	// to the old one); 0 for never.
	rollbackAt int
	// revisionEvery: during the chaos a new revision is pushed every so many
	// steps, mid-rollout or not; 0 for never.
	revisionEvery   int
	deadlineSeconds int
	// drainTimeout turns the drain handshake on (seconds; 0: off). Pods
	// asked answer within a few steps, or, one in four, never.
	drainTimeout int
	// interrupts: during the chaos the rollout is paused and resumed, and
	// its partition raised and lowered, now and then.
	interrupts bool
	// resize: during the chaos spec.replicas changes now and then, from 0
	// to twice its size; the StatefulSet controller creates the new
	// ordinals at the update revision and deletes those beyond the range.
	resize bool
}

func (c simConfig) String() string {
	return fmt.Sprintf("replicas=%d max-unavailable=%s partition=%d minReadySeconds=%d dns=%v readinessGate=%v pdbMinAvailable=%d pdbLag=%v broken=%v chaos=%d rollbackAt=%d revisionEvery=%d deadline=%ds drainTimeout=%ds interrupts=%v resize=%v",
		c.replicas, c.maxUnavailable, c.partition, c.minReadySeconds, c.dns, c.readinessGate, c.pdbMinAvailable, c.pdbLag, c.broken, c.chaosSteps, c.rollbackAt, c.revisionEvery, c.deadlineSeconds, c.drainTimeout, c.interrupts, c.resize)
}

// resolvedMaxUnavailable is max-unavailable as DESIGN.md defines it, for
// spec.replicas as it is now, computed apart from the code under test.
func (s *sim) resolvedMaxUnavailable() int {
	if p, ok := strings.CutSuffix(s.cfg.maxUnavailable, "%"); ok {
		n, _ := strconv.Atoi(p)
		return max(1, s.replicas*n/100)
	}
	n, _ := strconv.Atoi(s.cfg.maxUnavailable)
	return n
}

func (c simConfig) target() int { return max(c.replicas-c.partition, 0) }

func randomSimConfig(rng *rand.Rand) simConfig {
	n := 1 + rng.IntN(30)
	c := simConfig{
		replicas:        n,
		maxUnavailable:  strconv.Itoa(1 + rng.IntN(5)),
		minReadySeconds: []int32{0, 0, 5, 15}[rng.IntN(4)],
		pdbMinAvailable: -1,
		pdbLag:          rng.IntN(2) == 0,
		deadlineSeconds: 600,
	}
	if rng.IntN(3) == 0 {
		c.maxUnavailable = []string{"1%", "10%", "25%", "33%", "50%", "100%"}[rng.IntN(6)]
	}
	if rng.IntN(2) == 0 {
		c.partition = rng.IntN(n + 2)
	}
	if rng.IntN(3) == 0 {
		c.dns = true
		c.readinessGate = rng.IntN(2) == 0
	}
	if rng.IntN(2) == 0 {
		c.pdbMinAvailable = rng.IntN(n)
	}
	switch rng.IntN(5) {
	case 0:
		c.broken = true
		c.deadlineSeconds = 60
		if rng.IntN(2) == 0 {
			c.rollbackAt = 30 + rng.IntN(20)
			c.partition = 0
		}
	default:
		c.chaosSteps = 20 * rng.IntN(3)
		if c.chaosSteps > 0 && rng.IntN(2) == 0 {
			c.revisionEvery = 5 + rng.IntN(15)
		}
	}
	// Drawn last, so the shapes drawn before the handshake existed stay.
	if rng.IntN(3) == 0 {
		c.drainTimeout = 5 * (1 + rng.IntN(6))
	}
	c.interrupts = c.chaosSteps > 0 && rng.IntN(2) == 0
	c.resize = c.chaosSteps > 0 && rng.IntN(2) == 0
	return c
}

// unobservedRemoval is a removal the planner's informers do not show yet.
type unobservedRemoval struct {
	pod    string
	method Method
}

// simPod is one pod of the model.
type simPod struct {
	name       string
	uid        types.UID
	rev        string
	ready      bool
	readySince time.Time
	readyIn    int // steps until the containers are ready; < 0: never
	crashedFor int // steps it stays crashed
	// terminating > 0: deleted, gone after so many steps.
	terminating int
	propagated  bool
	propagateIn int
	leader      bool
	// drainRequested is when stsroller asked the pod to drain (zero: not
	// asked); drainAnswerIn the steps until its sidecar answers (< 0: never).
	drainRequested time.Time
	drainAnswerIn  int
	// drainRev is the revision the request was made for; answeredAt when
	// drainComplete was set (a sidecar may answer before any request).
	drainRev      string
	answeredAt    time.Time
	drainComplete bool
}

type sim struct {
	cfg       simConfig
	rng       *rand.Rand
	step      int
	now       time.Time
	updateRev string
	// generation and observed model the StatefulSet controller catching up
	// with a template change.
	generation, observed int64
	pods                 []*simPod // by ordinal; nil: missing
	// replicas is spec.replicas as it is now (resize changes it during the
	// chaos); pods holds room for twice cfg.replicas then.
	replicas   int
	missingFor []int
	uids       int
	// pdbAllowed is the budget's status.disruptionsAllowed as stored: what
	// the planner reads and the eviction API spends. pdbNext is the
	// disruption controller's next value when it lags.
	pdbAllowed, pdbNext int32
	pdbStale            bool
	// unobserved are this step's removals the planner's informer does not
	// show yet (by pod name, with how), and pdbUncounted says whether the
	// budget's status it reads predates those evictions too.
	unobserved   map[types.UID]unobservedRemoval
	pdbUncounted bool
	// paused and partition are the annotations as they are now (the
	// interrupts change them during the chaos).
	paused      bool
	partition   int
	unreachable string
	prev        *Status
	log         []string
	// groupRole is what its rollout group allows it this step; empty alone.
	groupRole GroupRole
	// errs collects invariant violations; the run stops at the first step
	// with one.
	errs []string
}

func newSim(cfg simConfig, seed uint64) *sim {
	capacity := cfg.replicas
	if cfg.resize {
		capacity = 2*cfg.replicas + 1
	}
	s := &sim{
		cfg:        cfg,
		rng:        rand.New(rand.NewPCG(seed, 0x5747)),
		now:        t0,
		updateRev:  newRev,
		generation: 1,
		observed:   1,
		pods:       make([]*simPod, capacity),
		missingFor: make([]int, capacity),
		replicas:   cfg.replicas,
		partition:  cfg.partition,
	}
	for o := range cfg.replicas {
		s.pods[o] = &simPod{
			name:       "web-" + strconv.Itoa(o),
			uid:        s.uid(),
			rev:        oldRev,
			ready:      true,
			readySince: t0.Add(-time.Hour),
			propagated: true,
		}
	}
	s.pdbAllowed = s.disruptionsAllowed()
	s.pdbNext = s.pdbAllowed
	return s
}

func (s *sim) uid() types.UID {
	s.uids++
	return types.UID(strconv.Itoa(s.uids))
}

// available is the model's own answer to DESIGN.md's "available": Ready for
// minReadySeconds, not terminating, and with the DNS gate its name resolves.
func (s *sim) available(p *simPod) bool {
	if p == nil || p.terminating > 0 || !p.ready {
		return false
	}
	// An unreachable server never counts as propagated.
	if s.cfg.dns && (!p.propagated || p.name == s.unreachable) {
		return false
	}
	return s.now.Sub(p.readySince) >= time.Duration(s.cfg.minReadySeconds)*time.Second
}

func (s *sim) input() Input {
	a := map[string]string{
		AnnotationMaxUnavailable:          s.cfg.maxUnavailable,
		AnnotationPartition:               strconv.Itoa(s.partition),
		AnnotationProgressDeadlineSeconds: strconv.Itoa(s.cfg.deadlineSeconds),
	}
	if s.cfg.dns {
		a[AnnotationDNSDomain] = "web.example.com"
	}
	if s.cfg.drainTimeout > 0 {
		a[AnnotationDrainTimeoutSeconds] = strconv.Itoa(s.cfg.drainTimeout)
	}
	if s.paused {
		a[AnnotationPaused] = "true"
	}
	sts := newSet(int32(s.replicas), a)
	sts.Generation = s.generation
	sts.Status.ObservedGeneration = s.observed
	sts.Status.UpdateRevision = s.updateRev
	sts.Spec.MinReadySeconds = s.cfg.minReadySeconds
	if s.cfg.readinessGate {
		withReadinessGate(sts)
	}
	cfg, err := ParseConfig(sts)
	in := Input{
		StatefulSet: sts,
		Config:      cfg,
		ConfigError: err,
		Service:     headlessService(true),
		Previous:    s.prev,
		Now:         s.now,
	}
	for o, p := range s.pods {
		if p == nil {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name:      p.name,
				Namespace: "ns",
				UID:       p.uid,
				Labels:    map[string]string{"app": "web", "controller-revision-hash": p.rev},
			},
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning,
				PodIP: fmt.Sprintf("10.0.%d.%s", o, p.uid),
				Conditions: []corev1.PodCondition{{
					Type:               corev1.PodReady,
					Status:             corev1.ConditionFalse,
					LastTransitionTime: metav1.NewTime(p.readySince),
				}},
			},
		}
		if p.ready {
			pod.Status.Conditions[0].Status = corev1.ConditionTrue
		}
		if p.leader {
			pod.Labels["stsroller.io/role"] = "leader"
		}
		if u, ok := s.unobserved[p.uid]; ok {
			// The informer lags: the pod still looks alive.
			if in.Removing == nil {
				in.Removing = map[types.UID]Method{}
			}
			in.Removing[p.uid] = u.method
		} else if p.terminating > 0 {
			pod.DeletionTimestamp = ptr.To(metav1.NewTime(s.now))
		}
		if !p.drainRequested.IsZero() {
			pod.Annotations = map[string]string{AnnotationDrainRequested: p.drainRequested.Format(time.RFC3339Nano),
				AnnotationDrainRevision: p.drainRev}
		}
		if p.drainComplete {
			if pod.Annotations == nil {
				pod.Annotations = map[string]string{}
			}
			pod.Annotations[AnnotationDrainComplete] = "true"
		}
		in.Pods = append(in.Pods, pod)
	}
	if s.cfg.pdbMinAvailable >= 0 {
		b := &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Generation: 1},
			Spec: policyv1.PodDisruptionBudgetSpec{
				MinAvailable: ptr.To(intstr.FromInt(s.cfg.pdbMinAvailable)),
				Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			},
			Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: s.pdbAllowed},
		}
		if s.pdbStale {
			b.Generation = 2
		}
		for uid, u := range s.unobserved {
			if p := s.podNamed(u.pod); u.method != MethodEvict || p == nil || p.uid != uid {
				continue // gone already: the informer shows that too
			}
			name := u.pod
			if s.pdbUncounted {
				b.Status.DisruptionsAllowed++
			} else {
				if b.Status.DisruptedPods == nil {
					b.Status.DisruptedPods = map[string]metav1.Time{}
				}
				b.Status.DisruptedPods[name] = metav1.NewTime(s.now)
			}
		}
		in.Budgets, in.BudgetError = pdb.ForPods([]*policyv1.PodDisruptionBudget{b}, in.Pods)
	}
	if s.cfg.dns {
		in.DNS = map[string]DNSState{}
		for _, p := range s.pods {
			if p == nil {
				continue
			}
			st := DNSState{Propagated: p.propagated}
			if !p.propagated {
				st.Message = "not yet at ns1.example.com"
			}
			if p.name == s.unreachable {
				st = DNSState{Unreachable: true, Message: "ns1.example.com: i/o timeout"}
			}
			in.DNS[p.name] = st
		}
	}
	return in
}

// run plays the rollout to its end and reports the first step that breaks an
// invariant.
func (s *sim) run(t *testing.T, seed uint64) {
	t.Helper()
	maxSteps := s.stepBound()
	settled := 0
	for s.step = 0; s.step < maxSteps; s.step++ {
		if s.cfg.rollbackAt > 0 && s.step == s.cfg.rollbackAt {
			s.rollback()
		}
		if e := s.cfg.revisionEvery; e > 0 && s.step > 0 && s.step%e == 0 && s.step < s.cfg.chaosSteps {
			s.updateRev = fmt.Sprintf("web-r%d", s.step/e)
			s.generation++
		}
		in := s.input()
		before := s.describe()
		plan := Compute(in)
		s.check(in, plan)
		s.apply(plan)
		s.logStep(before, plan)
		if len(s.errs) > 0 {
			t.Fatalf("seed %d, %s\nstep %d broke an invariant:\n  %s\nlast steps:\n%s",
				seed, s.cfg, s.step, strings.Join(s.errs, "\n  "), strings.Join(s.log, "\n"))
		}
		s.prev = &plan.Status
		if s.done(plan) {
			settled++
			if settled == 5 {
				return
			}
		} else {
			settled = 0
		}
		s.advance()
	}
	if s.cfg.broken && s.cfg.rollbackAt == 0 {
		if s.cfg.target() > 0 && s.prev.Phase != PhaseStalled {
			t.Fatalf("seed %d, %s\nbroken revision: phase %s after %d steps, want %s\nlast steps:\n%s",
				seed, s.cfg, s.prev.Phase, maxSteps, PhaseStalled, strings.Join(s.log, "\n"))
		}
		return
	}
	t.Fatalf("seed %d, %s\nthe rollout did not finish in %d steps (invariant f)\nlast steps:\n%s",
		seed, s.cfg, maxSteps, strings.Join(s.log, "\n"))
}

// stepBound is how long a rollout may take once the chaos ends: a wave is a
// deletion (1 step), terminating (<= 2), missing (<= 1), the new pod turning
// Ready and propagated (<= 4), minReadySeconds (<= 3) and the budget's status
// catching up (<= 2). Waves are never smaller than one pod.
func (s *sim) stepBound() int {
	if s.cfg.broken && s.cfg.rollbackAt == 0 {
		return 3*s.cfg.deadlineSeconds/int(simStep/time.Second) + 10
	}
	// Crashed pods recover within 6 steps of the chaos' end. A drain adds
	// its timeout to a wave, at worst.
	wave := 14 + s.cfg.drainTimeout/int(simStep/time.Second) + 1
	return max(s.cfg.chaosSteps, s.cfg.rollbackAt) + 6 + wave*(s.cfg.replicas+1)
}

// done is invariant (f): the rollout is over, and exactly replicas -
// partition pods run the update revision, available.
func (s *sim) done(plan Plan) bool {
	if s.cfg.broken && s.cfg.rollbackAt == 0 || s.step < max(s.cfg.chaosSteps, s.cfg.rollbackAt) {
		return false
	}
	// With nothing to update there was no rollout to complete (unless the
	// interrupts lowered the partition for a while).
	ok := plan.Status.Phase == PhaseComplete ||
		s.cfg.target() == 0 && (plan.Status.Phase == PhaseIdle || s.cfg.interrupts || s.cfg.resize)
	if !ok || len(plan.Deletions) > 0 {
		return false
	}
	updated := 0
	for o, p := range s.pods {
		if o >= s.replicas {
			if p != nil {
				return false // the scale-down is not over
			}
			continue
		}
		if p == nil || p.terminating > 0 {
			return false
		}
		if p.rev == s.updateRev {
			if !s.available(p) {
				return false
			}
			updated++
		}
	}
	// Pods updated while the interrupts had lowered the partition stay so,
	// and so do pods created by a scale-up (at the update revision).
	return updated == s.cfg.target() || (s.cfg.interrupts || s.cfg.resize) && updated > s.cfg.target()
}

func (s *sim) rollback() {
	// Pods recreated from now on are at the old revision, which works.
	s.updateRev = oldRev
	s.generation++
	// The StatefulSet controller sees the new template a step later.
}

// check verifies the invariants of one plan against the model's own view of
// the cluster, before the plan is applied.
func (s *sim) check(in Input, plan Plan) {
	fail := func(format string, args ...any) { s.errs = append(s.errs, fmt.Sprintf(format, args...)) }
	maxU := s.resolvedMaxUnavailable()
	target := max(s.replicas-s.partition, 0)
	// The ordinals in range; pods beyond it are the StatefulSet
	// controller's to delete (a scale-down), never ours.
	inRange := s.pods[:s.replicas]
	// Paused: nothing is removed, and every drain request is withdrawn.
	if s.paused {
		if len(plan.Deletions) > 0 {
			fail("%d removals while paused", len(plan.Deletions))
		}
		for _, p := range inRange {
			if p != nil && !p.drainRequested.IsZero() && p.terminating == 0 && !slices.ContainsFunc(plan.Withdrawals, func(w Withdrawal) bool { return w.Pod.UID == p.uid }) {
				fail("paused, but the drain request of %s is not withdrawn", p.name)
			}
		}
	}

	byName := map[string]int{}
	for o, p := range s.pods {
		if p != nil {
			byName[p.name] = o
		}
	}
	// The model's view: unavailable ordinals (missing, terminating, not
	// Ready, Ready too briefly, not yet in DNS), replacements in flight,
	// unhealthy outdated pods.
	unavailable, inFlight := 0, 0
	// drainingAvailable: pods asked to drain that are still available (they
	// count as unavailable); drainingHeld: those the budget is held for.
	drainingAvailable, drainingHeld := 0, 0
	var unhealthyOutdated, nonLeaderOutdated []string
	var draining []*simPod
	updated, avail, updatedAvail := int32(0), int32(0), int32(0)
	waitingDNS := map[string]string{}
	for _, p := range inRange {
		a := s.available(p)
		if !a {
			unavailable++
		}
		if p == nil || p.terminating > 0 {
			inFlight++
			continue
		}
		up := p.rev == s.updateRev
		if up && !a {
			inFlight++
		}
		if !up && !p.ready {
			unhealthyOutdated = append(unhealthyOutdated, p.name)
		}
		if !up && !p.leader {
			nonLeaderOutdated = append(nonLeaderOutdated, p.name)
		}
		if s.cfg.drainTimeout > 0 && !up && p.ready && !p.drainRequested.IsZero() && p.drainRev == s.updateRev {
			draining = append(draining, p)
		}
		if up {
			updated++
		}
		if a {
			avail++
			if up {
				updatedAvail++
			}
		}
		if s.cfg.dns && (!p.propagated || p.name == s.unreachable) {
			waitingDNS[p.name] = in.DNS[p.name].Message
		}
	}

	// Requests of this rollout count, but a leader's while other outdated
	// pods are left: that one is withdrawn.
	for _, p := range draining {
		if p.leader && len(nonLeaderOutdated) > 0 {
			continue
		}
		drainingHeld++
		if s.available(p) {
			drainingAvailable++
		}
	}

	// (g) The status counts what the model counts; with the DNS gate a pod is
	// never available before its name resolves.
	st := plan.Status
	if st.Updated != updated || st.Available != avail || st.UpdatedAvailable != updatedAvail {
		fail("status counts updated %d, available %d, updated available %d; the cluster has %d, %d, %d",
			st.Updated, st.Available, st.UpdatedAvailable, updated, avail, updatedAvail)
	}
	// The status names at most maxListed of the pods waiting for DNS, and
	// counts them all.
	if int(st.WaitingForDNSCount) != len(waitingDNS) || len(st.WaitingForDNS) != min(len(waitingDNS), maxListed) {
		fail("status waiting for DNS: %d named of %d, want %d named of %d",
			len(st.WaitingForDNS), st.WaitingForDNSCount, min(len(waitingDNS), maxListed), len(waitingDNS))
	}
	for n, why := range st.WaitingForDNS {
		if want, ok := waitingDNS[n]; !ok || want != why {
			fail("status: %s waits for DNS (%q); the cluster says %v (%q)", n, why, ok, want)
		}
	}

	// Every deletion is of an outdated, live pod of ours, at most once, with
	// the UID the planner was shown.
	// evicted counts new disruptions of healthy pods (evictions without a
	// handshake, drain requests); drained the evictions of pods asked before.
	evicted, deleted, drained := 0, 0, 0
	evictedAvailable := 0
	seen := map[string]bool{}
	for i, d := range plan.Deletions {
		o, ok := byName[d.Pod.Name]
		if !ok {
			fail("deletion of %s, which does not exist", d.Pod.Name)
			continue
		}
		p := s.pods[o]
		switch {
		case o >= s.replicas:
			fail("%s removed, beyond spec.replicas %d", p.name, s.replicas)
		case seen[p.name]:
			fail("%s deleted twice", p.name)
		case p.terminating > 0:
			fail("%s deleted while terminating", p.name)
		case p.rev == s.updateRev:
			fail("%s deleted at the update revision", p.name)
		case d.Pod.UID != p.uid:
			fail("%s deleted with UID %s, the pod's is %s", p.name, d.Pod.UID, p.uid)
		case d.Message == "":
			fail("deletion of %s has no message", p.name)
		}
		seen[p.name] = true
		switch d.Method {
		case MethodDelete:
			// (a) Deleting without eviction is only for pods that are
			// already unavailable: it costs no availability.
			if p.ready {
				fail("%s is Ready but deleted without eviction", p.name)
			}
			// (c) Unhealthy pods go before every healthy one.
			if evicted > 0 {
				fail("%s (unhealthy) planned after an eviction, at position %d", p.name, i)
			}
			deleted++
		case MethodEvict:
			if !p.ready {
				fail("%s is not Ready but evicted", p.name)
			}
			// (d) The leader goes last and alone: only when no other
			// outdated pod is left and every replacement is available,
			// or when it is unhealthy (then it is deleted, not evicted).
			if p.leader && len(nonLeaderOutdated) > 0 {
				fail("leader %s evicted while other outdated pods remain: %v", p.name, nonLeaderOutdated)
			}
			if p.leader && (inFlight > 0 || len(plan.Deletions) > 1) {
				fail("leader %s evicted with %d replacements in flight, in a plan of %d removals", p.name, inFlight, len(plan.Deletions))
			}
			if s.cfg.drainTimeout > 0 {
				// No eviction before an answer to this rollout's request,
				// given after it, or the timeout.
				timeout := time.Duration(s.cfg.drainTimeout) * time.Second
				switch {
				case p.drainRequested.IsZero():
					fail("%s evicted without a drain request", p.name)
				case p.drainRev != s.updateRev:
					fail("%s evicted on a drain request made for revision %s, the update revision is %s", p.name, p.drainRev, s.updateRev)
				case (!p.drainComplete || p.answeredAt.Before(p.drainRequested)) && s.now.Sub(p.drainRequested) < timeout:
					fail("%s evicted %s after its drain request, unanswered since, before the timeout %s",
						p.name, s.now.Sub(p.drainRequested), timeout)
				}
				drained++
				continue
			}
			evicted++
			if s.available(p) {
				evictedAvailable++
			}
		case MethodRequestDrain:
			switch {
			case s.cfg.drainTimeout == 0:
				fail("%s asked to drain without the handshake", p.name)
			case !p.ready:
				fail("%s is not Ready but asked to drain", p.name)
			case !p.drainRequested.IsZero() && p.drainRev == s.updateRev:
				fail("%s asked to drain a second time", p.name)
			}
			// (d) The leader is asked last, and alone.
			if p.leader && len(nonLeaderOutdated) > 0 {
				fail("leader %s asked to drain while other outdated pods remain: %v", p.name, nonLeaderOutdated)
			}
			if p.leader && (inFlight > 0 || drainingHeld > 0 || len(plan.Deletions) > 1) {
				fail("leader %s asked to drain with %d replacements in flight and %d pods draining, in a plan of %d removals",
					p.name, inFlight, drainingHeld, len(plan.Deletions))
			}
			evicted++
			if s.available(p) {
				evictedAvailable++
			}
		default:
			fail("%s: unknown method %q", p.name, d.Method)
		}
	}
	// A pod asked to drain counts as unavailable.
	unavailable += drainingAvailable
	// (a) A drained pod's eviction obeys max-unavailable too, the pod
	// itself counted once (issue 15, bug 4).
	if drained > 0 && unavailable > maxU {
		fail("evicted %d drained pods with %d pods unavailable or draining; max-unavailable %d", drained, unavailable, maxU)
	}
	// (j) Drain requests plus unavailable pods never exceed max-unavailable
	// because of a request.
	if s.cfg.drainTimeout > 0 && evicted > 0 && unavailable+evictedAvailable > maxU {
		fail("asked %d pods to drain with %d unavailable or draining; max-unavailable %d", evicted, unavailable, maxU)
	}

	// (h) Ties: highest ordinal first. Within the unhealthy deletions and
	// within the evictions of non-leaders, no pod of the group is passed
	// over for one of a lower ordinal. (One budget selects every pod, so a
	// budget cannot hold back one pod and let a lower one go.)
	lowestDeleted, lowestEvicted := len(s.pods), len(s.pods)
	for _, d := range plan.Deletions {
		o, ok := byName[d.Pod.Name]
		if !ok {
			continue
		}
		switch {
		case d.Method == MethodDelete:
			lowestDeleted = min(lowestDeleted, o)
		case !s.pods[o].drainRequested.IsZero():
			// Asked when it was next; leadership may have moved since.
		case !s.pods[o].leader:
			lowestEvicted = min(lowestEvicted, o)
		}
	}
	for o, p := range inRange {
		if p == nil || p.terminating > 0 || p.rev == s.updateRev || seen[p.name] {
			continue
		}
		if !p.ready && o > lowestDeleted {
			fail("unhealthy %s passed over for web-%d", p.name, lowestDeleted)
		}
		if p.ready && !p.leader && p.drainRequested.IsZero() && o > lowestEvicted {
			fail("%s passed over for web-%d", p.name, lowestEvicted)
		}
	}

	// Nothing while our deletions are not observed or the StatefulSet
	// controller has not seen the template.
	if len(plan.Deletions) > 0 && s.observed < s.generation {
		fail("deletions while generation %d is observed as %d", s.generation, s.observed)
	}

	// (a) Never more unavailable than max-unavailable because of us:
	// evictions happen only while fewer than max-unavailable pods are
	// unavailable, and each eviction of an available pod adds one, so
	// after the plan at most max-unavailable are unavailable. (Pods that
	// are unavailable already may be more than that, through no fault of
	// ours; then nothing is evicted.)
	if evicted > 0 && (unavailable >= maxU || unavailable+evictedAvailable > maxU) {
		fail("evicted %d pods (%d available) with %d unavailable already; max-unavailable %d", evicted, evictedAvailable, unavailable, maxU)
	}
	// (c) Unhealthy replacements in flight stay within max-unavailable.
	if deleted > 0 && inFlight+deleted > maxU {
		fail("deleted %d unhealthy pods with %d replacements in flight; max-unavailable %d", deleted, inFlight, maxU)
	}
	// (c) No healthy pod is chosen while an unhealthy outdated pod that
	// could be deleted is passed over: an eviction means every unhealthy
	// outdated pod was deleted.
	if evicted > 0 {
		for _, n := range unhealthyOutdated {
			if !seen[n] {
				fail("evicted a healthy pod but passed over unhealthy outdated %s", n)
			}
		}
	}
	// (b) Evictions never exceed the budget's headroom as the planner read it.
	if s.cfg.pdbMinAvailable >= 0 {
		allowed := int(s.pdbAllowed)
		if s.pdbStale {
			allowed = 0
		}
		if evicted > 0 && evicted+drainingHeld > allowed {
			fail("evicted or asked %d pods with %d draining, the budget allows %d (stale %v)", evicted, drainingHeld, allowed, s.pdbStale)
		}
		if drained > allowed {
			fail("evicted %d drained pods, the budget allows %d (stale %v)", drained, allowed, s.pdbStale)
		}
	}
	// (i) Batches are as large as allowed: when max-unavailable, the
	// budget and the target allow k more, k go in the same plan. The
	// model counts them on its own, in the planner's order: unhealthy
	// outdated pods while fewer than max-unavailable replacements are in
	// flight; then healthy ones (leaders only when no other outdated pod is
	// left) while fewer than max-unavailable pods are unavailable and the
	// budget has headroom; each an available pod makes one more unavailable.
	if s.observed == s.generation && !s.paused {
		coming := 0
		for _, p := range inRange {
			if p == nil || p.terminating > 0 || p.rev == s.updateRev {
				coming++
			}
		}
		room := target - coming
		wantDeleted := max(0, min(len(unhealthyOutdated), maxU-inFlight, room))
		room -= wantDeleted
		wantEvicted := 0
		guarded := false
		if u := s.podNamed(s.unreachable); s.cfg.dns && u != nil && u.terminating == 0 {
			guarded = true // a DNS server cannot be asked: no eviction
		}
		allowed := math.MaxInt
		if s.cfg.pdbMinAvailable >= 0 {
			allowed = int(s.pdbAllowed)
			if s.pdbStale {
				allowed = 0
			}
		}
		// Pods asked to drain take their room and hold their budget; new
		// pods are asked, or evicted, after them. Leaders wait for them.
		room -= min(max(room, 0), drainingHeld)
		allowed -= drainingHeld
		leadersTurn := len(nonLeaderOutdated) == 0 && drainingHeld == 0 && inFlight+wantDeleted == 0
		leaders := 0
		u := unavailable
		for o := len(inRange) - 1; o >= 0 && !guarded; o-- {
			p := s.pods[o]
			if p == nil || p.terminating > 0 || p.rev == s.updateRev || !p.ready || p.leader != leadersTurn {
				continue
			}
			if s.cfg.drainTimeout > 0 && !p.drainRequested.IsZero() && p.drainRev == s.updateRev {
				continue
			}
			if room <= 0 || u >= maxU || allowed <= 0 || leaders > 0 {
				break
			}
			if p.leader {
				leaders++
			}
			wantEvicted++
			room--
			allowed--
			if s.available(p) {
				u++
			}
		}
		// In a rollout group (group_simulation_test.go) a member may
		// wait, or only repair.
		switch s.groupRole {
		case GroupWait:
			wantDeleted, wantEvicted = 0, 0
		case GroupRepair:
			wantEvicted = 0
		}
		if deleted != wantDeleted || evicted != wantEvicted {
			fail("batch of %d deletions and %d evictions; max-unavailable %d, the budget and the target allow %d and %d",
				deleted, evicted, maxU, wantDeleted, wantEvicted)
		}
	}
	// (e) Never more than replicas - partition pods at the update revision
	// because of us: missing and terminating pods come back at it.
	coming := 0
	for _, p := range inRange {
		if p == nil || p.terminating > 0 || p.rev == s.updateRev || seen[p.name] {
			coming++
		}
	}
	if len(plan.Deletions) > 0 && coming > target {
		fail("after the plan %d pods are or will be at the update revision, more than replicas - partition = %d", coming, target)
	}
	// A broken revision stops itself: with no other cause of unhealthy
	// pods, at most max-unavailable pods ever run it.
	if s.cfg.broken && s.cfg.chaosSteps == 0 && s.updateRev == newRev && coming > maxU {
		fail("broken revision: %d pods are or will be at it, max-unavailable %d", coming, maxU)
	}
}

// podNamed is the model's pod of that name, nil when there is none.
func (s *sim) podNamed(name string) *simPod {
	for _, p := range s.pods {
		if p != nil && p.name == name {
			return p
		}
	}
	return nil
}

// apply carries the plan out as the API server would.
func (s *sim) apply(plan Plan) {
	// The removals of the step before are seen by now.
	s.unobserved = nil
	for _, w := range plan.Withdrawals {
		if p := s.podNamed(w.Pod.Name); p != nil && p.uid == w.Pod.UID {
			p.drainRequested, p.drainRev, p.drainAnswerIn = time.Time{}, "", 0
			p.drainComplete, p.answeredAt = false, time.Time{}
		}
	}
	for _, d := range plan.Deletions {
		var p *simPod
		for _, q := range s.pods {
			if q != nil && q.name == d.Pod.Name {
				p = q
			}
		}
		if p == nil || p.uid != d.Pod.UID || p.terminating > 0 {
			continue // precondition failed
		}
		if d.Method == MethodRequestDrain {
			// The request's patch clears any earlier answer.
			p.drainRequested, p.drainRev = s.now, s.updateRev
			p.drainComplete, p.answeredAt = false, time.Time{}
			p.drainAnswerIn = 1 + s.rng.IntN(5)
			if s.rng.IntN(4) == 0 {
				p.drainAnswerIn = -1
			}
			continue
		}
		if d.Method == MethodEvict && s.cfg.pdbMinAvailable >= 0 {
			// The eviction API spends the stored status; 429 when none
			// is left or the status is stale.
			if s.pdbStale || s.pdbAllowed <= 0 {
				continue
			}
			s.pdbAllowed--
		}
		// A deleted pod stays Ready through its grace period, until its
		// containers stop.
		p.terminating = 1 + s.rng.IntN(2)
		if s.rng.IntN(3) == 0 {
			// The planner's informers show it a step late.
			if s.unobserved == nil {
				s.unobserved = map[types.UID]unobservedRemoval{}
				s.pdbUncounted = s.rng.IntN(2) == 0
			}
			s.unobserved[p.uid] = unobservedRemoval{p.name, d.Method}
		}
	}
}

// advance moves the model one step on.
func (s *sim) advance() {
	s.now = s.now.Add(simStep)
	s.observed = s.generation
	chaos := s.step < s.cfg.chaosSteps
	switch {
	case !chaos || !s.cfg.interrupts:
		s.paused, s.partition = false, s.cfg.partition
	case s.rng.IntN(12) == 0:
		s.paused = !s.paused
	case s.rng.IntN(12) == 0:
		s.partition = s.rng.IntN(s.cfg.replicas + 2)
	}
	switch {
	case !chaos:
		s.replicas = s.cfg.replicas
	case s.cfg.resize && s.rng.IntN(10) == 0:
		s.replicas = s.rng.IntN(len(s.pods) + 1)
	}
	for o, p := range s.pods {
		if o >= s.replicas {
			// The StatefulSet controller deletes the pods beyond the
			// range, in no hurry: the planner sees them for a while.
			switch {
			case p == nil:
			case p.terminating == 0:
				if s.rng.IntN(3) == 0 {
					p.terminating = 1 + s.rng.IntN(2)
				}
			default:
				p.terminating--
				if p.terminating == 0 {
					s.pods[o] = nil
				}
			}
			continue
		}
		if p == nil {
			s.missingFor[o]--
			if s.missingFor[o] < 0 {
				s.pods[o] = s.createPod(o)
			}
			continue
		}
		if p.terminating > 0 {
			p.terminating--
			if p.terminating == 0 {
				s.pods[o] = nil
				s.missingFor[o] = s.rng.IntN(2)
			}
			continue
		}
		if !p.propagated {
			p.propagateIn--
			p.propagated = p.propagateIn <= 0
		}
		if p.crashedFor > 0 {
			p.crashedFor--
		}
		if !p.drainRequested.IsZero() && p.drainAnswerIn > 0 {
			p.drainAnswerIn--
			if p.drainAnswerIn == 0 {
				p.drainComplete, p.answeredAt = true, s.now
			}
		}
		if s.cfg.drainTimeout > 0 && p.drainRequested.IsZero() && !p.drainComplete && s.rng.IntN(40) == 0 {
			// A sidecar that answers what it sees answers before any
			// request: that answer must never count.
			p.drainComplete, p.answeredAt = true, s.now
		}
		if p.readyIn > 0 {
			p.readyIn--
		}
		if chaos && s.rng.IntN(30) == 0 {
			p.crashedFor = 1 + s.rng.IntN(6)
		}
		canBeReady := p.readyIn == 0 && p.crashedFor == 0 && (!s.cfg.readinessGate || p.propagated)
		if canBeReady && !p.ready {
			p.readySince = s.now
		}
		p.ready = canBeReady
	}
	// Leadership moves, now and then, to any live pod or to none.
	if s.rng.IntN(7) == 0 {
		o := s.rng.IntN(len(s.pods) + 1)
		for i, p := range s.pods {
			if p != nil {
				p.leader = i == o
			}
		}
	}
	s.pdbStale, s.unreachable = false, ""
	if chaos {
		if s.rng.IntN(20) == 0 {
			s.pdbStale = true
		}
		if s.cfg.dns && s.rng.IntN(30) == 0 {
			s.unreachable = "web-" + strconv.Itoa(s.rng.IntN(s.cfg.replicas))
		}
	}
	// The disruption controller recomputes the budget's status from the pods
	// it sees, possibly a step late.
	if s.cfg.pdbLag {
		s.pdbAllowed, s.pdbNext = s.pdbNext, s.disruptionsAllowed()
	} else {
		s.pdbAllowed = s.disruptionsAllowed()
	}
}

// createPod is the StatefulSet controller recreating a pod: at the update
// revision, with a new UID and IP, not yet Ready nor published.
func (s *sim) createPod(o int) *simPod {
	p := &simPod{
		name:        "web-" + strconv.Itoa(o),
		uid:         s.uid(),
		rev:         s.updateRev,
		readyIn:     1 + s.rng.IntN(4),
		propagateIn: s.rng.IntN(4),
	}
	if s.cfg.broken && p.rev == newRev {
		p.readyIn = -1
	}
	p.propagated = p.propagateIn == 0
	return p
}

// disruptionsAllowed is the disruption controller's arithmetic for
// minAvailable: healthy (Ready, not terminating) minus minAvailable, at least 0.
func (s *sim) disruptionsAllowed() int32 {
	healthy := 0
	for _, p := range s.pods {
		if p != nil && p.terminating == 0 && p.ready {
			healthy++
		}
	}
	return int32(max(0, healthy-s.cfg.pdbMinAvailable))
}

// describe renders the cluster as the fixtures do: o/O outdated Ready/not,
// n/N updated Ready/not, t terminating, - missing, * leader, ? not in DNS.
func (s *sim) describe() string {
	var b strings.Builder
	for o, p := range s.pods {
		if o == s.replicas && s.cfg.resize {
			b.WriteString("| ")
		}
		c := "-"
		switch {
		case p == nil:
		case p.terminating > 0:
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
		if p != nil && p.leader {
			c += "*"
		}
		if p != nil && !p.drainRequested.IsZero() {
			c += "d"
			if p.drainComplete {
				c += "!"
			}
		}
		if p != nil && s.cfg.dns && !p.propagated {
			c += "?"
		}
		b.WriteString(c + " ")
	}
	return b.String()
}

func (s *sim) logStep(before string, plan Plan) {
	var dels []string
	for _, d := range plan.Deletions {
		dels = append(dels, d.Pod.Name+":"+string(d.Method))
	}
	s.log = append(s.log, fmt.Sprintf("  %3d [%s] pdb=%d stale=%v unobserved=%v -> %s/%s %v",
		s.step, strings.TrimSpace(before), s.pdbAllowed, s.pdbStale, s.unobserved, plan.Status.Phase, plan.Status.Reason, dels))
	if len(s.log) > 12 {
		s.log = s.log[1:]
	}
}

// TestSimulatedRollouts runs many seeded rollouts of random shape and checks
// the planner's invariants after every step. A failure names its seed; run
// it alone with -run 'TestSimulatedRollouts/seed=N$'.
func TestSimulatedRollouts(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 40
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			cfg := randomSimConfig(rand.New(rand.NewPCG(seed, 0)))
			newSim(cfg, seed).run(t, seed)
		})
	}
}

// TestSimulatedRolloutShapes runs the shapes worth naming, whatever the
// random draw: each with a few seeds.
func TestSimulatedRolloutShapes(t *testing.T) {
	base := simConfig{replicas: 7, maxUnavailable: "2", pdbMinAvailable: -1, deadlineSeconds: 600}
	shapes := map[string]func(*simConfig){
		"plain":                func(*simConfig) {},
		"one pod":              func(c *simConfig) { c.replicas, c.maxUnavailable = 1, "1" },
		"max-unavailable 100%": func(c *simConfig) { c.maxUnavailable = "100%" },
		"partition":            func(c *simConfig) { c.partition = 3 },
		"partition all":        func(c *simConfig) { c.partition = 7 },
		"tight budget":         func(c *simConfig) { c.pdbMinAvailable = 6 },
		"lagging budget":       func(c *simConfig) { c.pdbMinAvailable, c.pdbLag = 5, true },
		"minReadySeconds":      func(c *simConfig) { c.minReadySeconds = 15 },
		"DNS gate":             func(c *simConfig) { c.dns = true },
		"DNS readiness gate":   func(c *simConfig) { c.dns, c.readinessGate = true, true },
		"chaos":                func(c *simConfig) { c.chaosSteps = 60 },
		"few pods, long chaos, new revisions": func(c *simConfig) {
			c.replicas, c.maxUnavailable, c.chaosSteps, c.revisionEvery = 5, "2", 300, 12
		},
		"chaos and tight PDB":  func(c *simConfig) { c.chaosSteps, c.pdbMinAvailable, c.pdbLag = 60, 4, true },
		"broken revision":      func(c *simConfig) { c.broken, c.deadlineSeconds = true, 60 },
		"broken then rollback": func(c *simConfig) { c.broken, c.deadlineSeconds, c.rollbackAt = true, 60, 40 },
		"broken, budget, DNS":  func(c *simConfig) { c.broken, c.deadlineSeconds, c.pdbMinAvailable, c.dns = true, 60, 3, true },
		"many, small batches":  func(c *simConfig) { c.replicas, c.maxUnavailable = 30, "1" },
		"drain":                func(c *simConfig) { c.drainTimeout = 20 },
		"drain, tight budget":  func(c *simConfig) { c.drainTimeout, c.pdbMinAvailable, c.pdbLag = 15, 5, true },
		"drain and chaos":      func(c *simConfig) { c.drainTimeout, c.chaosSteps, c.pdbMinAvailable = 30, 60, 4 },
		"many, 25% and chaos":  func(c *simConfig) { c.replicas, c.maxUnavailable, c.chaosSteps = 30, "25%", 40 },
		"scaled mid-rollout":   func(c *simConfig) { c.chaosSteps, c.resize = 80, true },
		"scaled, 50%, drain":   func(c *simConfig) { c.maxUnavailable, c.chaosSteps, c.resize, c.drainTimeout = "50%", 60, true, 15 },
		"many, all constraints": func(c *simConfig) {
			*c = simConfig{30, "5", 4, 5, true, true, 25, true, false, 40, 0, 10, 600, 20, true, true}
		},
	}
	for name, shape := range shapes {
		t.Run(name, func(t *testing.T) {
			for seed := uint64(1); seed <= 5; seed++ {
				cfg := base
				shape(&cfg)
				newSim(cfg, seed).run(t, seed)
			}
		})
	}
}
