package rollout

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"

	"github.com/stsroller/stsroller/policy"
)

// expectationsTimeout bounds how long a deletion the informer never reports
// holds a StatefulSet back, as in kube-controller-manager.
const expectationsTimeout = 5 * time.Minute

// expectations remembers, per StatefulSet, the pods this process deleted or
// evicted until the informer shows them gone or terminating. The planner
// counts them as on their way out meanwhile, so a removal is never repeated
// on a stale cache, and the next one need not wait for the watch.
type expectations struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	// pending maps a StatefulSet to the UIDs of its pods we removed, with
	// when and how.
	pending map[cache.ObjectName]map[types.UID]expected
}

type expected struct {
	at     time.Time
	method policy.Method
	// until, when set, ends the expectation sooner than expectationsTimeout.
	until time.Time
}

// end is when the expectation lapses unmet.
func (x expected) end() time.Time {
	end := x.at.Add(expectationsTimeout)
	if !x.until.IsZero() && x.until.Before(end) {
		return x.until
	}
	return end
}

func newExpectations(c clock.PassiveClock) *expectations {
	return &expectations{clock: c, pending: map[cache.ObjectName]map[types.UID]expected{}}
}

// expect records that the pod with this UID was removed, and how.
func (e *expectations) expect(key cache.ObjectName, uid types.UID, m policy.Method) {
	e.put(key, uid, expected{at: e.clock.Now(), method: m})
}

// hold records a removal that may or may not have happened (its answer was
// lost): the pod counts as on its way out for d at most.
func (e *expectations) hold(key cache.ObjectName, uid types.UID, m policy.Method, d time.Duration) {
	now := e.clock.Now()
	e.put(key, uid, expected{at: now, method: m, until: now.Add(d)})
}

func (e *expectations) put(key cache.ObjectName, uid types.UID, x expected) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[key] == nil {
		e.pending[key] = map[types.UID]expected{}
	}
	e.pending[key][uid] = x
}

// drop forgets one expectation: the removal was refused or not sent.
func (e *expectations) drop(key cache.ObjectName, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pending[key], uid)
	if len(e.pending[key]) == 0 {
		delete(e.pending, key)
	}
}

// outstanding drops the expectations the pods (the StatefulSet's pods as the
// informer shows them now) satisfy or that lapsed, and returns the rest:
// removed pods the informer still shows alive, with how they went (nil:
// none), and when the first of them lapses (zero: none). No event need come
// when one lapses, so the StatefulSet must be looked at again by then.
func (e *expectations) outstanding(key cache.ObjectName, pods []*corev1.Pod) (map[types.UID]policy.Method, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	uids := e.pending[key]
	if len(uids) == 0 {
		return nil, time.Time{}
	}
	alive := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		if p.DeletionTimestamp == nil {
			alive[p.UID] = true
		}
	}
	now := e.clock.Now()
	var out map[types.UID]policy.Method
	var next time.Time
	for uid, x := range uids {
		end := x.end()
		if !alive[uid] || !now.Before(end) {
			delete(uids, uid)
			continue
		}
		if out == nil {
			out = map[types.UID]policy.Method{}
		}
		out[uid] = x.method
		if next.IsZero() || end.Before(next) {
			next = end
		}
	}
	if len(uids) == 0 {
		delete(e.pending, key)
	}
	return out, next
}

// forget drops everything expected of a StatefulSet that is gone.
func (e *expectations) forget(key cache.ObjectName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pending, key)
}
