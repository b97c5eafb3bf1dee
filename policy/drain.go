package policy

import (
	"fmt"
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

// drainWhy says, for the status and the events, how a pod's drain stands.
func (d Drain) why(now time.Time) string {
	switch {
	case d.Complete:
		return "drain complete"
	case d.RequestedAt.IsZero():
		return fmt.Sprintf("asked to drain; %s is not an RFC 3339 time, so only %s releases it",
			AnnotationDrainRequested, AnnotationDrainComplete)
	}
	return fmt.Sprintf("asked to drain at %s", d.RequestedAt.UTC().Format(time.RFC3339))
}
