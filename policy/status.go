package policy

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phase is where a StatefulSet's rollout stands.
type Phase string

const (
	// PhaseIdle: every pod is at the update revision and no rollout was seen.
	PhaseIdle Phase = "Idle"
	// PhaseRolling: outdated pods remain, or replacements are not yet available.
	PhaseRolling Phase = "Rolling"
	// PhasePaused: stsroller.io/paused is "true"; nothing is deleted.
	PhasePaused Phase = "Paused"
	// PhaseBlocked: outdated pods remain but a guard forbids deleting any now.
	PhaseBlocked Phase = "Blocked"
	// PhaseStalled: no pod became updated and available within the progress deadline.
	PhaseStalled Phase = "Stalled"
	// PhaseComplete: a rollout finished: the target number of pods is updated and available.
	PhaseComplete Phase = "Complete"
	// PhaseInvalid: the configuration cannot be acted on; nothing is deleted.
	PhaseInvalid Phase = "Invalid"
)

// Rolling reports whether the phase belongs to a rollout under way, the phases
// during which the progress deadline runs.
func (p Phase) Rolling() bool {
	return p == PhaseRolling || p == PhaseBlocked || p == PhaseStalled
}

// Reasons: each is both the status reason and, where an event is due, the
// event reason. They are constant; messages carry the details.
const (
	ReasonNotOnDelete              = "NotOnDelete"
	ReasonInvalidConfig            = "InvalidConfig"
	ReasonPaused                   = "Paused"
	ReasonGenerationNotObserved    = "GenerationNotObserved"
	ReasonWaitingForDeletion       = "WaitingForDeletion"
	ReasonMultiplePDBs             = "MultiplePDBs"
	ReasonBlockedByPDB             = "BlockedByPDB"
	ReasonEvictionBlocked          = "EvictionBlocked"
	ReasonDNSGateDeadlock          = "DNSGateDeadlock"
	ReasonDNSUnreachable           = "DNSUnreachable"
	ReasonWaitingForDNS            = "WaitingForDNS"
	ReasonWaitingForAvailability   = "WaitingForAvailability"
	ReasonDeletingPods             = "DeletingPods"
	ReasonRolloutStarted           = "RolloutStarted"
	ReasonRolloutComplete          = "RolloutComplete"
	ReasonUpToDate                 = "UpToDate"
	ReasonProgressDeadlineExceeded = "ProgressDeadlineExceeded"
	// ReasonStatefulSetDeleting: the StatefulSet has a deletionTimestamp;
	// none of its pods is removed, since they may never come back.
	ReasonStatefulSetDeleting = "StatefulSetDeleting"
	// ReasonUnknownRevision: the only pods left to update have no
	// controller-revision-hash label, so their revision cannot be told and
	// stsroller leaves them alone.
	ReasonUnknownRevision = "UnknownRevision"

	// Per pod, on the StatefulSet and the pod.
	ReasonDeletedUnhealthyPod = "DeletedUnhealthyPod"
	ReasonEvictedPod          = "EvictedPod"
	ReasonDNSPropagated       = "DNSPropagated"
	ReasonDNSNotPropagated    = "DNSNotPropagated"
)

// Status is the JSON object stsroller writes to the stsroller.io/status
// annotation of each StatefulSet it manages.
type Status struct {
	Phase          Phase  `json:"phase"`
	UpdateRevision string `json:"updateRevision,omitempty"`
	Replicas       int32  `json:"replicas"`
	// Updated counts pods at the update revision (terminating ones excluded).
	Updated int32 `json:"updated"`
	// Available counts available pods of any revision.
	Available int32 `json:"available"`
	// UpdatedAvailable counts pods that are both; the progress deadline watches it.
	UpdatedAvailable   int32       `json:"updatedAvailable"`
	Reason             string      `json:"reason,omitempty"`
	Message            string      `json:"message,omitempty"`
	LastTransitionTime metav1.Time `json:"lastTransitionTime"`
	// LastProgressTime is when UpdatedAvailable last grew during this rollout.
	LastProgressTime *metav1.Time `json:"lastProgressTime,omitempty"`
	// WaitingForDNSCount counts the pods the DNS gate holds.
	WaitingForDNSCount int32 `json:"waitingForDNSCount,omitempty"`
	// WaitingForDNS names the first of them (at most 10, highest ordinal
	// first), with why.
	WaitingForDNS map[string]string `json:"waitingForDNS,omitempty"`
	// WaitingForDrain names the first pods asked to drain and not yet
	// evicted (at most 10, highest ordinal first), with the time of the
	// request (RFC 3339); WaitingForDrainCount counts them all.
	WaitingForDrain      map[string]string `json:"waitingForDrain,omitempty"`
	WaitingForDrainCount int32             `json:"waitingForDrainCount,omitempty"`
	// HealthGate is the Prometheus health gate's state, with the gate on.
	HealthGate *HealthGateStatus `json:"healthGate,omitempty"`
	// ObservedGeneration is the StatefulSet generation this status describes.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// RolloutLock is the StatefulSet's rollout lock, its holder and since
	// when; nil without stsroller.io/rollout-lock.
	RolloutLock *LockStatus `json:"rolloutLock,omitempty"`
}

// ParseStatus reads the status annotation; a missing or unreadable one is nil.
func ParseStatus(annotations map[string]string) *Status {
	v, ok := annotations[AnnotationStatus]
	if !ok {
		return nil
	}
	var s Status
	if err := json.Unmarshal([]byte(v), &s); err != nil || s.Phase == "" {
		return nil
	}
	return &s
}

// Bounds on what a status holds, so the annotation stays far below the API
// server's 256 KiB limit on all annotations, however many pods a StatefulSet
// has: a message of at most maxMessage bytes (lists in it name at most
// maxListed items of at most maxItem bytes each), and at most maxListed pods
// waiting for DNS, each with a reason of at most maxWhy bytes.
const (
	maxMessage = 2048
	maxWhy     = 120
	maxItem    = 300
)

// bound cuts the status's texts to their bounds.
func (s *Status) bound() {
	s.Message = Truncate(s.Message, maxMessage)
	for n, why := range s.WaitingForDNS {
		s.WaitingForDNS[n] = Truncate(why, maxWhy)
	}
	for n, at := range s.WaitingForDrain {
		s.WaitingForDrain[n] = Truncate(at, maxWhy)
	}
}

// Truncate cuts s to at most n bytes, on a rune boundary, marking the cut:
// what the status and messages keep of a long text.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Encode renders the status as the annotation's value.
func (s *Status) Encode() string {
	b, err := json.Marshal(s)
	if err != nil {
		// Status holds only strings, numbers and times.
		panic(fmt.Sprintf("encoding status: %v", err))
	}
	return string(b)
}

// SameAs reports whether two statuses say the same, ignoring the times, so a
// status is only written when something a user reads changed.
func (s *Status) SameAs(o *Status) bool {
	if s == nil || o == nil {
		return s == o
	}
	a, b := *s, *o
	a.LastTransitionTime, b.LastTransitionTime = metav1.Time{}, metav1.Time{}
	if (a.LastProgressTime == nil) != (b.LastProgressTime == nil) ||
		(a.LastProgressTime != nil && !a.LastProgressTime.Equal(b.LastProgressTime)) {
		return false
	}
	a.LastProgressTime, b.LastProgressTime = nil, nil
	return a.Encode() == b.Encode()
}

// Event is one Kubernetes Event to record on the StatefulSet.
type Event struct {
	Type    string // corev1.EventTypeNormal or corev1.EventTypeWarning
	Reason  string
	Message string
}

// warningReasons are the status reasons that are reported as Warning events.
var warningReasons = map[string]bool{
	ReasonNotOnDelete:              true,
	ReasonInvalidConfig:            true,
	ReasonMultiplePDBs:             true,
	ReasonBlockedByPDB:             true,
	ReasonEvictionBlocked:          true,
	ReasonDNSGateDeadlock:          true,
	ReasonDNSUnreachable:           true,
	ReasonProgressDeadlineExceeded: true,
	ReasonUnknownRevision:          true,
	ReasonHealthGateError:          true,
	ReasonHealthGateFailed:         true,
}

// quietReasons change too often, or say too little, to be worth an event:
// the status annotation carries them.
var quietReasons = map[string]bool{
	ReasonGenerationNotObserved:  true,
	ReasonWaitingForDeletion:     true,
	ReasonWaitingForAvailability: true,
	ReasonDeletingPods:           true,
	ReasonWaitingForDrain:        true,
	ReasonUpToDate:               true,
}

// Events says which events a status change deserves: one when the reason
// changes to one worth telling, and RolloutStarted when a rollout begins.
// Per-pod events (which pod was removed, and how) come from the shell, which
// knows whether the deletion succeeded.
func Events(prev, next *Status) []Event {
	var out []Event
	prevRolling := prev != nil && prev.Phase.Rolling() && prev.UpdateRevision == next.UpdateRevision
	if next.Phase.Rolling() && !prevRolling {
		out = append(out, Event{corev1.EventTypeNormal, ReasonRolloutStarted,
			fmt.Sprintf("Rolling out revision %s to %d pods", next.UpdateRevision, next.Replicas)})
	}
	if prev != nil && prev.Phase == next.Phase && prev.Reason == next.Reason {
		return out
	}
	if quietReasons[next.Reason] {
		return out
	}
	typ := corev1.EventTypeNormal
	if warningReasons[next.Reason] {
		typ = corev1.EventTypeWarning
	}
	return append(out, Event{typ, next.Reason, next.Message})
}
