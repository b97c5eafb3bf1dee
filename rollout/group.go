package rollout

import (
	"context"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/policy"
)

// groupIndex indexes managed StatefulSets by "<namespace>/<rollout group>".
const groupIndex = "stsroller.io/rollout-group"

func groupIndexFunc(obj any) ([]string, error) {
	sts, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return nil, nil
	}
	if g := policy.RolloutGroupOf(sts); g != "" {
		return []string{groupKey(sts.Namespace, g)}, nil
	}
	return nil, nil
}

func groupKey(namespace, group string) string { return namespace + "/" + group }

// groups is what the shell keeps for rollout groups: the StatefulSet index by
// group, one lock per group, so the members of a group are planned one at a
// time (a member's deletions are made and expected before another member
// looks), and each member's last summary, so the others are woken when it
// changes.
type groups struct {
	indexer cache.Indexer
	mu      sync.Mutex
	// locks holds a lock per group while some sync holds or waits for it:
	// the map shrinks as groups go.
	locks map[string]*groupLock
	// last is each member's group and summary at its last sync.
	last map[cache.ObjectName]memberState
}

type groupLock struct {
	sync.Mutex
	users int
}

type memberState struct {
	group   string
	summary policy.GroupMember
}

func newGroups(indexer cache.Indexer) *groups {
	return &groups{indexer: indexer, locks: map[string]*groupLock{}, last: map[cache.ObjectName]memberState{}}
}

// lock takes the group's lock; the returned func releases it. A StatefulSet
// in no group takes none.
func (g *groups) lock(sts *appsv1.StatefulSet) func() {
	name := policy.RolloutGroupOf(sts)
	if name == "" {
		return func() {}
	}
	k := groupKey(sts.Namespace, name)
	g.mu.Lock()
	l := g.locks[k]
	if l == nil {
		l = &groupLock{}
		g.locks[k] = l
	}
	l.users++
	g.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		g.mu.Lock()
		if l.users--; l.users == 0 {
			delete(g.locks, k)
		}
		g.mu.Unlock()
	}
}

// wake enqueues the members of a group but one.
func (c *Controller) wakeGroup(namespace, group, except string) {
	if group == "" {
		return
	}
	for _, m := range c.groups.members(namespace, group) {
		if m.Name != except {
			c.queue.Add(cache.MetaObjectToName(m))
		}
	}
}

// members lists the managed StatefulSets of a group, from the index: the
// cost is the group's size, not the namespace's.
func (g *groups) members(namespace, group string) []*appsv1.StatefulSet {
	objs, err := g.indexer.ByIndex(groupIndex, groupKey(namespace, group))
	if err != nil {
		return nil
	}
	out := make([]*appsv1.StatefulSet, 0, len(objs))
	for _, o := range objs {
		if sts, ok := o.(*appsv1.StatefulSet); ok && policy.RolloutGroupOf(sts) == group {
			out = append(out, sts)
		}
	}
	return out
}

// groupView makes the group decision for sts, whose own input is self: every
// other member's input is gathered from the listers as for its own sync, and
// each is summarised from the plan it would make alone. Nil when sts is in no
// group.
func (c *Controller) groupView(ctx context.Context, sts *appsv1.StatefulSet, self policy.Input) (*policy.GroupView, error) {
	name := policy.RolloutGroupOf(sts)
	if name == "" {
		return nil, nil
	}
	var ms []policy.GroupMember
	for _, m := range c.groups.members(sts.Namespace, name) {
		in := self
		if m.UID != sts.UID || m.Name != sts.Name {
			got, err := c.input(ctx, cache.MetaObjectToName(m), m)
			if err != nil {
				return nil, err
			}
			in = got.Input
		}
		ms = append(ms, policy.MemberOf(in, policy.Compute(in)))
	}
	d := policy.DecideGroup(name, ms)
	v := d.View(sts.Name)
	klog.FromContext(ctx).V(4).Info("Rollout group decision", "group", name, "roller", d.Roller, "role", v.Role)
	return v, nil
}

// noteMember records the member's summary after its sync and wakes the other
// members of its group (and of the group it left) when it changed: they may
// start, or must wait.
func (c *Controller) noteMember(key cache.ObjectName, sts *appsv1.StatefulSet, in policy.Input) {
	next := memberState{}
	if sts != nil {
		if next.group = policy.RolloutGroupOf(sts); next.group != "" {
			next.summary = policy.MemberOf(in, policy.Compute(in))
		}
	}
	c.groups.mu.Lock()
	prev, had := c.groups.last[key]
	if next.group == "" {
		delete(c.groups.last, key)
	} else {
		c.groups.last[key] = next
	}
	c.groups.mu.Unlock()
	if had && prev == next || !had && next.group == "" {
		return
	}
	wake := []string{prev.group}
	if next.group != prev.group {
		wake = append(wake, next.group)
	}
	for _, g := range wake {
		c.wakeGroup(key.Namespace, g, key.Name)
	}
}
