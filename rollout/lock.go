package rollout

import (
	"context"
	"fmt"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

// DefaultLockTTL is --lock-ttl's default.
const DefaultLockTTL = 10 * time.Minute

// LockOptions say where the rollout locks' Leases live (issue 19).
type LockOptions struct {
	// Client reaches the coordination cluster; nil: the controller's own.
	Client coordinationv1client.LeasesGetter
	// Namespace holds the Leases.
	Namespace string
	// Cluster names this cluster in holder identities.
	Cluster string
	// TTL is how long a holder that stops renewing keeps its lock.
	TTL time.Duration
}

// leaseLocks is the shell of the rollout locks: it reads and writes one
// Lease per lock with optimistic concurrency (Create for a new one, Update
// with the resourceVersion read), and remembers what it last saw of each. A
// lock held is renewed every TTL/3, on the sync of its holder (requeued so);
// a lock waited for is read at most every pollInterval. The cost of one
// sync is one Lease at most: never a list.
type leaseLocks struct {
	opts  LockOptions
	clock clock.Clock
	mu    sync.Mutex
	// seen is the Lease of each lock as last read or written, with when it
	// was read and when its resourceVersion was first seen.
	seen map[string]seenLease
	// held maps each lock this process holds to the holder identity.
	held map[string]string
	// waitingSince is when each StatefulSet began to wait for its lock.
	waitingSince map[cache.ObjectName]time.Time
}

type seenLease struct {
	lease              *coordinationv1.Lease // nil: none
	readAt, observedAt time.Time
}

func newLeaseLocks(opts LockOptions, clk clock.Clock) *leaseLocks {
	if opts.TTL <= 0 {
		opts.TTL = DefaultLockTTL
	}
	if opts.Cluster == "" {
		opts.Cluster = "local"
	}
	return &leaseLocks{opts: opts, clock: clk, seen: map[string]seenLease{}, held: map[string]string{},
		waitingSince: map[cache.ObjectName]time.Time{}}
}

func (l *leaseLocks) renewInterval() time.Duration { return l.opts.TTL / 3 }

// pollInterval is how often a lock waited for is read again.
func (l *leaseLocks) pollInterval() time.Duration {
	return min(max(l.opts.TTL/10, time.Second), 30*time.Second)
}

func (l *leaseLocks) leases() coordinationv1client.LeaseInterface {
	return l.opts.Client.Leases(l.opts.Namespace)
}

// record reads the lock's Lease, unless what was last seen of it is recent
// enough: a lock held by self until its renewal is due, another's until the
// next poll.
func (l *leaseLocks) record(ctx context.Context, name, self string) (policy.LockRecord, error) {
	now := l.clock.Now()
	l.mu.Lock()
	s, ok := l.seen[name]
	l.mu.Unlock()
	// A lock held is not read again: its renewal (an Update with the
	// resourceVersion written last) finds out if another wrote it.
	mine := ok && s.lease != nil && ptr.Deref(s.lease.Spec.HolderIdentity, "") == self
	if !ok || !mine && now.Sub(s.readAt) >= l.pollInterval() {
		got, err := l.leases().Get(ctx, policy.LeaseName(name), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			got = nil
		case err != nil:
			return policy.LockRecord{}, fmt.Errorf("reading the Lease of rollout lock %q: %w", name, err)
		}
		s = l.note(name, got, now)
	}
	return recordOf(s, l.opts.TTL), nil
}

// note keeps what was read or written of a lock's Lease.
func (l *leaseLocks) note(name string, lease *coordinationv1.Lease, now time.Time) seenLease {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.seen[name]
	s := seenLease{lease: lease, readAt: now, observedAt: now}
	if ok && (prev.lease == nil) == (lease == nil) && (lease == nil || prev.lease.ResourceVersion == lease.ResourceVersion) {
		s.observedAt = prev.observedAt
	}
	l.seen[name] = s
	return s
}

func (l *leaseLocks) drop(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.seen, name)
}

func recordOf(s seenLease, ttl time.Duration) policy.LockRecord {
	if s.lease == nil {
		return policy.LockRecord{ObservedAt: s.observedAt}
	}
	sp := s.lease.Spec
	r := policy.LockRecord{Exists: true, Holder: ptr.Deref(sp.HolderIdentity, ""), ObservedAt: s.observedAt}
	if sp.AcquireTime != nil {
		r.AcquireTime = sp.AcquireTime.Time
	}
	if sp.LeaseDurationSeconds != nil {
		r.TTL = time.Duration(*sp.LeaseDurationSeconds) * time.Second
	}
	return r
}

// take makes self the holder; false when another wrote the Lease first (a
// conflict, or AlreadyExists): what was seen is dropped, to be read again.
func (l *leaseLocks) take(ctx context.Context, name, self string) (bool, error) {
	now := metav1.NewMicroTime(l.clock.Now())
	l.mu.Lock()
	s := l.seen[name]
	l.mu.Unlock()
	spec := coordinationv1.LeaseSpec{
		HolderIdentity:       ptr.To(self),
		LeaseDurationSeconds: ptr.To(int32(l.opts.TTL / time.Second)),
		AcquireTime:          &now,
		RenewTime:            &now,
	}
	var got *coordinationv1.Lease
	var err error
	if s.lease == nil {
		got, err = l.leases().Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: policy.LeaseName(name), Namespace: l.opts.Namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "stsroller"}},
			Spec: spec,
		}, metav1.CreateOptions{FieldManager: FieldManager})
	} else {
		next := s.lease.DeepCopy()
		spec.LeaseTransitions = ptr.To(ptr.Deref(next.Spec.LeaseTransitions, 0) + 1)
		next.Spec = spec
		got, err = l.leases().Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
	}
	return l.wrote(name, self, got, err, true)
}

// renew writes a new renewTime when one is due; false when the Lease was
// changed by another meanwhile.
func (l *leaseLocks) renew(ctx context.Context, name, self string) (bool, error) {
	l.mu.Lock()
	s := l.seen[name]
	l.held[name] = self
	l.mu.Unlock()
	now := l.clock.Now()
	if s.lease == nil || now.Sub(s.readAt) < l.renewInterval() {
		return true, nil
	}
	next := s.lease.DeepCopy()
	next.Spec.RenewTime = ptr.To(metav1.NewMicroTime(now))
	next.Spec.LeaseDurationSeconds = ptr.To(int32(l.opts.TTL / time.Second))
	got, err := l.leases().Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
	return l.wrote(name, self, got, err, true)
}

// release frees the lock (holder cleared, the Lease kept for the next).
func (l *leaseLocks) release(ctx context.Context, name, self string) error {
	l.mu.Lock()
	s := l.seen[name]
	l.mu.Unlock()
	if s.lease == nil || ptr.Deref(s.lease.Spec.HolderIdentity, "") != self {
		l.forgetHeld(name)
		return nil
	}
	next := s.lease.DeepCopy()
	next.Spec.HolderIdentity = nil
	next.Spec.AcquireTime = nil
	next.Spec.RenewTime = ptr.To(metav1.NewMicroTime(l.clock.Now()))
	got, err := l.leases().Update(ctx, next, metav1.UpdateOptions{FieldManager: FieldManager})
	ok, err := l.wrote(name, self, got, err, false)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("releasing rollout lock %q: the Lease changed meanwhile; trying again", name)
	}
	l.forgetHeld(name)
	return nil
}

func (l *leaseLocks) forgetHeld(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, name)
}

// wrote keeps the outcome of a write of the lock's Lease.
func (l *leaseLocks) wrote(name, self string, got *coordinationv1.Lease, err error, holding bool) (bool, error) {
	switch {
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err), apierrors.IsNotFound(err):
		l.drop(name)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("writing the Lease of rollout lock %q: %w", name, err)
	}
	l.note(name, got, l.clock.Now())
	if holding {
		l.mu.Lock()
		l.held[name] = self
		l.mu.Unlock()
	}
	return true, nil
}

// heldBy names the locks this process holds as self.
func (l *leaseLocks) heldBy(self string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n, h := range l.held {
		if h == self {
			out = append(out, n)
		}
	}
	return out
}

// withLock keeps the plan to what the StatefulSet's rollout lock allows,
// taking, renewing or releasing the lock on the way (policy.DecideLock).
func (c *Controller) withLock(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, in policy.Input, plan policy.Plan) (policy.Plan, error) {
	l := c.locks
	self := policy.LockHolder(l.opts.Cluster, sts)
	name := in.Config.RolloutLock
	need := policy.LockNeedOf(plan.Status)
	if in.ConfigError != nil {
		// The annotation cannot be read: keep what it held.
		name, need = "", policy.NeedKeep
		if held := l.heldBy(self); len(held) > 0 {
			name = held[0]
		}
	}
	for _, n := range l.heldBy(self) {
		if n != name {
			// The annotation was removed or changed: its old lock goes.
			if err := c.releaseLock(ctx, sts, n, self); err != nil {
				return plan, err
			}
		}
	}
	if name == "" {
		return plan, nil
	}
	if g := policy.RolloutGroupOf(sts); g != "" && need != policy.NeedTake {
		// The group holds the lock as one, while any member needs it.
		for _, m := range c.groups.members(sts.Namespace, g) {
			if m.UID == sts.UID || m.Annotations[policy.AnnotationRolloutLock] != sts.Annotations[policy.AnnotationRolloutLock] {
				continue
			}
			got, err := c.input(ctx, cache.MetaObjectToName(m), m)
			if err != nil {
				return plan, err
			}
			need = need.Strongest(policy.LockNeedOf(policy.Compute(got.Input).Status))
		}
	}
	decide := func() (policy.LockDecision, error) {
		rec, err := l.record(ctx, name, self)
		if err != nil {
			return policy.LockDecision{}, err
		}
		return policy.DecideLock(policy.LockInput{Name: name, Self: self, Need: need, Record: rec, TTL: l.opts.TTL, Now: c.clock.Now()}), nil
	}
	d, err := decide()
	if err != nil {
		return plan, err
	}
	logger := klog.FromContext(ctx).WithValues("rolloutLock", name)
	for try := 0; ; try++ {
		ok := true
		switch d.Action {
		case policy.LockTake:
			ok, err = l.take(ctx, name, self)
		case policy.LockRenew:
			ok, err = l.renew(ctx, name, self)
		case policy.LockRelease:
			err = c.releaseLock(ctx, sts, name, self)
		}
		if err != nil {
			return plan, err
		}
		if ok {
			break
		}
		// Another wrote the Lease first: read it again and decide anew.
		logger.V(2).Info("Rollout lock's Lease changed meanwhile; reading it again", "action", d.Action)
		if d.Action == policy.LockRenew {
			c.recorder.Eventf(sts, corev1.EventTypeWarning, policy.ReasonLockLost,
				"Rollout lock %q: the Lease %s/%s was written by another holder; reading it again", name, l.opts.Namespace, policy.LeaseName(name))
		}
		if try > 0 {
			return plan, fmt.Errorf("rollout lock %q: the Lease keeps changing", name)
		}
		if d, err = decide(); err != nil {
			return plan, err
		}
	}
	c.noteLock(key, sts, d)
	p := policy.WithLock(in, plan, d)
	after := time.Duration(0)
	switch d.Action {
	case policy.LockTake, policy.LockRenew:
		after = l.renewInterval()
	case policy.LockWait:
		after = min(l.pollInterval(), d.ExpiresIn+time.Second)
	}
	p.RequeueAfter = sooner(p.RequeueAfter, after)
	return p, nil
}

// noteLock records the events and the wait metric of a lock decision.
func (c *Controller) noteLock(key cache.ObjectName, sts *appsv1.StatefulSet, d policy.LockDecision) {
	l := c.locks
	now := c.clock.Now()
	l.mu.Lock()
	since, waited := l.waitingSince[key]
	switch d.Action {
	case policy.LockWait:
		if !waited {
			l.waitingSince[key] = now
		}
	default:
		delete(l.waitingSince, key)
	}
	l.mu.Unlock()
	if d.Action != policy.LockTake {
		return
	}
	if waited {
		c.metrics.LockWait.Observe(now.Sub(since).Seconds())
	} else {
		c.metrics.LockWait.Observe(0)
	}
	if d.TakenFrom != "" {
		c.recorder.Eventf(sts, corev1.EventTypeWarning, policy.ReasonLockTakenOver,
			"Took rollout lock %q over from %s, which did not renew it for its TTL", d.Name, d.TakenFrom)
		return
	}
	c.recorder.Eventf(sts, corev1.EventTypeNormal, policy.ReasonLockAcquired, "Took rollout lock %q (Lease %s/%s)",
		d.Name, l.opts.Namespace, policy.LeaseName(d.Name))
}

// releaseLock releases a lock held as self, with an event.
func (c *Controller) releaseLock(ctx context.Context, sts *appsv1.StatefulSet, name, self string) error {
	if _, err := c.locks.record(ctx, name, self); err != nil {
		return err
	}
	if err := c.locks.release(ctx, name, self); err != nil {
		return err
	}
	if sts != nil {
		c.recorder.Eventf(sts, corev1.EventTypeNormal, policy.ReasonLockReleased, "Released rollout lock %q", name)
	}
	klog.FromContext(ctx).V(2).Info("Released rollout lock", "rolloutLock", name, "holder", self)
	return nil
}

// forgetLocks releases the locks a StatefulSet no longer managed (deleted,
// or opted out) held alone.
func (c *Controller) forgetLocks(ctx context.Context, key cache.ObjectName) error {
	self := policy.LockHolder(c.locks.opts.Cluster, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}})
	for _, n := range c.locks.heldBy(self) {
		if err := c.releaseLock(ctx, nil, n, self); err != nil {
			return err
		}
	}
	c.locks.mu.Lock()
	delete(c.locks.waitingSince, key)
	c.locks.mu.Unlock()
	return nil
}
