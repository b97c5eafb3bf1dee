package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/stsroller/stsroller/pdb"
)

// guard is a reason not to evict any healthy pod of the StatefulSet now.
// Guards hold evictions only: unhealthy outdated pods cost no availability
// and no disruption budget, so their replacement goes on.
type guard struct {
	phase   Phase
	reason  string
	message string
}

// choice is step 2 of a plan: the deletions, and what held others back.
type choice struct {
	deletions []Deletion
	// names of the first maxListed removed pods, for the status message.
	names []string
	// unhealthyDeleted counts the direct deletions among them.
	unhealthyDeleted int
	// guard, when set, held every eviction back.
	guard *guard
	// pdbBlocked names the pods a budget held back (the first few), of
	// pdbBlockedCount.
	pdbBlocked      []string
	pdbBlockedCount int
	// unavailable and inFlight after the plan.
	unavailable, inFlight int32
	// waitDrain names the pods that keep a drain request made before and
	// are not evicted now, with the request's time; drainNotes says where
	// each stands.
	waitDrain, drainNotes map[string]string
	// drainsKept counts the pods that keep their drain request.
	drainsKept int
	// withdrawals are the drain requests to remove.
	withdrawals []Withdrawal
	// leaderGone: a leader is removed in this plan; no other may follow.
	leaderGone bool
}

// leaderTurn says how far the rollout is from its leaders: next, no other
// outdated pod is left (every other pod is, or is becoming, updated); now,
// besides, every replacement is there and available, so a leader goes alone
// and hands over to an updated pod.
type leaderTurn struct{ next, now bool }

// choose picks the pods to remove now: unhealthy outdated pods first, while
// at most max-unavailable replacements are in flight; then the pods asked to
// drain that answered; then healthy ones, while fewer than max-unavailable
// pods are unavailable and every budget over the pod has headroom; a leader
// only when no other outdated pod is left and every replacement is
// available, and then alone. Highest ordinal first within each kind.
func choose(in Input, c *census) choice {
	maxU := in.Config.MaxUnavailable
	ch := choice{unavailable: c.unavailable(), inFlight: c.inFlight()}
	room := c.room()

	// Room for the unhealthy pods removed, which may be hundreds, and a
	// few evictions.
	if n := min(int64(len(c.unhealthy)), int64(room), int64(maxU)-int64(ch.inFlight)); n > 0 {
		ch.deletions = make([]Deletion, 0, n+maxListed)
	}
	for i := range c.unhealthy {
		v := &c.unhealthy[i]
		if room <= 0 || ch.inFlight >= maxU {
			break
		}
		ch.add(v, MethodDelete, RemovalUnhealthy,
			v.name+" is outdated and not ready ("+unhealthyWhy(v.pod)+"): replaced first, it costs no availability")
		room--
		ch.inFlight++
		ch.unhealthyDeleted++
	}

	// Leaders wait until no other outdated pod is left and every
	// replacement is available; an unhealthy leader is unhealthy first.
	var turn leaderTurn
	turn.next = c.others == 0 && len(c.unlabelled) == 0
	turn.now = turn.next && ch.inFlight == 0
	if len(c.healthy) > 0 || len(c.draining) > 0 || (turn.now && len(c.leaders) > 0) {
		ch.guard = evictionGuard(in, c)
	}
	used := uncountedEvictions(in)
	room = ch.drained(in, c, room, used, turn)
	evictable := c.healthy
	if turn.now && ch.drainsKept == 0 && len(c.leaders) > 0 {
		evictable = c.leaders[:1]
	}
	for i := range evictable {
		v := &evictable[i]
		if ch.guard != nil || room <= 0 || ch.unavailable >= maxU {
			break
		}
		budgets := in.Budgets[v.name]
		if ch.heldBack(v, budgets, used) {
			continue
		}
		for _, b := range budgets {
			used[b.Name]++
		}
		why := RemovalOutdated
		msg := v.name + " is outdated (ordinal " + strconv.Itoa(int(v.ordinal)) + ", highest first); " +
			strconv.Itoa(int(maxU)) + " of " + strconv.Itoa(int(c.replicas)) + " pods unavailable allowed"
		if v.leader {
			why = RemovalLeader
			msg = v.name + " is the leader and the last outdated pod, every other pod updated and available: replaced once, last and alone"
		}
		ch.evictOrAsk(in, v, why, msg)
		v.staleDrain = false // a new request, or the pod goes
		room--
		// A pod that is Ready but not yet available (minReadySeconds, DNS)
		// is unavailable already: evicting it costs nothing more.
		if v.available {
			ch.unavailable++
		}
	}
	// Requests left from another revision, or with the handshake off, on
	// pods not removed now; and requests on pods that are current again.
	for _, vs := range [][]candidate{c.healthy, c.leaders} {
		for i := range vs {
			if vs[i].staleDrain {
				ch.withdraw(vs[i].pod, "it was made for another revision than "+in.StatefulSet.Status.UpdateRevision+", or the handshake is off")
			}
		}
	}
	for _, p := range c.leftover {
		ch.withdraw(p, p.Name+" is at the update revision")
	}
	return ch
}

// uncountedEvictions counts, per budget, the evictions of ours whose pod the
// informer still shows alive and that the budget's status does not count
// yet: each still spends one of its disruptions.
func uncountedEvictions(in Input) map[string]int32 {
	used := map[string]int32{}
	if len(in.Removing) == 0 {
		return used
	}
	for _, p := range in.Pods {
		if m, ok := in.Removing[p.UID]; !ok || m != MethodEvict || p.DeletionTimestamp != nil {
			continue
		}
		for _, b := range in.Budgets[p.Name] {
			if !b.Disrupted[p.Name] {
				used[b.Name]++
			}
		}
	}
	return used
}

func (ch *choice) add(v *candidate, m Method, why Removal, msg string) {
	ch.deletions = append(ch.deletions, Deletion{Pod: v.pod, Method: m, Why: why, Message: msg})
	if len(ch.names) < maxListed {
		ch.names = append(ch.names, v.name)
	}
}

// heldBack reports whether a budget holds the pod back, counting the
// evictions already planned in this round; the first few are named, for the
// status.
func (ch *choice) heldBack(v *candidate, budgets []pdb.Budget, used map[string]int32) bool {
	for _, b := range budgets {
		// A stale budget allows nothing, whatever its count says.
		if !b.Stale && b.Allowed-used[b.Name] > 0 {
			continue
		}
		ch.pdbBlockedCount++
		switch {
		case len(ch.pdbBlocked) == maxListed:
		case b.Stale:
			ch.pdbBlocked = append(ch.pdbBlocked, fmt.Sprintf("%s (PodDisruptionBudget %s: status not yet observed)", v.name, b.Name))
		default:
			ch.pdbBlocked = append(ch.pdbBlocked, fmt.Sprintf("%s (PodDisruptionBudget %s allows no more disruptions)", v.name, b.Name))
		}
		return true
	}
	return false
}

// evictionGuard returns what forbids every eviction of this StatefulSet now:
// more than one budget over a pod, a budget that cannot be read, a DNS server
// that cannot be asked, a health gate that is not open.
func evictionGuard(in Input, c *census) *guard {
	if msg := multipleBudgets(in.Budgets); msg != "" {
		return &guard{PhaseBlocked, ReasonMultiplePDBs, msg}
	}
	if in.BudgetError != nil {
		return &guard{PhaseBlocked, ReasonBlockedByPDB, in.BudgetError.Error()}
	}
	if c.unreachable > 0 {
		return &guard{PhaseBlocked, ReasonDNSUnreachable,
			"an authoritative DNS server cannot be asked, so no replacement could be proven resolvable: " +
				listSome(c.unreachableFirst, c.unreachable, "; ")}
	}
	return healthGuard(in, c)
}

// multipleBudgets names the pods more than one budget selects. The eviction API
// refuses such pods, and stsroller will not guess which budget wins.
func multipleBudgets(budgets map[string][]pdb.Budget) string {
	var bad []string
	for name, bs := range budgets {
		if len(bs) > 1 {
			names := make([]string, len(bs))
			for i, b := range bs {
				names[i] = b.Name
			}
			slices.Sort(names)
			bad = append(bad, fmt.Sprintf("%s (%s)", name, strings.Join(names, ", ")))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	slices.Sort(bad)
	return "more than one PodDisruptionBudget selects a pod, so none of them can be evicted safely: " + listSome(bad, len(bad), "; ")
}
