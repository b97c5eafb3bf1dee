package policy

import (
	"cmp"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonWaitingForGroup: the StatefulSet is in a rollout group and another
// member rolls, or the group is held. Status phase Rolling; a Normal event.
const ReasonWaitingForGroup = "WaitingForGroup"

// GroupMember is what the group decision knows of one member of a rollout
// group: a summary of the plan the member would make alone (MemberOf).
type GroupMember struct {
	Name  string
	Order int32
	// Hold says why the member holds the whole group (paused, invalid, not
	// OnDelete); empty when it does not.
	Hold string
	// Unavailable counts the member's pods that are not available, missing
	// and terminating ones included, and the pods asked to drain.
	Unavailable int32
	// InFlight: replacements are on their way: a pod is missing or
	// terminating, a pod at the update revision is not yet available, or a
	// deletion of ours has not been observed yet, or a pod keeps a drain
	// request. Every deletion of ours keeps its member InFlight until the
	// replacement is available.
	InFlight bool
	// Rolling: alone, the member would be rolling out (phase Rolling,
	// Blocked or Stalled).
	Rolling bool
	// Begun: it is rolling and some of its pods are updated already.
	Begun bool
	// Blocked: alone, it would be Blocked or Stalled: it cannot go on now.
	Blocked bool
}

// MemberOf summarises a member for the group decision from its input and the
// plan Compute makes for it alone (in.Group nil).
func MemberOf(in Input, alone Plan) GroupMember {
	st := alone.Status
	m := GroupMember{
		Name:  in.StatefulSet.Name,
		Order: in.Config.RolloutGroupOrder,
		// A pod asked to drain is leaving: it counts as unavailable, and
		// its eviction is a replacement on its way.
		Unavailable: max(st.Replicas-st.Available, 0) + alone.Draining,
		Rolling:     st.Phase.Rolling(),
	}
	m.Begun = m.Rolling && st.Updated > 0
	m.Blocked = st.Phase == PhaseBlocked || st.Phase == PhaseStalled
	switch st.Phase {
	case PhasePaused:
		m.Hold = "it is paused (" + AnnotationPaused + ")"
	case PhaseInvalid:
		m.Hold = fmt.Sprintf("it is invalid (%s: %s)", st.Reason, st.Message)
	}
	m.InFlight = len(in.Removing) > 0 || st.Updated > st.UpdatedAvailable ||
		presentPods(in) < st.Replicas || alone.Draining > 0
	return m
}

// presentPods counts the pods of the StatefulSet's ordinals that exist and are
// not terminating.
func presentPods(in Input) int32 {
	sts := in.StatefulSet
	start := 0
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	end := start + int(Replicas(sts))
	seen := map[int]bool{}
	for _, p := range in.Pods {
		if o, ok := Ordinal(sts, p); ok && o >= start && o < end && p.DeletionTimestamp == nil {
			seen[o] = true
		}
	}
	return int32(len(seen))
}

// GroupRole is what the group lets one member do.
type GroupRole string

const (
	// GroupRoll: the member deletes as it would alone.
	GroupRoll GroupRole = "Roll"
	// GroupRepair: the member deletes only its unhealthy outdated pods, which
	// are unavailable already and cost no availability; it evicts none.
	GroupRepair GroupRole = "Repair"
	// GroupWait: the member deletes nothing.
	GroupWait GroupRole = "Wait"
)

// GroupView is the group decision as one member sees it: Input.Group.
type GroupView struct {
	// Name is the group's name.
	Name string
	Role GroupRole
	// Roller is the member that may delete, empty when none may.
	Roller string
	// Holds: this member is one of those that hold the group.
	Holds bool
	// Message says why, for the status of a member that waits or repairs.
	Message string
}

// GroupDecision says which member of a rollout group may delete pods now.
type GroupDecision struct {
	Group string
	// Roller may delete, with Role GroupRoll or GroupRepair; empty when no
	// member may.
	Roller string
	Role   GroupRole
	// Held names the members that hold the group.
	Held []string
	// Waiting says why the other members wait.
	Waiting string
	// RepairWhy says why the roller may only repair (Role GroupRepair).
	RepairWhy string
}

// DecideGroup chooses which member of a rollout group may delete pods, from a
// summary of each (MemberOf). At most one member ever may, and only one whose
// deletions cannot overlap another member's replacements:
//
//  1. A member that is paused, invalid or not OnDelete holds the group: no
//     member deletes until it is resolved.
//  2. Members with replacements on their way (InFlight): with two or more,
//     none deletes until at most one is left; with one, it goes on.
//  3. Otherwise a member with unavailable pods goes first.
//  4. Otherwise the members rolling out, those whose rollout has begun first,
//     then those that are not blocked, then by stsroller.io/rollout-group-order,
//     then by name. A member that has not begun and is blocked (a budget
//     that allows nothing, say) does not keep the others waiting while one of
//     them could roll; a roller that is blocked says that it holds the group.
//
// In 2 and 3, while another member also has unavailable pods, the one that
// goes only repairs: it deletes its unhealthy outdated pods (they cost no
// availability) and evicts no healthy pod. Among several members with
// unavailable pods and none with replacements on its way, the first by order
// then name repairs. So two members with broken pods never wait on each
// other: see docs/behaviour.md, "Rollout groups".
func DecideGroup(group string, members []GroupMember) GroupDecision {
	d := GroupDecision{Group: group, Role: GroupWait}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b GroupMember) int {
		return cmp.Or(cmp.Compare(a.Order, b.Order), cmp.Compare(a.Name, b.Name))
	})
	var held, inFlight, unavailable, rolling []GroupMember
	for _, m := range ms {
		if m.Hold != "" {
			held = append(held, m)
		}
		if m.InFlight {
			inFlight = append(inFlight, m)
		}
		if m.Unavailable > 0 || m.InFlight {
			unavailable = append(unavailable, m)
		}
		if m.Rolling {
			rolling = append(rolling, m)
		}
	}
	if len(held) > 0 {
		parts := make([]string, len(held))
		for i, m := range held {
			d.Held = append(d.Held, m.Name)
			parts[i] = m.Name + ": " + m.Hold
		}
		d.Waiting = fmt.Sprintf("rollout group %q is held by %s; no member deletes pods until that is resolved",
			group, listSome(parts, len(parts), "; "))
		return d
	}
	others := func(except string, of []GroupMember) string {
		var parts []string
		for _, m := range of {
			if m.Name != except {
				parts = append(parts, fmt.Sprintf("%s (%d unavailable)", m.Name, m.Unavailable))
			}
		}
		return listSome(parts, len(parts), ", ")
	}
	switch {
	case len(inFlight) >= 2:
		d.Waiting = fmt.Sprintf("rollout group %q waits: %s have replacements on their way; no member deletes pods until at most one has",
			group, others("", inFlight))
		return d
	case len(inFlight) == 1:
		d.Roller = inFlight[0].Name
		d.Waiting = fmt.Sprintf("rollout group %q: %s rolls (%d pod(s) unavailable, replacements on their way); waiting until it has all its pods available",
			group, d.Roller, inFlight[0].Unavailable)
	case len(unavailable) >= 1:
		d.Roller = unavailable[0].Name
		d.Waiting = fmt.Sprintf("rollout group %q: %s goes first, it has %d unavailable pod(s); waiting until it has all its pods available",
			group, d.Roller, unavailable[0].Unavailable)
	case len(rolling) >= 1:
		first := rolling[0]
		why := fmt.Sprintf("%s %d", AnnotationRolloutGroupOrder, first.Order)
		if i := slices.IndexFunc(rolling, func(m GroupMember) bool { return m.Begun }); i >= 0 {
			first, why = rolling[i], "its rollout has begun"
		} else if i := slices.IndexFunc(rolling, func(m GroupMember) bool { return !m.Blocked }); i >= 0 && first.Blocked {
			first, why = rolling[i], fmt.Sprintf("%s is blocked and has not begun", first.Name)
		}
		d.Roller = first.Name
		d.Waiting = fmt.Sprintf("rollout group %q: %s rolls first (%s); waiting until it is done and has all its pods available",
			group, d.Roller, why)
	default:
		return d // nothing to roll
	}
	d.Role = GroupRoll
	if len(unavailable) > 1 || len(unavailable) == 1 && unavailable[0].Name != d.Roller {
		d.Role = GroupRepair
		d.RepairWhy = fmt.Sprintf("rollout group %q: %s also have unavailable pods, so only unhealthy pods are replaced (they cost no availability) and none is evicted",
			group, others(d.Roller, unavailable))
		d.Waiting = fmt.Sprintf("rollout group %q: %s repairs its unhealthy pods first; %s also have unavailable pods; waiting until only one member has",
			group, d.Roller, others(d.Roller, unavailable))
	}
	return d
}

// View is the decision as the member name sees it.
func (d GroupDecision) View(name string) *GroupView {
	v := &GroupView{Name: d.Group, Role: GroupWait, Roller: d.Roller, Holds: slices.Contains(d.Held, name), Message: d.Waiting}
	if name == d.Roller {
		v.Role = d.Role
		v.Message = d.RepairWhy
	}
	return v
}

// ComputeInGroup is Compute for a member of a rollout group: the plan the
// member would make alone, then kept to what the group allows it (g.Role).
// A member that waits deletes nothing and says so: phase Rolling, reason
// WaitingForGroup. Its progress deadline does not run while it waits (its
// last progress time is cleared), since waiting for another member is not
// a stall of its own.
func ComputeInGroup(in Input, g *GroupView) Plan {
	alone := Compute(in)
	if g == nil {
		return alone
	}
	st := alone.Status
	if g.Holds {
		alone.Status.Message = fmt.Sprintf("%s (this holds rollout group %q: no member of it deletes pods meanwhile)", st.Message, g.Name)
		return alone
	}
	if st.Phase.Rolling() && g.Role == GroupRoll && (st.Phase == PhaseBlocked || st.Phase == PhaseStalled) {
		// It goes first, and cannot go on: say that the others wait for it.
		alone.Status.Message = fmt.Sprintf("%s (this rolls first in rollout group %q: its other members wait meanwhile)", st.Message, g.Name)
		return alone
	}
	if !st.Phase.Rolling() || g.Role == GroupRoll {
		return alone
	}
	var kept []Deletion
	if g.Role == GroupRepair {
		for _, d := range alone.Deletions {
			if d.Method == MethodDelete {
				kept = append(kept, d)
			}
		}
		if len(kept) == len(alone.Deletions) {
			// Nothing held back: alone it would evict nothing now either.
			return alone
		}
	}
	p := alone
	p.Deletions = kept
	p.Status.Phase = PhaseRolling
	p.Status.Reason = ReasonWaitingForGroup
	p.Status.Message = g.Message
	if len(kept) > 0 {
		names := make([]string, len(kept))
		for i, d := range kept {
			names[i] = d.Pod.Name
		}
		p.Status.Reason = ReasonDeletingPods
		p.Status.Message = fmt.Sprintf("removing %s (unhealthy only): %s", listSome(names, len(names), ", "), g.Message)
	}
	p.Status.LastProgressTime = nil
	if prev := in.Previous; prev != nil && prev.Phase == PhaseRolling {
		p.Status.LastTransitionTime = prev.LastTransitionTime
	} else {
		p.Status.LastTransitionTime = metav1.NewTime(in.Now)
	}
	return p
}
