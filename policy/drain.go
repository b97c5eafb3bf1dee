package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The drain handshake (stsroller.io/drain-timeout-seconds): a healthy pod chosen
// for eviction is first asked to drain, through the pod annotations
// stsroller.io/drain-requested and stsroller.io/drain-revision, and evicted
// once it answers with stsroller.io/drain-complete or the timeout has passed
// since the request.
//
// Drain state belongs to one rollout, and one rule says which: a request
// counts only for the update revision it names (drain-revision), on an
// outdated pod the planner would still choose now; the request's patch
// clears any earlier answer, so an answer counts only when it was given
// after the request. Every other request stsroller finds on a pod of a
// StatefulSet it manages (a revert made the pod current, a pause, a raised
// partition, leadership that moved to the pod, a request from another
// revision or without one) is withdrawn: its annotations are removed.

// Reasons of the drain handshake: the status reason while stsroller waits, and
// the per-pod events the shell records.
const (
	ReasonWaitingForDrain = "WaitingForDrain"
	ReasonDrainRequested  = "DrainRequested"
	ReasonDrainCompleted  = "DrainCompleted"
	ReasonDrainTimeout    = "DrainTimeout"
	// ReasonDrainWithdrawn: stsroller removed a drain request it no longer
	// stands by (also on the pod).
	ReasonDrainWithdrawn = "DrainWithdrawn"
)

// MethodRequestDrain does not remove the pod: it annotates it with
// stsroller.io/drain-requested (the plan's time) and stsroller.io/drain-revision
// (the update revision), so the pod's sidecar drains it. The eviction comes
// in a later plan.
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
	// Revision is the update revision the request was made for
	// (stsroller.io/drain-revision); empty when it names none.
	Revision string
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
	if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(v)); err == nil {
		d.RequestedAt = t
	}
	d.Revision = pod.Annotations[AnnotationDrainRevision]
	_, d.Complete = pod.Annotations[AnnotationDrainComplete]
	return d
}

// For reports whether the request belongs to the rollout of revision rev.
func (d Drain) For(rev string) bool { return d.Requested && rev != "" && d.Revision == rev }

// HasDrainRequest reports whether the pod carries any part of a drain
// request of stsroller's (the request or its revision).
func HasDrainRequest(pod *corev1.Pod) bool {
	_, r := pod.Annotations[AnnotationDrainRequested]
	_, v := pod.Annotations[AnnotationDrainRevision]
	return r || v
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

// drained settles the pods asked to drain for this rollout, before any other
// eviction. A pod keeps its request while the planner would still choose it:
// within the room the partition leaves and, a leader, only once no other
// outdated pod is left; any other request is withdrawn. A pod that keeps its
// request counts as unavailable from the request on and holds one disruption
// of every budget over it. Once it answers or times out it is evicted within
// the limits of any eviction: no guard, max-unavailable with the pod itself
// counted once, every budget's headroom with its own disruption, and a leader
// only at its turn. It returns the room left.
func (ch *choice) drained(in Input, c *census, room int32, used map[string]int32, turn leaderTurn) int32 {
	var kept []*asked
	for i := range c.draining {
		v := &c.draining[i]
		switch {
		case v.leader && !turn.next:
			ch.withdraw(v.pod, fmt.Sprintf("%s is a leader now, and leaders go only once every other pod is updated", v.name))
		case room <= 0:
			ch.withdraw(v.pod, fmt.Sprintf("%s is no longer to be updated (the partition keeps it at its revision)", v.name))
		default:
			room--
			kept = append(kept, v)
			if v.available {
				ch.unavailable++
			}
			for _, b := range in.Budgets[v.name] {
				used[b.Name]++
			}
		}
	}
	ch.drainsKept = len(kept)
	maxU := in.Config.MaxUnavailable
	for _, v := range kept {
		requested := v.pod.Annotations[AnnotationDrainRequested]
		out, left := v.drain.Decide(in.Config.DrainTimeout, in.Now)
		if out == DrainNone {
			ch.waiting(v.pod, requested, "asked at "+requested)
			if left > 0 && (c.requeue == 0 || left < c.requeue) {
				c.requeue = left
			}
			continue
		}
		answer := "answered"
		if out == DrainTimedOut {
			answer = "timed out"
		}
		switch {
		case ch.guard != nil:
			ch.waiting(v.pod, requested, answer+"; held: "+ch.guard.reason)
			continue
		case v.leader && (!turn.now || ch.leaderGone):
			ch.waiting(v.pod, requested, answer+"; the leader waits until every other pod is updated and available")
			continue
		case ch.unavailable > maxU:
			ch.waiting(v.pod, requested, fmt.Sprintf("%s; held: %d of %d pods unavailable or draining (max-unavailable %d)",
				answer, ch.unavailable, c.replicas, maxU))
			continue
		}
		// The pod's own disruption is held already: the budget must allow
		// it, not one more.
		budgets := in.Budgets[v.name]
		for _, b := range budgets {
			used[b.Name]--
		}
		held := ch.heldBack(&v.candidate, budgets, used)
		for _, b := range budgets {
			used[b.Name]++
		}
		if held {
			ch.waiting(v.pod, requested, answer+"; held by its PodDisruptionBudget")
			continue
		}
		if out == DrainCompleted {
			ch.add(&v.candidate, MethodEvict, RemovalDrained, fmt.Sprintf(
				"%s answered its drain request of %s (%s): evicted", v.name, requested, AnnotationDrainComplete))
		} else {
			ch.add(&v.candidate, MethodEvict, RemovalDrainTimedOut, fmt.Sprintf(
				"%s did not answer its drain request of %s within %s: evicted anyway", v.name, requested, in.Config.DrainTimeout))
		}
		if v.leader {
			ch.leaderGone = true
		}
	}
	return room
}

// waiting records a pod that keeps its drain request and is not evicted now:
// the request's time for the status, and where it stands for the message.
func (ch *choice) waiting(pod *corev1.Pod, at, note string) {
	if ch.waitDrain == nil {
		ch.waitDrain = map[string]string{}
		ch.drainNotes = map[string]string{}
	}
	ch.waitDrain[pod.Name] = at
	ch.drainNotes[pod.Name] = note
}

// withdraw records a drain request to remove.
func (ch *choice) withdraw(pod *corev1.Pod, why string) {
	ch.withdrawals = append(ch.withdrawals, Withdrawal{Pod: pod, Message: "drain request withdrawn: " + why})
}

// evictOrAsk removes a healthy pod chosen for eviction: an eviction, or with
// the handshake on, a drain request first.
func (ch *choice) evictOrAsk(in Input, v *candidate, why Removal, msg string) {
	if in.Config.DrainTimeout <= 0 {
		ch.add(v, MethodEvict, why, msg)
		return
	}
	ch.add(v, MethodRequestDrain, RemovalDrainRequest, fmt.Sprintf("%s; asked to drain first (%s, evicted once it answers or after %s)",
		msg, AnnotationDrainRequested, in.Config.DrainTimeout))
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

// waitingForDrainMessage says which pods are asked now and where the pods
// asked before stand, naming at most maxListed of each.
func waitingForDrainMessage(ch *choice, cfg Config) string {
	var asked []string
	for _, d := range ch.deletions {
		if d.Method == MethodRequestDrain {
			asked = append(asked, d.Pod.Name)
		}
	}
	names := make([]string, 0, len(ch.drainNotes))
	for n := range ch.drainNotes {
		names = append(names, n)
	}
	slices.Sort(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " (" + ch.drainNotes[n] + ")"
	}
	var out []string
	if len(asked) > 0 {
		out = append(out, "asking "+listSome(asked, len(asked), ", ")+" to drain")
	}
	if len(parts) > 0 {
		out = append(out, fmt.Sprintf("waiting for %d pod(s) to answer with %s or reach the drain timeout %s: %s",
			len(parts), AnnotationDrainComplete, cfg.DrainTimeout, listSome(parts, len(parts), "; ")))
	}
	return strings.Join(out, "; ")
}

// boundedDrains keeps at most maxListed of the pods waiting for drain, the
// highest ordinals first, and counts them all, so the status stays small
// however many pods a StatefulSet has.
func boundedDrains(all map[string]string) (map[string]string, int32) {
	if len(all) <= maxListed {
		return all, int32(len(all))
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	// Names differ only in their ordinal: longer is higher.
	slices.SortFunc(names, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(b, a)
	})
	out := make(map[string]string, maxListed)
	for _, n := range names[:maxListed] {
		out[n] = all[n]
	}
	return out, int32(len(all))
}
