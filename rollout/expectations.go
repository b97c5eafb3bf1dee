package rollout

import (
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// expectationsTimeout bounds how long a deletion the informer never reports
// holds a StatefulSet back, as in kube-controller-manager.
const expectationsTimeout = 5 * time.Minute

// expectations remembers, per StatefulSet, the pods this process deleted or
// evicted until the informer shows them gone or terminating, so a deletion is
// never repeated, nor the next batch started, on a stale cache.
type expectations struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	// pending maps a StatefulSet to the UIDs of its pods we removed, with when.
	pending map[cache.ObjectName]map[types.UID]time.Time
}

func newExpectations(c clock.PassiveClock) *expectations {
	return &expectations{clock: c, pending: map[cache.ObjectName]map[types.UID]time.Time{}}
}

// expect records that the pod with this UID was removed.
func (e *expectations) expect(key cache.ObjectName, uid types.UID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[key] == nil {
		e.pending[key] = map[types.UID]time.Time{}
	}
	e.pending[key][uid] = e.clock.Now()
}

// outstanding drops the expectations the pods (the StatefulSet's pods as the
// informer shows them now) satisfy, and counts the rest: removed pods the
// informer still shows alive.
func (e *expectations) outstanding(key cache.ObjectName, pods []*corev1.Pod) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	uids := e.pending[key]
	if len(uids) == 0 {
		return 0
	}
	alive := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		if p.DeletionTimestamp == nil {
			alive[p.UID] = true
		}
	}
	now := e.clock.Now()
	for uid, at := range uids {
		if !alive[uid] || now.Sub(at) > expectationsTimeout {
			delete(uids, uid)
		}
	}
	if len(uids) == 0 {
		delete(e.pending, key)
	}
	return len(uids)
}

// forget drops everything expected of a StatefulSet that is gone.
func (e *expectations) forget(key cache.ObjectName) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pending, key)
}
