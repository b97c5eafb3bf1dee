// Package invariants checks, from one watch of a test namespace's pods (with
// its StatefulSets and PodDisruptionBudgets), the promises stsroller makes
// whatever goes wrong around it:
//
//  1. max-unavailable: when stsroller deletes a Ready pod, the StatefulSet
//     has at most max-unavailable pods unavailable afterwards, counting every
//     pod that is not Ready, terminating, or missing (an ordinal below
//     spec.replicas with no pod); and, for any pod, at most max-unavailable
//     replacements of its deletions are in flight (deleted, the replacement
//     not yet Ready).
//  2. PDB headroom: whoever disrupts a Ready pod (stsroller, a drain), the
//     pods each budget selects stay at least at its desired healthy count.
//  3. Only outdated pods: a deleted pod's controller-revision-hash differs
//     from the StatefulSet's update revision.
//  4. Once per revision: no pod name is deleted twice for one update
//     revision.
//  5. Hands off: no pod of another owner (another controller, no controller,
//     a StatefulSet being deleted) is deleted or gets stsroller's condition.
//
// All pod changes come through one watch, in resourceVersion order, so what
// the checker counts at a deletion is what the cluster held at that moment.
// Deletions are attributed once the StatefulSet's state around them is known
// (a grace period later), since the StatefulSet arrives on another watch:
// ordinals at or above spec.replicas are the StatefulSet controller's
// scale-down; pods the test declares External (a drain) are checked against
// the budgets only; every other deletion is stsroller's.
package invariants

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

// Grace is how long after a deletion the checker waits for the StatefulSet's
// state (update revision, replicas, deletion) around it before attributing
// and checking it.
const Grace = 3 * time.Second

// Checker checks the invariants of one namespace. Its methods are safe for
// concurrent use.
type Checker struct {
	clock clock.Clock

	mu       sync.Mutex
	sets     map[string]*setState // by name
	pods     map[string]*corev1.Pod
	pdbs     map[string]*policyv1.PodDisruptionBudget
	external map[types.UID]bool
	// immediate counts pods deleted with grace period 0 (OnPodDeletedAtOnce).
	immediate  int
	pending    []*deletion
	inFlight   map[string]*deletion // by pod name: the last deletion whose replacement is not Ready yet
	perRev     map[string]int       // "sts/pod/revision" -> stsroller deletions
	checks     int
	violations []string
	deletions  int
	completed  int
}

type setState struct {
	uid  types.UID
	name string
	// history of what matters, oldest first, one entry per change.
	history []setAt
	// phases are the distinct phase/reason pairs of the status seen, in
	// order.
	phases []string
}

type setAt struct {
	at             time.Time
	replicas       int32
	maxUnavailable int32
	partition      int32
	updateRevision string // "" while status.observedGeneration < generation
	deleting       bool   // deletion timestamp set, or the object is gone
	managed        bool
	status         *policy.Status
}

func (s *setState) last() setAt { return s.history[len(s.history)-1] }

// window returns the states in force during [from, to].
func (s *setState) window(from, to time.Time) []setAt {
	var out []setAt
	for i, h := range s.history {
		next := time.Time{}
		if i+1 < len(s.history) {
			next = s.history[i+1].at
		}
		if h.at.After(to) || (!next.IsZero() && next.Before(from)) {
			continue
		}
		out = append(out, h)
	}
	return out
}

// deletion is one pod seen deleted, with what the namespace held right
// after.
type deletion struct {
	at  time.Time
	pod *corev1.Pod // as it was just before
	// set is the controlling StatefulSet's name, "" for a pod of another
	// owner.
	set      string
	ready    bool
	external bool
	// readyOthers counts the set's other Ready, not terminating pods by
	// ordinal.
	readyOthers []int
	// inFlight are the deletions of the set's other pods whose replacements
	// were not Ready.
	inFlight []*deletion
	// pdbs: for each budget that selects the pod, its healthy pods after.
	pdbs map[string]pdbAfter
	// resolved: attributed to stsroller (byUs) or not.
	resolved, byUs bool
}

type pdbAfter struct {
	healthy int
	pdb     *policyv1.PodDisruptionBudget
	// owners are the StatefulSets of the selected pods, for the expected
	// count; others counts selected pods of no known StatefulSet.
	owners map[string]bool
	others int
}

// New returns a checker fed by nothing yet; Watch feeds it from a cluster,
// tests feed it with the On* methods.
func New(clk clock.Clock) *Checker {
	return &Checker{
		clock: clk, sets: map[string]*setState{}, pods: map[string]*corev1.Pod{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, external: map[types.UID]bool{},
		inFlight: map[string]*deletion{}, perRev: map[string]int{},
	}
}

// Watch starts a checker on namespace ns until ctx is done: informers on its
// pods, StatefulSets and PodDisruptionBudgets, and a loop that checks the
// deletions once their grace has passed.
func Watch(ctx context.Context, client kubernetes.Interface, ns string) (*Checker, error) {
	c := New(clock.RealClock{})
	f := kinformers.NewSharedInformerFactoryWithOptions(client, 0, kinformers.WithNamespace(ns))
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandlerFuncs
	}{
		{f.Apps().V1().StatefulSets().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.OnStatefulSet(o.(*appsv1.StatefulSet)) },
			UpdateFunc: func(_, o any) { c.OnStatefulSet(o.(*appsv1.StatefulSet)) },
			DeleteFunc: func(o any) {
				if s, ok := unwrap(o).(*appsv1.StatefulSet); ok {
					c.OnStatefulSetDeleted(s)
				}
			},
		}},
		{f.Policy().V1().PodDisruptionBudgets().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.OnPDB(o.(*policyv1.PodDisruptionBudget)) },
			UpdateFunc: func(_, o any) { c.OnPDB(o.(*policyv1.PodDisruptionBudget)) },
			DeleteFunc: func(o any) {
				if p, ok := unwrap(o).(*policyv1.PodDisruptionBudget); ok {
					c.OnPDBDeleted(p)
				}
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, err
		}
	}
	// The StatefulSets and budgets first, so that the pods' first events
	// find their owners.
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	podInf := f.Core().V1().Pods().Informer()
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.OnPod(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { c.OnPod(o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			_, tombstone := o.(cache.DeletedFinalStateUnknown)
			if p, ok := unwrap(o).(*corev1.Pod); ok {
				if tombstone {
					c.OnPodDeleted(p)
				} else {
					c.OnPodDeletedAtOnce(p)
				}
			}
		},
	}); err != nil {
		return nil, err
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				f.Shutdown()
				return
			case <-t.C:
				c.Resolve(false)
			}
		}
	}()
	return c, nil
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

// External declares that the pod with this UID will be disrupted by another
// actor (a drain): its deletion is checked against the budgets only.
func (c *Checker) External(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.external[uid] = true
}

// OnStatefulSet records a StatefulSet's state.
func (c *Checker) OnStatefulSet(s *appsv1.StatefulSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[s.Name]
	if st == nil || st.uid != s.UID {
		st = &setState{uid: s.UID, name: s.Name}
		c.sets[s.Name] = st
	}
	h := setAt{at: c.clock.Now(), replicas: policy.Replicas(s), deleting: s.DeletionTimestamp != nil,
		managed: policy.Enabled(s) && policy.IsOnDelete(s), status: policy.ParseStatus(s.Annotations)}
	if s.Status.ObservedGeneration >= s.Generation {
		h.updateRevision = s.Status.UpdateRevision
	} else if len(st.history) > 0 {
		h.updateRevision = st.last().updateRevision
	}
	if cfg, err := policy.ParseConfig(s); err == nil {
		h.maxUnavailable, h.partition = cfg.MaxUnavailable, cfg.Partition
	} else {
		h.maxUnavailable = 0 // misconfigured: nothing may be deleted
	}
	st.history = append(st.history, h)
	if h.status != nil {
		pr := string(h.status.Phase) + "/" + h.status.Reason
		if len(st.phases) == 0 || st.phases[len(st.phases)-1] != pr {
			st.phases = append(st.phases, pr)
		}
	}
}

// Phases are the phase/reason pairs a StatefulSet's status went through, in
// order (a repeat only after another).
func (c *Checker) Phases(set string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.sets[set]; st != nil {
		return append([]string(nil), st.phases...)
	}
	return nil
}

// OnStatefulSetDeleted records that a StatefulSet is gone.
func (c *Checker) OnStatefulSetDeleted(s *appsv1.StatefulSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[s.Name]
	if st == nil || st.uid != s.UID {
		return
	}
	h := st.last()
	h.at, h.deleting = c.clock.Now(), true
	st.history = append(st.history, h)
}

// OnPDB records a budget.
func (c *Checker) OnPDB(p *policyv1.PodDisruptionBudget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pdbs[p.Name] = p
}

// OnPDBDeleted forgets a budget.
func (c *Checker) OnPDBDeleted(p *policyv1.PodDisruptionBudget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pdbs, p.Name)
}

// OnPod records a pod's new state; a deletion timestamp that appears is a
// deletion.
func (c *Checker) OnPod(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pods[p.Name]
	if old != nil && old.UID != p.UID {
		// The old pod went without our seeing its end.
		c.deletedLocked(old)
		old = nil
	}
	c.pods[p.Name] = p
	c.touchedLocked(old, p)
	if old != nil && old.DeletionTimestamp == nil && p.DeletionTimestamp != nil {
		if ForcedDeletion(p) {
			c.external[p.UID] = true
			c.immediate++
		}
		c.deletedLocked(old)
	}
	if p.DeletionTimestamp == nil && ready(p) {
		delete(c.inFlight, p.Name)
	}
}

// OnPodDeleted records a pod that is gone; if it never had a deletion
// timestamp, this is its deletion.
func (c *Checker) OnPodDeleted(p *corev1.Pod) { c.podGone(p, false) }

// OnPodDeletedAtOnce records a pod that is gone, as a watch's DELETED event
// reports it (not a tombstone of a re-list, which may hide a deletion
// timestamp). A pod with a grace period that goes without ever showing a
// deletion timestamp was deleted with grace period 0. stsroller never does
// that (its deletions and evictions keep the pod's grace period), kwok does:
// it finalizes a terminating pod with a delete by name, without a UID
// precondition, and when it acts on a pod's old incarnation late, the
// StatefulSet controller's replacement of the same name goes instead (seen
// in the soak under 20% API faults). Such a deletion is checked against the
// budgets only, as External's.
func (c *Checker) OnPodDeletedAtOnce(p *corev1.Pod) { c.podGone(p, true) }

// ForcedDeletion says whether a terminating pod was deleted with grace period
// 0 on purpose: its deletion grace period is 0 though it has one of its own,
// runs on a node and has not finished (the API server shortens the grace
// period to 0 only for unscheduled or finished pods). The API server shows
// such a pod terminating for a moment before it goes, so a watch may see
// either this or only its DELETED event (OnPodDeletedAtOnce). stsroller never
// deletes so; kwok does, and by name, so a late one can hit the replacement.
func ForcedDeletion(p *corev1.Pod) bool {
	return p.DeletionTimestamp != nil && p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 0 &&
		ptr.Deref(p.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds) > 0 &&
		p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// DeletedAtOnce says whether a pod that a watch's DELETED event reports gone,
// never having shown a deletion timestamp, was deleted with grace period 0:
// it has a grace period of its own (see OnPodDeletedAtOnce).
func DeletedAtOnce(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil &&
		ptr.Deref(p.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds) > 0
}

func (c *Checker) podGone(p *corev1.Pod, watched bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pods[p.Name]
	if old == nil || old.UID != p.UID {
		return
	}
	delete(c.pods, p.Name)
	if old.DeletionTimestamp == nil {
		if watched && DeletedAtOnce(old) {
			c.external[old.UID] = true
			c.immediate++
		}
		c.deletedLocked(old)
	}
}

// touchedLocked checks that stsroller's pod condition appears only on pods
// of managed StatefulSets.
func (c *Checker) touchedLocked(old, cur *corev1.Pod) {
	set := c.ownerLocked(cur)
	if set != "" && c.sets[set].last().managed {
		return
	}
	c.checks++
	before := conditionOf(old, policy.ConditionDNSPropagated)
	after := conditionOf(cur, policy.ConditionDNSPropagated)
	if after != nil && (before == nil || *before != *after) {
		c.violatef("pod %s of another owner got condition %s=%s", cur.Name, after.Type, after.Status)
	}
}

func conditionOf(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	if p == nil {
		return nil
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			c := p.Status.Conditions[i]
			c.LastProbeTime, c.LastTransitionTime = metav1.Time{}, metav1.Time{}
			return &c
		}
	}
	return nil
}

// ownerLocked is the name of the known StatefulSet controlling p, or "".
func (c *Checker) ownerLocked(p *corev1.Pod) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "StatefulSet" {
		return ""
	}
	if s := c.sets[ref.Name]; s != nil && s.uid == ref.UID {
		return ref.Name
	}
	return ""
}

func (c *Checker) deletedLocked(p *corev1.Pod) {
	c.deletions++
	d := &deletion{at: c.clock.Now(), pod: p, set: c.ownerLocked(p), ready: ready(p), external: c.external[p.UID], pdbs: map[string]pdbAfter{}}
	if d.set != "" {
		for _, o := range c.pods {
			if o.UID == p.UID || o.DeletionTimestamp != nil || !ready(o) || c.ownerLocked(o) != d.set {
				continue
			}
			if n, ok := ordinal(o.Name, d.set); ok {
				d.readyOthers = append(d.readyOthers, n)
			}
		}
		for name, f := range c.inFlight {
			if name != p.Name && f.set == d.set {
				d.inFlight = append(d.inFlight, f)
			}
		}
		c.inFlight[p.Name] = d
	}
	for name, pdb := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		a := pdbAfter{pdb: pdb, owners: map[string]bool{}}
		for _, o := range c.pods {
			if !sel.Matches(labels.Set(o.Labels)) {
				continue
			}
			if s := c.ownerLocked(o); s != "" {
				a.owners[s] = true
			} else {
				a.others++
			}
			if o.UID != p.UID && o.DeletionTimestamp == nil && ready(o) {
				a.healthy++
			}
		}
		d.pdbs[name] = a
	}
	c.pending = append(c.pending, d)
}

// Resolve checks the deletions whose grace has passed, or all of them.
func (c *Checker) Resolve(all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	n := 0
	for _, d := range c.pending {
		if !all && now.Sub(d.at) < Grace {
			break
		}
		c.checkLocked(d)
		n++
	}
	c.pending = c.pending[n:]
}

func (c *Checker) checkLocked(d *deletion) {
	d.resolved = true
	p := d.pod
	// PDB headroom, whoever disrupted a Ready pod.
	if d.ready {
		for name, a := range d.pdbs {
			expected := a.others
			for s := range a.owners {
				expected += int(c.sets[s].last().replicas)
			}
			want, ok := desiredHealthy(a.pdb, expected)
			if !ok {
				continue
			}
			c.checks++
			if a.healthy < want {
				c.violatef("PDB %s: deleting Ready pod %s left %d healthy, the budget wants %d", name, p.Name, a.healthy, want)
			}
		}
	}
	if d.external {
		return
	}
	c.checks++
	if d.set == "" {
		c.violatef("pod %s of another owner (%s) was deleted", p.Name, ownerString(p))
		return
	}
	st := c.sets[d.set]
	win := st.window(d.at.Add(-Grace), d.at.Add(Grace))
	if len(win) == 0 {
		win = []setAt{st.last()}
	}
	minReplicas := int32(math.MaxInt32)
	for _, h := range win {
		minReplicas = min(minReplicas, h.replicas)
	}
	ord, _ := ordinal(p.Name, d.set)
	if int32(ord) >= minReplicas {
		return // the StatefulSet controller scales down
	}
	// A StatefulSet being deleted gets no deletions from us. Only the state
	// before the deletion counts: the garbage collector's work after it is
	// not ours.
	before := st.window(d.at.Add(-Grace), d.at)
	for _, h := range before {
		if h.deleting {
			c.violatef("pod %s of StatefulSet %s was deleted while the StatefulSet was being deleted", p.Name, d.set)
			return
		}
	}
	d.byUs = true
	at := before
	if len(at) == 0 {
		at = win
	}
	now := at[len(at)-1]
	rev := p.Labels[appsv1.ControllerRevisionHashLabelKey]

	// Only outdated pods.
	c.checks++
	outdated := false
	for _, h := range win {
		if h.updateRevision != "" && h.updateRevision != rev {
			outdated = true
		}
	}
	if !outdated {
		c.violatef("pod %s of %s was deleted at revision %s, which is the update revision", p.Name, d.set, rev)
	}

	// Once per update revision.
	c.checks++
	key := d.set + "/" + p.Name + "/" + now.updateRevision
	c.perRev[key]++
	if c.perRev[key] > 1 {
		c.violatef("pod %s of %s was deleted %d times for update revision %s", p.Name, d.set, c.perRev[key], now.updateRevision)
	}

	// max-unavailable: replacements in flight.
	maxU := int32(0)
	for _, h := range win {
		maxU = max(maxU, h.maxUnavailable)
	}
	c.checks++
	inFlight := 1
	var names []string
	for _, f := range d.inFlight {
		if f.byUs {
			inFlight++
			names = append(names, f.pod.Name)
		}
	}
	if int32(inFlight) > maxU {
		sort.Strings(names)
		c.violatef("pod %s of %s was deleted with %d other replacements in flight (%s), max-unavailable is %d",
			p.Name, d.set, inFlight-1, strings.Join(names, ","), maxU)
	}
	// max-unavailable: a Ready pod is deleted only while few enough are
	// unavailable, missing ones included.
	if d.ready {
		c.checks++
		readyBelow := 0
		for _, o := range d.readyOthers {
			if int32(o) < minReplicas {
				readyBelow++
			}
		}
		unavailable := int64(minReplicas) - int64(readyBelow)
		if unavailable > int64(maxU) {
			c.violatef("Ready pod %s of %s was deleted leaving %d of %d unavailable, max-unavailable is %d",
				p.Name, d.set, unavailable, minReplicas, maxU)
		}
	}
}

// desiredHealthy is the disruption controller's count of pods a budget wants
// healthy.
func desiredHealthy(pdb *policyv1.PodDisruptionBudget, expected int) (int, bool) {
	switch {
	case pdb.Spec.MinAvailable != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, expected, true)
		return n, err == nil
	case pdb.Spec.MaxUnavailable != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, expected, true)
		return max(0, expected-n), err == nil
	}
	return 0, false
}

func ownerString(p *corev1.Pod) string {
	if ref := metav1.GetControllerOf(p); ref != nil {
		return ref.Kind + "/" + ref.Name
	}
	return "no controller"
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ordinal parses <set>-<n>.
func ordinal(pod, set string) (int, bool) {
	s, ok := strings.CutPrefix(pod, set+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

func (c *Checker) violatef(format string, args ...any) {
	c.violations = append(c.violations, c.clock.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// Stats are what a checker counted.
type Stats struct {
	Checks, Violations, Deletions, Completed int
	// Immediate counts deletions with grace period 0, not counted as
	// stsroller's (OnPodDeletedAtOnce).
	Immediate int
}

// Stats returns the counts so far.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Stats{Checks: c.checks, Violations: len(c.violations), Deletions: c.deletions, Completed: c.completed,
		Immediate: c.immediate}
}

// Violations returns what was violated so far.
func (c *Checker) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.violations...)
}

// Complete reports whether a StatefulSet's rollout is done: every ordinal
// below spec.replicas has a Ready pod, not terminating, replicas-partition
// of them at the update revision, and the status says Complete. It is an
// error saying what is missing otherwise.
func (c *Checker) Complete(set string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[set]
	if st == nil {
		return fmt.Errorf("no StatefulSet %s", set)
	}
	h := st.last()
	if h.updateRevision == "" {
		return fmt.Errorf("%s: generation not observed", set)
	}
	updated, ok := 0, 0
	for _, p := range c.pods {
		n, isOrd := ordinal(p.Name, set)
		if !isOrd || c.ownerLocked(p) != set || int32(n) >= h.replicas || p.DeletionTimestamp != nil || !ready(p) {
			continue
		}
		ok++
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] == h.updateRevision {
			updated++
		}
	}
	want := max(0, h.replicas-h.partition)
	if int32(ok) != h.replicas || int32(updated) != want {
		return fmt.Errorf("%s: %d of %d pods Ready, %d at %s (want %d)", set, ok, h.replicas, updated, h.updateRevision, want)
	}
	if h.status == nil || h.status.Phase != policy.PhaseComplete || h.status.UpdateRevision != h.updateRevision {
		return fmt.Errorf("%s: status %+v, want Complete at %s", set, h.status, h.updateRevision)
	}
	return nil
}

// CountCompleted counts a rollout that completed, for the table.
func (c *Checker) CountCompleted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.completed++
}
