package policy

import (
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stsroller/stsroller/pdb"
)

// Method is how a pod is removed.
type Method string

const (
	// MethodDelete deletes the pod directly, with UID and resourceVersion
	// preconditions. Used for pods that are already unavailable: removing them
	// costs no availability and no disruption budget.
	MethodDelete Method = "Delete"
	// MethodEvict goes through the Eviction API, so the API server enforces the
	// PodDisruptionBudgets atomically. Used for healthy pods.
	MethodEvict Method = "Evict"
)

// DNSState is what the DNS gate knows of one pod.
type DNSState struct {
	// Propagated: every authoritative server serves the pod's current IPs.
	Propagated bool
	// Unreachable: at the last check a server could not be asked (timeout,
	// network error, refusal). Never counts as propagated.
	Unreachable bool
	// Message says why not, for status and events.
	Message string
}

// Input is everything the planner looks at, gathered by the controller from its
// listers. The planner reads it and changes nothing.
type Input struct {
	StatefulSet *appsv1.StatefulSet
	// Config is ParseConfig's result; ConfigError its error.
	Config      Config
	ConfigError error
	// Pods are the pods the StatefulSet owns.
	Pods []*corev1.Pod
	// Budgets maps a pod's name to the PodDisruptionBudgets that select it.
	Budgets map[string][]pdb.Budget
	// BudgetError is set when a budget in the namespace could not be read.
	BudgetError error
	// Service is the StatefulSet's governing Service (spec.serviceName), nil
	// when there is none. The DNS gate checks it.
	Service *corev1.Service
	// DNS is the DNS gate's view of each pod by name; read only with the gate on.
	DNS map[string]DNSState
	// DNSError is set when the gate cannot work at all (no servers known).
	DNSError error
	// Health is the health gate's view; read only with Config.HealthQuery
	// set. HealthError is set when the gate cannot work at all (no
	// Prometheus URL known).
	Health      HealthState
	HealthError error
	// Removing names the pods (by UID) that stsroller removed and the
	// informers still show alive, with how each went. Each counts at once as
	// a pod on its way out, as if it were terminating, so the next plan goes
	// on without waiting for the watch (expectations, as the built-in
	// controllers keep them); an eviction also holds its budget's disruption
	// until the budget's status shows it (pdb.Budget.Disrupted).
	Removing map[types.UID]Method
	// Previous is the status last written, nil when there is none.
	Previous *Status
	Now      time.Time
}

// Removal is why a pod is removed: the shell records its events by it, and
// never works it out again from the pod.
type Removal string

const (
	// RemovalUnhealthy: an outdated pod that is not Ready, deleted.
	RemovalUnhealthy Removal = "Unhealthy"
	// RemovalOutdated: a healthy outdated pod, evicted.
	RemovalOutdated Removal = "Outdated"
	// RemovalLeader: the leader, last and alone, evicted.
	RemovalLeader Removal = "Leader"
	// RemovalDrainRequest: a healthy outdated pod asked to drain.
	RemovalDrainRequest Removal = "DrainRequest"
	// RemovalDrained: a pod that answered its drain request, evicted.
	RemovalDrained Removal = "Drained"
	// RemovalDrainTimedOut: a pod that did not answer in time, evicted.
	RemovalDrainTimedOut Removal = "DrainTimedOut"
)

// Deletion is one pod to remove, how, and why it was chosen.
type Deletion struct {
	Pod    *corev1.Pod
	Method Method
	Why    Removal
	// Message says why this pod, in this order, for the event.
	Message string
}

// Withdrawal is a drain request of stsroller's to remove from a pod: it no
// longer belongs to the rollout under way.
type Withdrawal struct {
	Pod     *corev1.Pod
	Message string
}

// Plan is what the planner decided.
type Plan struct {
	Deletions []Deletion
	// Withdrawals are the drain requests to remove.
	Withdrawals []Withdrawal
	// Draining counts the pods that keep a drain request of this rollout:
	// they are leaving, though still Ready.
	Draining int32
	Status   Status
	// RequeueAfter is when the plan should be made again even if nothing changes
	// (a pod reaching minReadySeconds, the progress deadline); 0 for never.
	RequeueAfter time.Duration
}

// Compute makes the plan: which outdated pods to delete now, and the status.
// See DESIGN.md, "Which pods, in which order". It works in three steps: take a
// census of the pods, choose the deletions, say the status.
func Compute(in Input) Plan {
	c := take(in)
	defer c.release()
	st := Status{
		UpdateRevision:     in.StatefulSet.Status.UpdateRevision,
		Replicas:           c.replicas,
		Updated:            c.updated,
		Available:          c.available,
		UpdatedAvailable:   c.updatedAvailable,
		WaitingForDNSCount: c.waitingDNS,
		ObservedGeneration: in.StatefulSet.Generation,
	}
	if c.waitingDNS > 0 {
		st.WaitingForDNS = c.waitingDNSWhy
	}
	var withdrawals []Withdrawal
	say := func(phase Phase, reason, msg string, deletions []Deletion) Plan {
		st.Phase, st.Reason, st.Message = phase, reason, msg
		st.HealthGate = healthStatus(in, phase.Rolling())
		plan := finish(in, Plan{Deletions: deletions, Withdrawals: withdrawals, Status: st, RequeueAfter: c.requeue})
		plan.Status.bound()
		return plan
	}
	if phase, reason, msg := stop(in, &c); reason != "" {
		if reason == ReasonPaused {
			// A paused rollout stands by none of its drain requests: the
			// pods may take their load back.
			withdrawals = c.withdrawAll("the rollout is paused")
		}
		return say(phase, reason, msg, nil)
	}
	if !inProgress(in, &c) {
		withdrawals = c.withdrawAll("no rollout is under way")
		return say(settled(in, &c))
	}
	ch := choose(in, &c)
	withdrawals = ch.withdrawals
	st.WaitingForDrain, st.WaitingForDrainCount = boundedDrains(ch.waitDrain)
	phase, reason, msg := rolling(in, &c, &ch)
	plan := say(phase, reason, msg, ch.deletions)
	plan.Draining = int32(ch.drainsKept)
	return plan
}

// inProgress is the one predicate of a rollout under way: outdated pods
// remain to be removed, or replacements are not all available yet while this
// revision's rollout runs (as seen at the last plan, or, at first sight,
// with pods at an old revision left). Pods at the old revision kept by the
// partition, or a pod lost after the rollout finished, are not a rollout.
func inProgress(in Input, c *census) bool {
	if c.workLeft() {
		return true
	}
	if !c.replacementsPending() {
		return false
	}
	prev, rev := in.Previous, in.StatefulSet.Status.UpdateRevision
	if prev == nil || prev.UpdateRevision != rev {
		return c.outdated > 0
	}
	return prev.Phase.Rolling()
}

// stop returns what forbids every deletion, whether or not a rollout is under
// way; an empty reason when nothing does.
func stop(in Input, c *census) (Phase, string, string) {
	sts, cfg := in.StatefulSet, in.Config
	// blocked is Blocked during a rollout, and otherwise what the
	// StatefulSet would say without the block.
	blocked := func() Phase {
		if sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != "" && inProgress(in, c) {
			return PhaseBlocked
		}
		if p, _, _, _ := settled(in, c); sts.Status.UpdateRevision != "" {
			return p
		}
		return previousPhase(in)
	}
	switch {
	case !IsOnDelete(sts):
		return PhaseInvalid, ReasonNotOnDelete, fmt.Sprintf(
			"spec.updateStrategy.type is %q: stsroller deletes pods only for OnDelete StatefulSets; set it to OnDelete or remove the %s annotation",
			sts.Spec.UpdateStrategy.Type, AnnotationEnabled)
	case in.ConfigError != nil:
		return PhaseInvalid, ReasonInvalidConfig, in.ConfigError.Error()
	case sts.DeletionTimestamp != nil:
		// The pods may never be recreated (an orphaning or foreground
		// deletion): removing one now could lose it for good.
		return blocked(), ReasonStatefulSetDeleting, fmt.Sprintf(
			"the StatefulSet is being deleted (since %s): stsroller removes none of its pods",
			sts.DeletionTimestamp.UTC().Format(time.RFC3339))
	case cfg.Paused:
		return PhasePaused, ReasonPaused, fmt.Sprintf("%s is \"true\": nothing is deleted until it is removed", AnnotationPaused)
	case sts.Status.ObservedGeneration < sts.Generation:
		return previousPhase(in), ReasonGenerationNotObserved, fmt.Sprintf(
			"waiting for the StatefulSet controller to observe generation %d (observed %d)", sts.Generation, sts.Status.ObservedGeneration)
	case sts.Status.UpdateRevision == "":
		// Every pod would look outdated.
		return previousPhase(in), ReasonGenerationNotObserved,
			"waiting for the StatefulSet controller to report status.updateRevision"
	}
	// A readiness gate nobody can satisfy is worth saying whether or not a
	// rollout runs: new pods would never turn Ready. Without a rollout under
	// way it blocks none, and must not start the progress deadline.
	if msg := dnsDeadlock(sts, cfg, in.Service); msg != "" {
		return blocked(), ReasonDNSGateDeadlock, msg
	}
	if cfg.DNSDomain != "" && in.DNSError != nil {
		return PhaseInvalid, ReasonInvalidConfig, in.DNSError.Error()
	}
	if cfg.HealthQuery != "" && in.HealthError != nil {
		return PhaseInvalid, ReasonInvalidConfig, in.HealthError.Error()
	}
	return "", "", ""
}

// settled is the status with no rollout under way: Complete when a rollout
// of this revision was seen, Idle otherwise.
func settled(in Input, c *census) (Phase, string, string, []Deletion) {
	rev := in.StatefulSet.Status.UpdateRevision
	if prev := in.Previous; prev != nil && prev.UpdateRevision == rev && prev.Phase != PhaseIdle {
		return PhaseComplete, ReasonRolloutComplete, fmt.Sprintf(
			"revision %s rolled out: %d of %d pods updated and available", rev, c.updatedAvailable, c.replicas), nil
	}
	return PhaseIdle, ReasonUpToDate, fmt.Sprintf("%d of %d pods at revision %s", c.updated, c.replicas, rev), nil
}

// rolling is step 3 of a plan under way: what the status says of the
// deletions chosen, or of what holds them back.
func rolling(in Input, c *census, ch *choice) (Phase, string, string) {
	maxU := in.Config.MaxUnavailable
	progress := fmt.Sprintf("%d of %d pods updated", c.updated, c.target)
	var waits []string
	if len(c.unlabelled) > 0 {
		waits = append(waits, "left alone, without a "+revisionLabel+" label: "+listSome(c.unlabelled, len(c.unlabelled), ", "))
	}
	if c.stuck > 0 {
		waits = append(waits, "stuck terminating: "+listSome(c.stuckFirst, c.stuck, "; "))
	}
	also := ""
	if len(waits) > 0 {
		also = "; " + strings.Join(waits, "; ")
	}
	switch {
	case ch.guard != nil && len(ch.deletions) > 0:
		return ch.guard.phase, ch.guard.reason, fmt.Sprintf("%s; meanwhile removing unhealthy %s; %s%s",
			ch.guard.message, listSome(ch.names, len(ch.deletions), ", "), progress, also)
	case (len(ch.waitDrain) > 0 || len(ch.deletions) > 0) && onlyDrainRequests(ch.deletions):
		return PhaseRolling, ReasonWaitingForDrain, waitingForDrainMessage(ch, in.Config) + also
	case len(ch.deletions) > 0:
		return PhaseRolling, ReasonDeletingPods, fmt.Sprintf("removing %s; %s%s",
			listSome(ch.names, len(ch.deletions), ", "), progress, also)
	case ch.guard != nil:
		return ch.guard.phase, ch.guard.reason, ch.guard.message + also
	case ch.pdbBlockedCount > 0 && ch.inFlight > 0:
		// The budgets are spent on replacements under way; they give the
		// headroom back as those become available. That is waiting, not a
		// block worth a warning.
		return PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
			"%d replacement(s) not yet available; until then: %s%s", ch.inFlight, listSome(ch.pdbBlocked, ch.pdbBlockedCount, "; "), also)
	case ch.pdbBlockedCount > 0:
		return PhaseBlocked, ReasonBlockedByPDB, "no more pods can be disrupted: " + listSome(ch.pdbBlocked, ch.pdbBlockedCount, "; ") + also
	case c.waitingDNS > 0:
		return PhaseRolling, ReasonWaitingForDNS, fmt.Sprintf(
			"waiting for DNS: %s%s", formatWaiting(c), also)
	case c.workLeft() && c.outdated == 0 && ch.inFlight == 0:
		// Only pods of unknown revision are left: nothing will change
		// until someone looks at them.
		return PhaseBlocked, ReasonUnknownRevision, "no outdated pod can be removed" + also
	case c.workLeft():
		return PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
			"%d of %d pods unavailable (max-unavailable %d); %s%s", ch.unavailable, c.replicas, maxU, progress, also)
	}
	return PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
		"waiting for updated pods to become available: %d of %d updated, %d available%s", c.updated, c.target, c.updatedAvailable, also)
}

const revisionLabel = appsv1.ControllerRevisionHashLabelKey

// finish keeps the times: the last transition when the phase changes, the last
// progress while a rollout runs, and turns a rollout past its deadline into
// Stalled.
func finish(in Input, plan Plan) Plan {
	st := &plan.Status
	now := metav1.NewTime(in.Now)
	prev := in.Previous
	if prev != nil && prev.Phase == st.Phase {
		st.LastTransitionTime = prev.LastTransitionTime
	} else {
		st.LastTransitionTime = now
	}
	if !st.Phase.Rolling() {
		return plan
	}
	progress := now
	if prev != nil && prev.Phase.Rolling() && prev.UpdateRevision == st.UpdateRevision &&
		prev.LastProgressTime != nil && st.UpdatedAvailable <= prev.UpdatedAvailable {
		progress = *prev.LastProgressTime
	}
	st.LastProgressTime = &progress
	deadline := in.Config.ProgressDeadline
	if deadline <= 0 {
		deadline = DefaultProgressDeadline
	}
	// A pod may take the whole drain timeout to answer before its
	// replacement can even start: that is no stall. Nor is waiting out
	// the health gate's stable-seconds.
	deadline += in.Config.DrainTimeout
	if in.Config.HealthQuery != "" {
		deadline += in.Config.HealthStable
	}
	stalled, healthLeft := healthStall(in, st, progress.Time)
	if stalled {
		if prev != nil && prev.Phase == PhaseStalled {
			st.LastTransitionTime = prev.LastTransitionTime
		} else {
			st.LastTransitionTime = now
		}
		return plan
	}
	if healthLeft > 0 && (plan.RequeueAfter == 0 || healthLeft < plan.RequeueAfter) {
		plan.RequeueAfter = healthLeft
	}
	left := progress.Add(deadline).Sub(in.Now)
	if left <= 0 {
		if prev != nil && prev.Phase == PhaseStalled {
			st.LastTransitionTime = prev.LastTransitionTime
		} else {
			st.LastTransitionTime = now
		}
		st.Phase = PhaseStalled
		// The message names the time, not the time elapsed: a message that
		// changes at every plan would have the status rewritten at every plan,
		// and each write wakes the controller again.
		st.Message = fmt.Sprintf("no pod became updated and available since %s (progress deadline %s): %s",
			progress.UTC().Format(time.RFC3339), deadline, st.Message)
		st.Reason = ReasonProgressDeadlineExceeded
		return plan
	}
	if plan.RequeueAfter == 0 || left < plan.RequeueAfter {
		plan.RequeueAfter = left
	}
	return plan
}

// previousPhase is the phase to keep while the planner cannot look.
func previousPhase(in Input) Phase {
	if in.Previous != nil {
		return in.Previous.Phase
	}
	return PhaseIdle
}

// dnsDeadlock says when pods could never turn Ready: the template waits for
// the DNS gate's condition, but the gate is off, or the headless Service does
// not publish not-ready addresses, so external-dns never publishes the pod.
func dnsDeadlock(sts *appsv1.StatefulSet, cfg Config, svc *corev1.Service) string {
	if !HasDNSReadinessGate(sts) {
		return ""
	}
	switch {
	case cfg.DNSDomain == "":
		return fmt.Sprintf("the pod template has readiness gate %s but %s is not set: no pod would ever turn Ready",
			ConditionDNSPropagated, AnnotationDNSDomain)
	case svc == nil:
		return fmt.Sprintf("the pod template has readiness gate %s but the governing Service %q does not exist: external-dns would never publish the pods",
			ConditionDNSPropagated, sts.Spec.ServiceName)
	case !svc.Spec.PublishNotReadyAddresses:
		return fmt.Sprintf("the pod template has readiness gate %s but Service %q does not set publishNotReadyAddresses: true, so external-dns never publishes a pod that is not Ready and no new pod would ever turn Ready",
			ConditionDNSPropagated, svc.Name)
	}
	return ""
}

// HasDNSReadinessGate reports whether the pod template waits for the DNS gate.
func HasDNSReadinessGate(sts *appsv1.StatefulSet) bool {
	for _, g := range sts.Spec.Template.Spec.ReadinessGates {
		if g.ConditionType == ConditionDNSPropagated {
			return true
		}
	}
	return false
}

// formatWaiting names the first pods waiting for DNS, with why.
func formatWaiting(c *census) string {
	parts := make([]string, len(c.waitingDNSFirst))
	for i, n := range c.waitingDNSFirst {
		parts[i] = n
		if w := c.waitingDNSWhy[n]; w != "" {
			parts[i] += " (" + w + ")"
		}
	}
	return listSome(parts, int(c.waitingDNS), "; ")
}

// maxListed is how many pods a message names at most: the status annotation
// and the events must stay small however many pods a StatefulSet has.
const maxListed = 10

// listSome joins the first maxListed of items, out of total, and says how
// many more there are.
func listSome(items []string, total int, sep string) string {
	if len(items) > maxListed {
		items = items[:maxListed]
	}
	cut := make([]string, len(items))
	for i, it := range items {
		cut[i] = Truncate(it, maxItem)
	}
	s := strings.Join(cut, sep)
	if more := total - len(items); more > 0 {
		s += fmt.Sprintf("%sand %d more", sep, more)
	}
	return s
}
