package policy

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationRolloutLock names a rollout lock the StatefulSet takes before it
// removes pods of a rollout and holds until the rollout is complete: of all
// the StatefulSets, in any cluster, that carry the same lock and share a
// coordination cluster, one rolls at a time (issue 19).
const AnnotationRolloutLock = "stsroller.io/rollout-lock"

// LeasePrefix begins the name of every lock's Lease: stsroller-lock-<name>.
const LeasePrefix = "stsroller-lock-"

// Reasons of the rollout lock.
const (
	// ReasonWaitingForLock: another StatefulSet holds the lock; status phase
	// Rolling, a Normal event.
	ReasonWaitingForLock = "WaitingForLock"
	// ReasonLockTakenOver: the holder stopped renewing for the lock's TTL and
	// this StatefulSet took the lock over; a Warning event naming the old
	// holder.
	ReasonLockTakenOver = "LockTakenOver"
	// ReasonLockAcquired and ReasonLockReleased: Normal events.
	ReasonLockAcquired = "LockAcquired"
	ReasonLockReleased = "LockReleased"
	// ReasonLockLost: the lock was held, and a renewal found another holder;
	// a Warning event.
	ReasonLockLost = "LockLost"
)

const acceptedRolloutLock = `a DNS label of at most 48 characters: lower-case letters, digits or '-', beginning and ending with a letter or digit (for example "cassandra")`

// maxLockName keeps stsroller-lock-<name> a DNS label too.
const maxLockName = validation.DNS1123LabelMaxLength - len(LeasePrefix)

// parseRolloutLock validates the lock's name.
func parseRolloutLock(v string) (string, error) {
	n := strings.TrimSpace(v)
	if len(validation.IsDNS1123Label(n)) > 0 || len(n) > maxLockName {
		return "", &ConfigError{AnnotationRolloutLock, v, acceptedRolloutLock}
	}
	return n, nil
}

// LeaseName is the name of the lock's Lease.
func LeaseName(lock string) string { return LeasePrefix + lock }

// LockHolder is the holder identity a StatefulSet takes a lock with:
// <cluster>/<namespace>/<statefulset>, or, for a member of a rollout group,
// <cluster>/<namespace>/rollout-group:<group>, so that the group holds the
// lock as one (a StatefulSet's name holds no ':', so the two never meet).
func LockHolder(cluster string, sts *appsv1.StatefulSet) string {
	if g := RolloutGroupOf(sts); g != "" {
		return cluster + "/" + sts.Namespace + "/rollout-group:" + g
	}
	return cluster + "/" + sts.Namespace + "/" + sts.Name
}

// LockNeed is what a plan needs of its lock.
type LockNeed int

const (
	// NeedNone: no rollout is under way: a lock held is released.
	NeedNone LockNeed = iota
	// NeedKeep: it deletes nothing of its own accord now (paused, invalid),
	// but a rollout may be under way: a lock held is kept, none is taken.
	NeedKeep
	// NeedTake: a rollout is under way: the lock is taken, or waited for.
	NeedTake
)

// LockNeedOf says what a plan made without the lock (Compute or
// ComputeInGroup) needs of it. Every phase of a rollout under way needs it,
// Blocked and Stalled too: a broken revision keeps the lock, which is what
// keeps it from spreading to the next region.
func LockNeedOf(st Status) LockNeed {
	switch {
	case st.Phase.Rolling():
		return NeedTake
	case st.Phase == PhasePaused, st.Phase == PhaseInvalid:
		return NeedKeep
	}
	return NeedNone
}

// Strongest is the need of a group of StatefulSets that hold one lock as one.
func (n LockNeed) Strongest(o LockNeed) LockNeed { return max(n, o) }

// LockRecord is what the shell last read of the lock's Lease.
type LockRecord struct {
	// Exists: the Lease exists.
	Exists bool
	// Holder is its spec.holderIdentity; empty when the lock is free.
	Holder string
	// AcquireTime is when the holder took it.
	AcquireTime time.Time
	// ObservedAt is when this process first saw the Lease as it is now (its
	// resourceVersion), by its own clock. Expiry is judged from it, as
	// client-go's leader election does, so that clocks of two clusters that
	// disagree cannot make a lock expire early.
	ObservedAt time.Time
	// TTL is the holder's spec.leaseDurationSeconds; 0 when not set.
	TTL time.Duration
}

// LockInput is what the lock decision looks at.
type LockInput struct {
	// Name is the lock's name; empty for none.
	Name string
	// Self is the holder identity of this StatefulSet (or its group).
	Self   string
	Need   LockNeed
	Record LockRecord
	// TTL is this stsroller's --lock-ttl, used when the Lease says none.
	TTL time.Duration
	Now time.Time
}

// LockAction is what the shell does with the Lease.
type LockAction string

const (
	// LockNone: nothing to do, nothing held.
	LockNone LockAction = "None"
	// LockTake: make this StatefulSet the holder (create the Lease, or
	// update a free or expired one).
	LockTake LockAction = "Take"
	// LockRenew: it holds the lock and keeps it.
	LockRenew LockAction = "Renew"
	// LockRelease: it holds the lock and no longer needs it.
	LockRelease LockAction = "Release"
	// LockWait: another holds it; delete only unhealthy pods.
	LockWait LockAction = "Wait"
)

// LockDecision is the lock decision.
type LockDecision struct {
	Name   string
	Action LockAction
	// Holder holds the lock once the decision is carried out; empty when none.
	Holder string
	// Since is when Holder took it; zero when it takes it now.
	Since time.Time
	// TakenFrom is the holder whose lock expired, when this takes it over.
	TakenFrom string
	// ExpiresIn is, while waiting, how long until the holder's lock expires
	// unless it renews.
	ExpiresIn time.Duration
}

// DecideLock decides what to do with the lock: take it before the first
// removal of a rollout, renew it while the rollout lasts (stuck, broken or
// paused alike), release it once the rollout is complete, and otherwise wait
// for its holder, until the holder has not renewed it for the TTL.
func DecideLock(in LockInput) LockDecision {
	d := LockDecision{Name: in.Name, Action: LockNone}
	if in.Name == "" {
		return d
	}
	r := in.Record
	held := r.Exists && r.Holder == in.Self
	free := !r.Exists || r.Holder == ""
	switch {
	case in.Need == NeedNone && held:
		d.Action = LockRelease
		return d
	case in.Need == NeedNone, in.Need == NeedKeep && !held:
		if !free {
			d.Holder, d.Since = r.Holder, r.AcquireTime
		}
		return d
	case held:
		d.Action, d.Holder, d.Since = LockRenew, in.Self, r.AcquireTime
		return d
	case free:
		d.Action, d.Holder = LockTake, in.Self
		return d
	}
	ttl := r.TTL
	if ttl <= 0 {
		ttl = in.TTL
	}
	if left := r.ObservedAt.Add(ttl).Sub(in.Now); left > 0 {
		d.Action, d.Holder, d.Since, d.ExpiresIn = LockWait, r.Holder, r.AcquireTime, left
		return d
	}
	d.Action, d.Holder, d.TakenFrom = LockTake, in.Self, r.Holder
	return d
}

// LockStatus is the lock as the status annotation shows it.
type LockStatus struct {
	// Name is the lock's name; Lease stsroller-lock-<name>.
	Name string `json:"name"`
	// Holder is the holder's identity; empty when the lock is free.
	Holder string `json:"holder,omitempty"`
	// Held: this StatefulSet (or its rollout group) is the holder.
	Held bool `json:"held,omitempty"`
	// Since is when the holder took the lock.
	Since *metav1.Time `json:"since,omitempty"`
}

// WithLock keeps a plan (Compute's or ComputeInGroup's) to what the lock
// decision allows. While it waits for the lock, a StatefulSet deletes only
// its unhealthy outdated pods (they are down already, removing them costs no
// availability), evicts none and asks none to drain: phase Rolling, reason
// WaitingForLock, a message naming the holder. Its progress deadline does
// not run meanwhile. A holder that is paused or invalid keeps the lock and
// says so. The decision's Since, when zero for a holder, is taken as now.
func WithLock(in Input, p Plan, d LockDecision) Plan {
	if d.Name == "" {
		return p
	}
	since := d.Since
	if since.IsZero() && d.Holder != "" {
		since = in.Now
	}
	ls := &LockStatus{Name: d.Name, Holder: d.Holder, Held: d.Action == LockTake || d.Action == LockRenew}
	if d.Holder != "" {
		t := metav1.NewTime(since.Truncate(time.Second))
		ls.Since = &t
	}
	if d.Action == LockRelease {
		ls.Holder, ls.Since = "", nil
	}
	p.Status.RolloutLock = ls
	st := p.Status
	switch d.Action {
	case LockRenew, LockTake:
		if !st.Phase.Rolling() && st.Phase != PhaseComplete && st.Phase != PhaseIdle {
			p.Status.Message = fmt.Sprintf("%s (this holds rollout lock %q: no other holder of it rolls meanwhile)", st.Message, d.Name)
		}
		return p
	case LockWait:
	default:
		return p
	}
	var kept []Deletion
	for _, del := range p.Deletions {
		if del.Method == MethodDelete && del.Why == RemovalUnhealthy {
			kept = append(kept, del)
		}
	}
	waiting := fmt.Sprintf("waiting for rollout lock %q (Lease %s), held by %s since %s",
		d.Name, LeaseName(d.Name), d.Holder, since.UTC().Format(time.RFC3339))
	p.Deletions = kept
	p.Status.Phase = PhaseRolling
	p.Status.Reason = ReasonWaitingForLock
	p.Status.Message = waiting
	if len(kept) > 0 {
		names := make([]string, len(kept))
		for i, del := range kept {
			names[i] = del.Pod.Name
		}
		p.Status.Reason = ReasonDeletingPods
		p.Status.Message = fmt.Sprintf("removing %s (unhealthy only, they are down already): %s", listSome(names, len(names), ", "), waiting)
	}
	p.Status.LastProgressTime = nil
	if prev := in.Previous; prev != nil && prev.Phase == PhaseRolling {
		p.Status.LastTransitionTime = prev.LastTransitionTime
	} else {
		p.Status.LastTransitionTime = metav1.NewTime(in.Now)
	}
	p.Status.bound()
	return p
}
