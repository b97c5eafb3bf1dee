package policy

import (
	"math"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// stuckAfter is how long past the end of its grace period a terminating pod
// may take before the status names it as stuck (a finalizer, an unreachable
// node).
const stuckAfter = 30 * time.Second

// candidate is one live outdated pod the planner may remove.
type candidate struct {
	ordinal   int
	pod       *corev1.Pod
	available bool
	leader    bool
	// drain is the pod's request of this rollout (draining pods only).
	drain Drain
	// staleDrain: the pod carries a drain request that does not count (of
	// another revision, or the handshake is off).
	staleDrain bool
}

func (c *candidate) name() string { return c.pod.Name }

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
	draining []candidate
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

// take counts the StatefulSet's pods; see census.
func take(in Input) census {
	sts := in.StatefulSet
	replicas := max(Replicas(sts), 0)
	c := census{
		replicas: replicas,
		target:   max(replicas-in.Config.Partition, 0),
	}
	start := 0
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	pods := inRange(sts, in.Pods, start, int(replicas))
	c.present = int32(len(pods))

	minReady := time.Duration(sts.Spec.MinReadySeconds) * time.Second
	leader := in.Config.LeaderSelector
	if leader == nil {
		leader = labels.Nothing()
	}
	dnsOn := in.Config.DNSDomain != ""
	rev := sts.Status.UpdateRevision
	wait := func(d time.Duration) {
		if d > 0 && (c.requeue == 0 || d < c.requeue) {
			c.requeue = d
		}
	}
	for _, s := range pods {
		p := s.pod
		if _, ok := in.Removing[p.UID]; ok && p.DeletionTimestamp == nil {
			// Removed by us, not yet seen so: on its way out.
			c.terminating++
			continue
		}
		if p.DeletionTimestamp != nil {
			c.terminating++
			if end := p.DeletionTimestamp.Add(stuckAfter); !in.Now.Before(end) {
				c.stuck++
				if len(c.stuckFirst) < maxListed {
					c.stuckFirst = append(c.stuckFirst, stuckWhy(p))
				}
			} else {
				wait(end.Sub(in.Now))
			}
			continue
		}
		ready := IsRunningAndReady(p)
		dnsOK := true
		if dnsOn {
			d := in.DNS[p.Name]
			dnsOK = d.Propagated && !d.Unreachable
			if !dnsOK && p.Status.PodIP != "" {
				c.waitingDNS++
				if len(c.waitingDNSFirst) < maxListed {
					c.waitingDNSFirst = append(c.waitingDNSFirst, p.Name)
					if c.waitingDNSWhy == nil {
						c.waitingDNSWhy = map[string]string{}
					}
					c.waitingDNSWhy[p.Name] = d.Message
				}
			}
			if d.Unreachable {
				c.unreachable++
				if len(c.unreachableFirst) < maxListed {
					c.unreachableFirst = append(c.unreachableFirst, p.Name+": "+d.Message)
				}
			}
		}
		available := false
		if ready && dnsOK {
			available = true
			// Without minReadySeconds, Ready is available at once, even
			// when the kubelet's clock runs ahead of ours.
			if minReady > 0 {
				if since := in.Now.Sub(readySince(p)); since < minReady {
					available = false
					wait(minReady - since)
				}
			}
		}
		r, labelled := p.Labels[appsv1.ControllerRevisionHashLabelKey]
		updated := labelled && r == rev
		if available {
			c.available++
		}
		switch {
		case updated:
			c.updated++
			if available {
				c.updatedAvailable++
			}
			if HasDrainRequest(p) {
				c.leftover = append(c.leftover, p)
			}
		case !labelled || r == "":
			c.unlabelled = append(c.unlabelled, p.Name)
		default:
			c.outdated++
			v := candidate{ordinal: s.ordinal, pod: p, available: available, leader: leader.Matches(labels.Set(p.Labels))}
			if !v.leader {
				c.others++
			}
			dr := PodDrain(p)
			switch {
			case !ready:
				c.unhealthy = append(c.unhealthy, v)
			case in.Config.DrainTimeout > 0 && dr.For(rev):
				v.drain = dr
				c.draining = append(c.draining, v)
			default:
				v.staleDrain = HasDrainRequest(p)
				if v.leader {
					c.leaders = append(c.leaders, v)
				} else {
					c.healthy = append(c.healthy, v)
				}
			}
		}
	}
	return c
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

// slot is a pod at its ordinal.
type slot struct {
	ordinal int
	pod     *corev1.Pod
}

// inRange returns the pods at ordinals [start, start+replicas), highest
// ordinal first. Pods beyond the range (a scale-down under way) are left to
// the built-in controller.
func inRange(sts *appsv1.StatefulSet, pods []*corev1.Pod, start, replicas int) []slot {
	out := make([]slot, 0, len(pods))
	for _, p := range pods {
		if o, ok := ordinalAfter(p.Name, sts.Name); ok && o >= start && o-start < replicas {
			out = append(out, slot{o, p})
		}
	}
	// Ordinals are dense in practice: place each pod by its ordinal in
	// linear time; sort only when they are sparse (replicas far above the
	// pods that exist).
	if n := len(out); n > 1 && replicas <= 4*n {
		at := make([]int32, replicas)
		for i, s := range out {
			at[replicas-1-(s.ordinal-start)] = int32(i) + 1
		}
		sorted := make([]slot, 0, n)
		for _, i := range at {
			if i > 0 {
				sorted = append(sorted, out[i-1])
			}
		}
		return sorted
	}
	slices.SortFunc(out, func(a, b slot) int { return b.ordinal - a.ordinal })
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
