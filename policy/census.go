package policy

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// stuckAfter is how long past the end of its grace period a terminating pod
// may take before the status names it as stuck (a finalizer, an unreachable
// node).
const stuckAfter = 30 * time.Second

// candidate is one live outdated pod the planner may remove. It is kept
// small: a StatefulSet may have thousands.
type candidate struct {
	pod *corev1.Pod
	// name is the pod's, copied while the census counts the pod: choose
	// looks the budgets up by it without going back to the pod.
	name      string
	ordinal   int32
	available bool
	leader    bool
	// staleDrain: the pod carries a drain request that does not count (of
	// another revision, or the handshake is off).
	staleDrain bool
}

// asked is a candidate asked to drain for this rollout, with its request.
type asked struct {
	candidate
	drain Drain
}

// census is step 1 of a plan: what the StatefulSet's pods are, counted over
// the ordinals it should have. Missing ordinals are counted, never
// materialised, so its cost grows with the pods that exist, not with
// spec.replicas.
type census struct {
	replicas, target int32
	// present counts pods at an ordinal in range, live or terminating.
	present     int32
	terminating int32
	// Over live pods in range (not terminating).
	updated, available, updatedAvailable int32
	// outdated counts live pods at another revision that have one.
	outdated int32
	// unlabelled names live pods with no controller-revision-hash label:
	// their revision cannot be told, so they are never removed.
	unlabelled []string

	// Outdated live pods by kind, highest ordinal first: not Ready, Ready
	// leaders, Ready others.
	unhealthy, leaders, healthy []candidate
	// draining: Ready outdated pods asked to drain for this rollout (the
	// handshake on, the request naming the update revision), leaders
	// included, highest ordinal first.
	draining []asked
	// others counts live outdated pods that are not leaders, of every kind.
	others int32
	// leftover: live pods at the update revision that carry a drain
	// request (a revert made them current): it counts no more.
	leftover []*corev1.Pod

	// waitingDNS: pods with an IP whose name has not propagated; the first
	// maxListed (highest ordinal first) with why.
	waitingDNS      int32
	waitingDNSFirst []string
	waitingDNSWhy   map[string]string
	// unreachable: live pods a DNS server could not be asked about.
	unreachable      int
	unreachableFirst []string
	// stuck names terminating pods past their grace period by stuckAfter.
	stuck      int
	stuckFirst []string

	// scratch is the memory of the slices above, until release.
	scratch *scratch

	// requeue is when a pod passes minReadySeconds, or a terminating pod
	// turns stuck: the plan changes then though nothing else does.
	requeue time.Duration
}

// missing counts the ordinals in range with no pod: the built-in controller
// creates them at the update revision.
func (c *census) missing() int32 { return c.replicas - c.present }

// unavailable counts ordinals in range without an available pod, so pods
// that are already unavailable count against max-unavailable.
func (c *census) unavailable() int32 { return c.replicas - c.available }

// coming counts pods that are, or will be, at the update revision: updated
// live pods, and missing or terminating ones, which the built-in controller
// recreates at the update revision.
func (c *census) coming() int32 { return c.missing() + c.terminating + c.updated }

// inFlight counts replacements not yet available: missing, terminating, and
// updated pods that are not available.
func (c *census) inFlight() int32 {
	return c.missing() + c.terminating + c.updated - c.updatedAvailable
}

// room is how many more pods may be removed before replicas - partition are
// updated or on their way.
func (c *census) room() int32 { return c.target - c.coming() }

// workLeft: outdated pods remain and the target is not reached.
func (c *census) workLeft() bool {
	return c.outdated+int32(len(c.unlabelled)) > 0 && c.coming() < c.target
}

// replacementsPending: fewer pods are updated and available than are, or
// will be, updated, counted up to the target.
func (c *census) replacementsPending() bool {
	return c.updatedAvailable < min(c.coming(), c.target)
}

// take counts the StatefulSet's pods; see census. It reads each pod once,
// in the order of Input.Pods, into a small fact (read), then counts the
// facts highest ordinal first (count): a StatefulSet may have thousands of
// pods, and going to one is what costs. Call release once the plan is made.
func take(in Input) census {
	sts := in.StatefulSet
	replicas := max(Replicas(sts), 0)
	c := census{
		replicas: replicas,
		target:   max(replicas-in.Config.Partition, 0),
	}
	r := newReader(in)
	sc := scratches.Get().(*scratch)
	c.scratch = sc
	sc.facts = resize(sc.facts, len(in.Pods))
	facts := sc.facts
	var kinds [podKinds]int
	n := 0
	for i, p := range in.Pods {
		f := r.read(p)
		facts[i] = f
		if f.ordinal >= 0 {
			n++
			kinds[f.kind]++
		}
	}
	if k := kinds[podUnhealthy] + kinds[podLeader] + kinds[podHealthy]; k > 0 {
		// One slice for the candidates of every kind, each kind its
		// part: nothing grows by appending. Sized before duplicates are
		// dropped, so it may be a little long.
		sc.slab = resize(sc.slab, k)
		slab := sc.slab
		c.unhealthy, slab = slab[:0:kinds[podUnhealthy]], slab[kinds[podUnhealthy]:]
		c.leaders, c.healthy = slab[:0:kinds[podLeader]], slab[kinds[podLeader]:][:0]
	}
	if k := kinds[podDraining]; k > 0 {
		c.draining = make([]asked, 0, k)
	}
	for _, i := range inRange(sc, facts, r.start, int(replicas), n) {
		c.count(&r, in.Pods[i], facts[i])
	}
	return c
}

// scratch is take's working memory, reused from plan to plan: a
// StatefulSet of 10,000 pods needs about 330 kB of it, and fresh memory
// for each plan costs more than reusing it (cache misses, garbage
// collections). No plan refers to it once made.
type scratch struct {
	facts []fact      // by index in Input.Pods
	at    []int32     // inRange's pods by ordinal
	slab  []candidate // census.unhealthy, leaders and healthy
}

var scratches = sync.Pool{New: func() any { return new(scratch) }}

// release gives the census's scratch back, once the plan is made.
func (c *census) release() {
	if c.scratch == nil {
		return
	}
	clear(c.scratch.slab) // no pod kept alive by it
	scratches.Put(c.scratch)
	*c = census{}
}

// resize returns s with length n, in its own array when that is large
// enough. The elements are not cleared.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// podKind is what a pod in range is to the census.
type podKind uint8

const (
	podTerminating podKind = iota
	podUpdated
	podUnlabelled
	// The kinds of outdated live pods, the candidates.
	podUnhealthy
	podDraining
	podLeader
	podHealthy
	podKinds
)

// fact is what the census needs of one pod, read once.
type fact struct {
	// ordinal is the pod's, -1 when the pod is outside the range.
	ordinal int32
	kind    podKind
	flags   factFlags
}

type factFlags uint8

const (
	factAvailable factFlags = 1 << iota
	factLeader
	// factStaleDrain: see candidate.staleDrain.
	factStaleDrain
	// factDrainRequest: an updated pod with a drain request (leftover).
	factDrainRequest
	// factStuck: terminating past its grace period by stuckAfter.
	factStuck
	// factWait: the pod's state changes with time (a terminating pod
	// turns stuck, a Ready pod passes minReadySeconds): count asks when.
	factWait
	// factWaitingDNS, factUnreachable: see census.waitingDNS, unreachable.
	factWaitingDNS
	factUnreachable
)

func (f fact) has(fl factFlags) bool { return f.flags&fl != 0 }

// reader reads pods into facts.
type reader struct {
	in         Input
	name, rev  string
	start      int
	replicas   int
	minReady   time.Duration
	leader     labels.Selector
	dnsOn      bool
	drainOn    bool
	removingOn bool
}

func newReader(in Input) reader {
	sts := in.StatefulSet
	r := reader{
		in:         in,
		name:       sts.Name,
		rev:        sts.Status.UpdateRevision,
		replicas:   int(max(Replicas(sts), 0)),
		minReady:   time.Duration(sts.Spec.MinReadySeconds) * time.Second,
		leader:     in.Config.LeaderSelector,
		dnsOn:      in.Config.DNSDomain != "",
		drainOn:    in.Config.DrainTimeout > 0,
		removingOn: len(in.Removing) > 0,
	}
	if sts.Spec.Ordinals != nil {
		r.start = int(sts.Spec.Ordinals.Start)
	}
	if r.leader == nil {
		r.leader = labels.Nothing()
	}
	return r
}

// read is what the census needs of the pod. Pods beyond the range (a
// scale-down under way) are left to the built-in controller.
func (r *reader) read(p *corev1.Pod) fact {
	o, ok := ordinalAfter(p.Name, r.name)
	if !ok || o < r.start || o-r.start >= r.replicas {
		return fact{ordinal: -1}
	}
	f := fact{ordinal: int32(o), kind: podTerminating}
	if r.removingOn && p.DeletionTimestamp == nil {
		if _, ok := r.in.Removing[p.UID]; ok {
			// Removed by us, not yet seen so: on its way out.
			return f
		}
	}
	if p.DeletionTimestamp != nil {
		if !r.in.Now.Before(p.DeletionTimestamp.Add(stuckAfter)) {
			f.flags |= factStuck
		} else {
			f.flags |= factWait
		}
		return f
	}
	ready := IsRunningAndReady(p)
	dnsOK := true
	if r.dnsOn {
		d := r.in.DNS[p.Name]
		dnsOK = d.Propagated && !d.Unreachable
		if !dnsOK && p.Status.PodIP != "" {
			f.flags |= factWaitingDNS
		}
		if d.Unreachable {
			f.flags |= factUnreachable
		}
	}
	if ready && dnsOK {
		f.flags |= factAvailable
		// Without minReadySeconds, Ready is available at once, even
		// when the kubelet's clock runs ahead of ours.
		if r.minReady > 0 && r.in.Now.Sub(readySince(p)) < r.minReady {
			f.flags &^= factAvailable
			f.flags |= factWait
		}
	}
	rev, labelled := p.Labels[appsv1.ControllerRevisionHashLabelKey]
	switch {
	case labelled && rev == r.rev:
		f.kind = podUpdated
		if HasDrainRequest(p) {
			f.flags |= factDrainRequest
		}
	case !labelled || rev == "":
		f.kind = podUnlabelled
	default:
		if r.leader.Matches(labels.Set(p.Labels)) {
			f.flags |= factLeader
		}
		switch {
		case !ready:
			f.kind = podUnhealthy
		case r.drainOn && PodDrain(p).For(r.rev):
			f.kind = podDraining
		default:
			if HasDrainRequest(p) {
				f.flags |= factStaleDrain
			}
			f.kind = podHealthy
			if f.has(factLeader) {
				f.kind = podLeader
			}
		}
	}
	return f
}

// count adds a pod in range, read as f, to the census. It reads the pod
// again only for what it names, and for when it changes.
func (c *census) count(r *reader, p *corev1.Pod, f fact) {
	c.present++
	wait := func(d time.Duration) {
		if d > 0 && (c.requeue == 0 || d < c.requeue) {
			c.requeue = d
		}
	}
	if f.kind == podTerminating {
		c.terminating++
		switch {
		case f.has(factStuck):
			c.stuck++
			if len(c.stuckFirst) < maxListed {
				c.stuckFirst = append(c.stuckFirst, stuckWhy(p))
			}
		case f.has(factWait):
			wait(p.DeletionTimestamp.Add(stuckAfter).Sub(r.in.Now))
		}
		return
	}
	if f.has(factWaitingDNS) {
		c.waitingDNS++
		if len(c.waitingDNSFirst) < maxListed {
			c.waitingDNSFirst = append(c.waitingDNSFirst, p.Name)
			if c.waitingDNSWhy == nil {
				c.waitingDNSWhy = map[string]string{}
			}
			c.waitingDNSWhy[p.Name] = r.in.DNS[p.Name].Message
		}
	}
	if f.has(factUnreachable) {
		c.unreachable++
		if len(c.unreachableFirst) < maxListed {
			c.unreachableFirst = append(c.unreachableFirst, p.Name+": "+r.in.DNS[p.Name].Message)
		}
	}
	if f.has(factWait) {
		wait(r.minReady - r.in.Now.Sub(readySince(p)))
	}
	available := f.has(factAvailable)
	if available {
		c.available++
	}
	switch f.kind {
	case podUpdated:
		c.updated++
		if available {
			c.updatedAvailable++
		}
		if f.has(factDrainRequest) {
			c.leftover = append(c.leftover, p)
		}
		return
	case podUnlabelled:
		c.unlabelled = append(c.unlabelled, p.Name)
		return
	}
	c.outdated++
	v := candidate{pod: p, name: p.Name, ordinal: f.ordinal, available: available, leader: f.has(factLeader), staleDrain: f.has(factStaleDrain)}
	if !v.leader {
		c.others++
	}
	switch f.kind {
	case podUnhealthy:
		c.unhealthy = append(c.unhealthy, v)
	case podDraining:
		c.draining = append(c.draining, asked{v, PodDrain(p)})
	case podLeader:
		c.leaders = append(c.leaders, v)
	default:
		c.healthy = append(c.healthy, v)
	}
}

// withdrawAll withdraws every drain request on the StatefulSet's live pods.
func (c *census) withdrawAll(why string) []Withdrawal {
	var out []Withdrawal
	add := func(p *corev1.Pod) {
		out = append(out, Withdrawal{Pod: p, Message: "drain request withdrawn: " + why})
	}
	for _, p := range c.leftover {
		add(p)
	}
	for _, v := range c.draining {
		add(v.pod)
	}
	for _, vs := range [][]candidate{c.leaders, c.healthy} {
		for _, v := range vs {
			if v.staleDrain {
				add(v.pod)
			}
		}
	}
	for _, v := range c.unhealthy {
		if HasDrainRequest(v.pod) {
			add(v.pod)
		}
	}
	return out
}

// inRange returns the indexes of the n pods read in range, highest ordinal
// first, in sc's memory.
func inRange(sc *scratch, facts []fact, start, replicas, n int) []int32 {
	// Ordinals are dense in practice: place each pod by its ordinal in
	// linear time; sort only when they are sparse (replicas far above the
	// pods that exist).
	if n > 1 && replicas <= 4*n {
		sc.at = resize(sc.at, replicas)
		at := sc.at
		clear(at)
		for i, f := range facts {
			if f.ordinal >= 0 {
				at[replicas-1-(int(f.ordinal)-start)] = int32(i) + 1
			}
		}
		// out shares at's array: the k-th pod found goes to index k,
		// which the loop has read already.
		out := at[:0]
		for _, i := range at {
			if i > 0 {
				out = append(out, i-1)
			}
		}
		return out
	}
	sc.at = resize(sc.at, n)
	out := sc.at[:0]
	for i, f := range facts {
		if f.ordinal >= 0 {
			out = append(out, int32(i))
		}
	}
	slices.SortFunc(out, func(a, b int32) int { return int(facts[b].ordinal) - int(facts[a].ordinal) })
	return out
}

// stuckWhy names a pod stuck terminating, and what holds it.
func stuckWhy(p *corev1.Pod) string {
	s := p.Name + " (terminating since its grace period ended at " + p.DeletionTimestamp.UTC().Format(time.RFC3339)
	if len(p.Finalizers) > 0 {
		s += "; finalizers: " + strings.Join(p.Finalizers, ", ")
	}
	if p.Spec.NodeName != "" {
		s += "; node " + p.Spec.NodeName
	}
	return s + ")"
}

// Ordinal parses the pod's ordinal from its name, <statefulset>-<ordinal>.
func Ordinal(sts *appsv1.StatefulSet, pod *corev1.Pod) (int, bool) {
	return ordinalAfter(pod.Name, sts.Name)
}

// ordinalAfter parses name as prefix-<ordinal>: digits only, without leading
// zeros, the one spelling the StatefulSet controller gives an ordinal.
func ordinalAfter(name, prefix string) (int, bool) {
	if len(name) < len(prefix)+2 || name[len(prefix)] != '-' || name[:len(prefix)] != prefix {
		return 0, false
	}
	s := name[len(prefix)+1:]
	if len(s) > 1 && s[0] == '0' || len(s) > 10 {
		return 0, false
	}
	o := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		o = o*10 + int(c-'0')
	}
	if o > math.MaxInt32 {
		return 0, false
	}
	return o, true
}

// Revision is the pod's controller-revision-hash label.
func Revision(pod *corev1.Pod) string {
	return pod.Labels[appsv1.ControllerRevisionHashLabelKey]
}

// IsRunningAndReady reports whether the pod runs and its Ready condition
// (which includes every readiness gate) is True.
func IsRunningAndReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	c := podCondition(pod, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func readySince(pod *corev1.Pod) time.Time {
	if c := podCondition(pod, corev1.PodReady); c != nil {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// unhealthyWhy names what is wrong with a pod that is not ready.
func unhealthyWhy(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
	}
	if pod.Status.Phase != corev1.PodRunning {
		return string(pod.Status.Phase)
	}
	return "NotReady"
}
