package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The drain handshake (stsroller.io/drain-timeout-seconds): a healthy pod chosen
// for eviction is first asked to drain, through the pod annotation
// stsroller.io/drain-requested, and evicted once it answers with
// stsroller.io/drain-complete or the timeout has passed since the request.

// Reasons of the drain handshake: the status reason while stsroller waits, and
// the per-pod events the shell records.
const (
	ReasonWaitingForDrain = "WaitingForDrain"
	ReasonDrainRequested  = "DrainRequested"
	ReasonDrainCompleted  = "DrainCompleted"
	ReasonDrainTimeout    = "DrainTimeout"
)

// MethodRequestDrain does not remove the pod: it annotates it with
// stsroller.io/drain-requested and the plan's time, so the pod's sidecar
// drains it. The eviction comes in a later plan.
const MethodRequestDrain Method = "RequestDrain"

// DrainOutcome says why a drained pod may go now.
type DrainOutcome string

const (
	// DrainNone: no handshake for this removal.
	DrainNone DrainOutcome = ""
	// DrainCompleted: the pod answered with stsroller.io/drain-complete.
	DrainCompleted DrainOutcome = "Completed"
	// DrainTimedOut: the timeout passed since the request without an answer.
	DrainTimedOut DrainOutcome = "TimedOut"
)

// Drain is where one pod stands in the handshake, read from its annotations.
type Drain struct {
	// Requested: the pod carries stsroller.io/drain-requested.
	Requested bool
	// RequestedAt is the request's time; zero when the value is not a time.
	RequestedAt time.Time
	// Complete: the pod carries stsroller.io/drain-complete.
	Complete bool
}

// PodDrain reads the handshake's annotations of a pod.
func PodDrain(pod *corev1.Pod) Drain {
	var d Drain
	v, ok := pod.Annotations[AnnotationDrainRequested]
	if !ok {
		return d
	}
	d.Requested = true
	if t, err := time.Parse(time.RFC3339, strings.TrimSpace(v)); err == nil {
		d.RequestedAt = t
	}
	_, d.Complete = pod.Annotations[AnnotationDrainComplete]
	return d
}

// Decide says whether a pod asked to drain may be evicted now, and if not, how
// long until its timeout. A request whose time cannot be read never times out
// (stsroller will not guess when it was made): only an answer releases it.
func (d Drain) Decide(timeout time.Duration, now time.Time) (DrainOutcome, time.Duration) {
	if d.Complete {
		return DrainCompleted, 0
	}
	if d.RequestedAt.IsZero() {
		return DrainNone, 0
	}
	left := d.RequestedAt.Add(timeout).Sub(now)
	if left <= 0 {
		return DrainTimedOut, 0
	}
	return DrainNone, left
}

// drained handles the pods asked to drain before any other eviction: each
// counts as unavailable from its request on and holds one disruption of every
// budget over it; once it answers or times out it is evicted, with the
// disruption it holds. It returns the room left.
func (ch *choice) drained(in Input, c *census, room int32, used map[string]int32) int32 {
	for _, v := range c.draining {
		if v.available {
			ch.unavailable++
		}
		for _, b := range in.Budgets[v.name()] {
			used[b.Name]++
		}
	}
	for i := range c.draining {
		v := &c.draining[i]
		if room <= 0 {
			ch.waiting(v.pod, v.pod.Annotations[AnnotationDrainRequested])
			continue
		}
		room--
		d, wait := drainedEviction(in, v.pod)
		if d == nil {
			ch.waiting(v.pod, v.pod.Annotations[AnnotationDrainRequested])
			if wait > 0 && (c.requeue == 0 || wait < c.requeue) {
				c.requeue = wait
			}
			continue
		}
		// The pod's own disruption is held already: the budget must allow
		// it, not one more.
		budgets := in.Budgets[v.name()]
		for _, b := range budgets {
			used[b.Name]--
		}
		held := ch.heldBack(v, budgets, used)
		for _, b := range budgets {
			used[b.Name]++
		}
		if held {
			ch.waiting(v.pod, v.pod.Annotations[AnnotationDrainRequested])
			continue
		}
		ch.deletions = append(ch.deletions, *d)
		ch.names = append(ch.names, v.name())
	}
	return room
}

func (ch *choice) waiting(pod *corev1.Pod, at string) {
	if ch.waitDrain == nil {
		ch.waitDrain = map[string]string{}
	}
	ch.waitDrain[pod.Name] = at
}

// evictOrAsk removes a healthy pod chosen for eviction: an eviction, or with
// the handshake on, a drain request first, waited for from now.
func (ch *choice) evictOrAsk(in Input, v *candidate, why string) {
	if in.Config.DrainTimeout <= 0 {
		ch.add(v, MethodEvict, why)
		return
	}
	ch.waiting(v.pod, in.Now.UTC().Format(time.RFC3339))
	ch.add(v, MethodRequestDrain, fmt.Sprintf("%s; asked to drain first (%s, evicted once it answers or after %s)",
		why, AnnotationDrainRequested, in.Config.DrainTimeout))
}

// drainedEviction is the eviction of a pod asked to drain, once it answered or
// timed out; nil while it is waited for, with how long until its timeout (0:
// no timeout to wait for).
func drainedEviction(in Input, pod *corev1.Pod) (*Deletion, time.Duration) {
	dr := PodDrain(pod)
	requested := pod.Annotations[AnnotationDrainRequested]
	switch out, left := dr.Decide(in.Config.DrainTimeout, in.Now); out {
	case DrainCompleted:
		return &Deletion{Pod: pod, Method: MethodEvict, Message: fmt.Sprintf(
			"%s answered its drain request of %s (%s): evicted", pod.Name, requested, AnnotationDrainComplete)}, 0
	case DrainTimedOut:
		return &Deletion{Pod: pod, Method: MethodEvict, Message: fmt.Sprintf(
			"%s did not answer its drain request of %s within %s: evicted anyway", pod.Name, requested, in.Config.DrainTimeout)}, 0
	default:
		return nil, left
	}
}

// onlyDrainRequests reports whether the plan removes no pod now: it only asks
// pods to drain, or does nothing.
func onlyDrainRequests(ds []Deletion) bool {
	for _, d := range ds {
		if d.Method != MethodRequestDrain {
			return false
		}
	}
	return true
}

func waitingForDrainMessage(waitDrain map[string]string, cfg Config) string {
	m := make(map[string]string, len(waitDrain))
	for n, at := range waitDrain {
		m[n] = "asked at " + at
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " (" + m[n] + ")"
	}
	return fmt.Sprintf("waiting for %d pod(s) to answer with %s or reach the drain timeout %s: %s",
		len(waitDrain), AnnotationDrainComplete, cfg.DrainTimeout, listSome(parts, len(parts), "; "))
}
