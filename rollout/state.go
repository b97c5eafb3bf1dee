package rollout

import (
	"strconv"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/pdb"
	"github.com/stsroller/stsroller/policy"
)

// writtenStatus is a status this process wrote, with the StatefulSet's
// resourceVersion it patched (readAt) and the one the patch produced
// (writtenAt).
type writtenStatus struct {
	status            *policy.Status
	readAt, writtenAt string
}

// previous is the status the planner compares against: the one in the cache,
// unless the cache does not show our last write yet, in which case what we
// wrote. Without this, two syncs in a row on a lagging cache would both
// announce the same phase change (issue 9, bug 5).
func (c *Controller) previous(key cache.ObjectName, sts *appsv1.StatefulSet, cached *policy.Status) *policy.Status {
	c.mu.Lock()
	w, ok := c.written[key]
	c.mu.Unlock()
	if !ok || !cacheOlder(sts.ResourceVersion, w) {
		return cached
	}
	return w.status
}

// cacheOlder reports whether a cached object at resourceVersion rv predates
// the write w. resourceVersions are opaque, but the cache still showing the
// very version we patched means it has not seen the patch; and where both are
// integers, as the API server's are, they order.
func cacheOlder(rv string, w writtenStatus) bool {
	if rv == w.readAt && rv != w.writtenAt {
		return true
	}
	a, err1 := strconv.ParseUint(rv, 10, 64)
	b, err2 := strconv.ParseUint(w.writtenAt, 10, 64)
	return err1 == nil && err2 == nil && a < b
}

// controlledBy reports whether the StatefulSet is the pod's controller (same
// UID as the reference names).
func controlledBy(pod *corev1.Pod, sts *appsv1.StatefulSet) bool {
	ref := metav1.GetControllerOfNoCopy(pod)
	return ref != nil && ref.Kind == "StatefulSet" && ref.UID == sts.UID
}

// budgetUsers remembers which StatefulSets each PodDisruptionBudget selected
// pods of at their last gather, so an event of the budget re-plans those, even
// once its selector no longer selects them.
type budgetUsers struct {
	mu sync.Mutex
	// users: budget → StatefulSets; of: StatefulSet → budgets.
	users map[cache.ObjectName]map[cache.ObjectName]struct{}
	of    map[cache.ObjectName][]cache.ObjectName
}

func newBudgetUsers() budgetUsers {
	return budgetUsers{users: map[cache.ObjectName]map[cache.ObjectName]struct{}{},
		of: map[cache.ObjectName][]cache.ObjectName{}}
}

// set records the budgets over the StatefulSet's pods (nil: none, or gone).
func (b *budgetUsers) set(sts cache.ObjectName, byPod map[string][]pdb.Budget) {
	var now []cache.ObjectName
	seen := map[string]bool{}
	for _, bs := range byPod {
		for _, x := range bs {
			if !seen[x.Name] {
				seen[x.Name] = true
				now = append(now, cache.ObjectName{Namespace: sts.Namespace, Name: x.Name})
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, k := range b.of[sts] {
		if !seen[k.Name] {
			delete(b.users[k], sts)
			if len(b.users[k]) == 0 {
				delete(b.users, k)
			}
		}
	}
	for _, k := range now {
		if b.users[k] == nil {
			b.users[k] = map[cache.ObjectName]struct{}{}
		}
		b.users[k][sts] = struct{}{}
	}
	if len(now) == 0 {
		delete(b.of, sts)
	} else {
		b.of[sts] = now
	}
}

// get returns the StatefulSets the budget selected pods of.
func (b *budgetUsers) get(budget cache.ObjectName) []cache.ObjectName {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]cache.ObjectName, 0, len(b.users[budget]))
	for k := range b.users[budget] {
		out = append(out, k)
	}
	return out
}
