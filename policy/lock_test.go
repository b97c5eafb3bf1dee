package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	self  = "eu/ns/web"
	other = "us/ns/web"
	ttl   = 10 * time.Minute
)

func TestParseRolloutLock(t *testing.T) {
	cfg, err := ParseConfig(newSet(3, ann(AnnotationRolloutLock, " cassandra ", AnnotationRolloutGroup, "db")))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if cfg.RolloutLock != "cassandra" || cfg.RolloutGroup != "db" {
		t.Errorf("RolloutLock, RolloutGroup = %q, %q; want cassandra, db", cfg.RolloutLock, cfg.RolloutGroup)
	}
	if _, err := ParseConfig(newSet(3, ann(AnnotationRolloutLock, strings.Repeat("l", 48)))); err != nil {
		t.Errorf("a name of 48 characters: %v", err)
	}
	if got := LeaseName("cassandra"); got != "stsroller-lock-cassandra" {
		t.Errorf("LeaseName = %q", got)
	}
}

func TestLockHolder(t *testing.T) {
	if got := LockHolder("eu", newSet(3, nil)); got != "eu/ns/web" {
		t.Errorf("alone: %q", got)
	}
	if got := LockHolder("eu", newSet(3, ann(AnnotationRolloutGroup, "db"))); got != "eu/ns/rollout-group:db" {
		t.Errorf("in a group: %q", got)
	}
}

func TestLockNeedOf(t *testing.T) {
	for phase, want := range map[Phase]LockNeed{
		PhaseRolling: NeedTake, PhaseBlocked: NeedTake, PhaseStalled: NeedTake,
		PhasePaused: NeedKeep, PhaseInvalid: NeedKeep,
		PhaseIdle: NeedNone, PhaseComplete: NeedNone,
	} {
		if got := LockNeedOf(Status{Phase: phase}); got != want {
			t.Errorf("%s: need %d, want %d", phase, got, want)
		}
	}
}

// TestLockRollouts runs the whole of a rollout with a lock through Compute,
// DecideLock and WithLock, one table row a step: what the pods are, what the
// Lease says, and what the StatefulSet then does.
func TestLockRollouts(t *testing.T) {
	acquired := t0.Add(-time.Hour)
	mine := LockRecord{Exists: true, Holder: self, AcquireTime: acquired, ObservedAt: t0.Add(-time.Minute), TTL: ttl}
	theirs := LockRecord{Exists: true, Holder: other, AcquireTime: acquired, ObservedAt: t0.Add(-time.Minute), TTL: ttl}
	expired := theirs
	expired.ObservedAt = t0.Add(-ttl)
	noTTL := theirs
	noTTL.TTL = 0
	noTTL.ObservedAt = t0.Add(-ttl + time.Second)
	free := LockRecord{Exists: true, AcquireTime: acquired, ObservedAt: t0}
	type want struct {
		action    LockAction
		takenFrom string
		deletions []deletion
		phase     Phase
		reason    string
		message   string // a part of the status message
		held      bool
	}
	tests := []struct {
		name        string
		annotations map[string]string
		pods        []string
		record      LockRecord
		// rolling: the last status said Rolling since an hour.
		rolling bool
		want    want
	}{
		{name: "take: no Lease yet, before the first removal", pods: []string{"o", "o", "o"}, record: LockRecord{},
			want: want{action: LockTake, deletions: []deletion{evict("web-2")}, phase: PhaseRolling, reason: ReasonDeletingPods, held: true}},
		{name: "take: a free Lease", pods: []string{"o", "o", "o"}, record: free,
			want: want{action: LockTake, deletions: []deletion{evict("web-2")}, phase: PhaseRolling, reason: ReasonDeletingPods, held: true}},
		{name: "renew while rolling", pods: []string{"o", "o", "n"}, record: mine,
			want: want{action: LockRenew, deletions: []deletion{evict("web-1")}, phase: PhaseRolling, reason: ReasonDeletingPods, held: true}},
		{name: "renew while broken: the new revision does not turn ready", pods: []string{"o", "o", "N"}, record: mine,
			want: want{action: LockRenew, phase: PhaseRolling, reason: ReasonWaitingForAvailability, held: true}},
		{name: "renew while broken and stalled", annotations: ann(AnnotationProgressDeadlineSeconds, "1"), pods: []string{"o", "o", "N"}, record: mine, rolling: true,
			want: want{action: LockRenew, phase: PhaseStalled, reason: ReasonProgressDeadlineExceeded, held: true}},
		{name: "renew while paused, and say so", annotations: ann(AnnotationPaused, "true"), pods: []string{"o", "o", "n"}, record: mine,
			want: want{action: LockRenew, phase: PhasePaused, reason: ReasonPaused, message: `this holds rollout lock "db"`, held: true}},
		{name: "a paused StatefulSet takes no lock", annotations: ann(AnnotationPaused, "true"), pods: []string{"o", "o", "o"}, record: LockRecord{},
			want: want{action: LockNone, phase: PhasePaused, reason: ReasonPaused}},
		{name: "an invalid holder keeps the lock", annotations: ann(AnnotationMaxUnavailable, "x"), pods: []string{"o", "o", "n"}, record: mine,
			want: want{action: LockRenew, phase: PhaseInvalid, reason: ReasonInvalidConfig, held: true}},
		{name: "release on completion, every pod available at the update revision", pods: []string{"n", "n", "n"}, record: mine,
			want: want{action: LockRelease, phase: PhaseIdle, reason: ReasonUpToDate}},
		{name: "no release while the last replacement is not available", pods: []string{"n", "n", "N"}, record: mine, rolling: true,
			want: want{action: LockRenew, phase: PhaseRolling, reason: ReasonWaitingForAvailability, held: true}},
		{name: "idle, not held: nothing to do", pods: []string{"n", "n", "n"}, record: theirs,
			want: want{action: LockNone, phase: PhaseIdle, reason: ReasonUpToDate}},
		{name: "wait: another holds it", pods: []string{"o", "o", "o"}, record: theirs,
			want: want{action: LockWait, phase: PhaseRolling, reason: ReasonWaitingForLock, message: `waiting for rollout lock "db" (Lease stsroller-lock-db), held by us/ns/web since`}},
		{name: "wait, and repair the unhealthy outdated pods without the lock", pods: []string{"o", "O", "o"}, record: theirs,
			want: want{action: LockWait, deletions: []deletion{del("web-1")}, phase: PhaseRolling, reason: ReasonDeletingPods, message: "unhealthy only"}},
		{name: "wait: the holder's TTL, not ours, says when it expires", pods: []string{"o", "o", "o"}, record: noTTL,
			want: want{action: LockWait, phase: PhaseRolling, reason: ReasonWaitingForLock}},
		{name: "take over after the TTL", pods: []string{"o", "o", "o"}, record: expired,
			want: want{action: LockTake, takenFrom: other, deletions: []deletion{evict("web-2")}, phase: PhaseRolling, reason: ReasonDeletingPods, held: true}},
		{name: "without a lock annotation nothing changes", pods: []string{"o", "o", "o"}, record: theirs,
			annotations: map[string]string{AnnotationRolloutLock: ""},
			want:        want{action: LockNone, phase: PhaseInvalid, reason: ReasonInvalidConfig}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := ann(AnnotationRolloutLock, "db")
			for k, v := range tc.annotations {
				a[k] = v
			}
			sts := newSet(3, a)
			in := input(t, sts, pods(tc.pods...))
			if tc.rolling {
				an := metav1.NewTime(t0.Add(-time.Hour))
				in.Previous = &Status{Phase: PhaseRolling, UpdateRevision: newRev, LastTransitionTime: an, LastProgressTime: &an}
			}
			alone := Compute(in)
			name := in.Config.RolloutLock
			if in.ConfigError != nil && tc.record.Holder == self {
				// The shell keeps the locks it holds for an invalid StatefulSet.
				name = "db"
			}
			d := DecideLock(LockInput{Name: name, Self: self, Need: LockNeedOf(alone.Status), Record: tc.record, TTL: ttl, Now: t0})
			if d.Action != tc.want.action || d.TakenFrom != tc.want.takenFrom {
				t.Fatalf("decision %s (taken from %q), want %s (taken from %q)", d.Action, d.TakenFrom, tc.want.action, tc.want.takenFrom)
			}
			p := WithLock(in, alone, d)
			if diff := cmp.Diff(tc.want.deletions, deletionsOf(p)); diff != "" {
				t.Errorf("deletions (-want +got):\n%s", diff)
			}
			if p.Status.Phase != tc.want.phase || p.Status.Reason != tc.want.reason {
				t.Errorf("status %s/%s (%s), want %s/%s", p.Status.Phase, p.Status.Reason, p.Status.Message, tc.want.phase, tc.want.reason)
			}
			if !strings.Contains(p.Status.Message, tc.want.message) {
				t.Errorf("message %q does not contain %q", p.Status.Message, tc.want.message)
			}
			if d.Name == "" {
				if p.Status.RolloutLock != nil {
					t.Errorf("status shows a lock without one: %+v", p.Status.RolloutLock)
				}
				return
			}
			ls := p.Status.RolloutLock
			if ls == nil || ls.Held != tc.want.held || ls.Name != "db" {
				t.Fatalf("status lock %+v, want held=%v", ls, tc.want.held)
			}
			if d.Action == LockWait && (ls.Holder != other || ls.Since == nil || !ls.Since.Time.Equal(acquired)) {
				t.Errorf("a waiter's status names the holder and since when: %+v", ls)
			}
			if d.Action == LockWait && p.Status.LastProgressTime != nil {
				t.Errorf("the progress deadline runs while waiting for the lock: %v", p.Status.LastProgressTime)
			}
		})
	}
}

// TestWaitingForLockDoesNotStall: a StatefulSet waiting for the lock far
// longer than its progress deadline is not Stalled, and its message does not
// change from one plan to the next (no status write at every plan).
func TestWaitingForLockDoesNotStall(t *testing.T) {
	sts := newSet(3, ann(AnnotationRolloutLock, "db", AnnotationProgressDeadlineSeconds, "60"))
	in := input(t, sts, pods("o", "o", "o"))
	rec := LockRecord{Exists: true, Holder: other, AcquireTime: t0, ObservedAt: t0, TTL: ttl}
	var prev *Status
	for i := range 5 {
		in.Now = t0.Add(time.Duration(i) * 2 * time.Minute)
		in.Previous = prev
		alone := Compute(in)
		d := DecideLock(LockInput{Name: "db", Self: self, Need: LockNeedOf(alone.Status), Record: rec, TTL: ttl, Now: in.Now})
		p := WithLock(in, alone, d)
		if p.Status.Phase != PhaseRolling || p.Status.Reason != ReasonWaitingForLock {
			t.Fatalf("after %s: %s/%s %s", in.Now.Sub(t0), p.Status.Phase, p.Status.Reason, p.Status.Message)
		}
		if prev != nil && !prev.SameAs(&p.Status) {
			t.Errorf("after %s the status changed though nothing did:\n%s\n%s", in.Now.Sub(t0), prev.Encode(), p.Status.Encode())
		}
		if d.ExpiresIn != ttl-in.Now.Sub(t0) {
			t.Errorf("ExpiresIn = %s, want %s", d.ExpiresIn, ttl-in.Now.Sub(t0))
		}
		prev = &p.Status
	}
}

// TestLockGroupNeed: a group holds the lock while any member rolls.
func TestLockGroupNeed(t *testing.T) {
	done := member("a", ann(AnnotationRolloutLock, "db"), "n", "n")
	rolling := member("b", ann(AnnotationRolloutLock, "db"), "o", "n")
	need := LockNeedOf(Compute(done).Status).Strongest(LockNeedOf(Compute(rolling).Status))
	if need != NeedTake {
		t.Fatalf("need %d, want NeedTake", need)
	}
	d := DecideLock(LockInput{Name: "db", Self: "eu/ns/rollout-group:db", Need: need,
		Record: LockRecord{Exists: true, Holder: "eu/ns/rollout-group:db", TTL: ttl, ObservedAt: t0}, TTL: ttl, Now: t0})
	if d.Action != LockRenew {
		t.Errorf("a done member of a rolling group: %s, want Renew", d.Action)
	}
}
