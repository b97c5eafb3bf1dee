package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

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
	// AwaitingDeletions counts deletions of ours the informers have not seen yet.
	AwaitingDeletions int
	// Previous is the status last written, nil when there is none.
	Previous *Status
	Now      time.Time
}

// Deletion is one pod to remove, how, and why it was chosen.
type Deletion struct {
	Pod    *corev1.Pod
	Method Method
	// Message says why this pod, in this order, for the event.
	Message string
}

// Plan is what the planner decided.
type Plan struct {
	Deletions []Deletion
	Status    Status
	// RequeueAfter is when the plan should be made again even if nothing changes
	// (a pod reaching minReadySeconds, the progress deadline); 0 for never.
	RequeueAfter time.Duration
}

// podView is one ordinal of the StatefulSet as the planner sees it.
type podView struct {
	ordinal int
	pod     *corev1.Pod // nil: missing; the built-in controller will create it
	// terminating pods, like missing ones, come back at the update revision.
	terminating bool
	updated     bool
	ready       bool
	available   bool
	leader      bool
	// waitingForDNS: the pod has an IP the DNS gate has not seen propagated
	// (with the readiness gate in the template, it is not Ready either).
	waitingForDNS bool
	// availableIn is how long until a Ready pod passes minReadySeconds.
	availableIn time.Duration
}

func (v *podView) name() string { return v.pod.Name }

// Compute makes the plan: which outdated pods to delete now, and the status.
// See DESIGN.md, "Which pods, in which order".
func Compute(in Input) Plan {
	sts := in.StatefulSet
	cfg := in.Config
	replicas := Replicas(sts)
	views, requeue := viewPods(in)

	st := Status{
		UpdateRevision:     sts.Status.UpdateRevision,
		Replicas:           replicas,
		ObservedGeneration: sts.Generation,
	}
	waitingDNS := map[string]string{}
	for _, v := range views {
		if v.pod == nil || v.terminating {
			continue
		}
		if v.updated {
			st.Updated++
		}
		if v.available {
			st.Available++
			if v.updated {
				st.UpdatedAvailable++
			}
		}
		if v.waitingForDNS {
			waitingDNS[v.name()] = in.DNS[v.name()].Message
		}
	}
	if len(waitingDNS) > 0 {
		st.WaitingForDNS = waitingDNS
	}

	plan := Plan{}
	stop := func(phase Phase, reason, msg string) Plan {
		plan.Status = st
		plan.Status.Phase, plan.Status.Reason, plan.Status.Message = phase, reason, msg
		plan.RequeueAfter = requeue
		return finish(in, plan)
	}
	switch {
	case !IsOnDelete(sts):
		return stop(PhaseInvalid, ReasonNotOnDelete, fmt.Sprintf(
			"spec.updateStrategy.type is %q: stsroller deletes pods only for OnDelete StatefulSets; set it to OnDelete or remove the %s annotation",
			sts.Spec.UpdateStrategy.Type, AnnotationEnabled))
	case in.ConfigError != nil:
		return stop(PhaseInvalid, ReasonInvalidConfig, in.ConfigError.Error())
	case cfg.Paused:
		return stop(PhasePaused, ReasonPaused, fmt.Sprintf("%s is \"true\": nothing is deleted until it is removed", AnnotationPaused))
	case sts.Status.ObservedGeneration < sts.Generation:
		return stop(previousPhase(in), ReasonGenerationNotObserved, fmt.Sprintf(
			"waiting for the StatefulSet controller to observe generation %d (observed %d)", sts.Generation, sts.Status.ObservedGeneration))
	case sts.Status.UpdateRevision == "":
		// Every pod would look outdated.
		return stop(previousPhase(in), ReasonGenerationNotObserved,
			"waiting for the StatefulSet controller to report status.updateRevision")
	}

	outdated := 0
	for _, v := range views {
		if v.pod != nil && !v.terminating && !v.updated {
			outdated++
		}
	}
	target := max(replicas-cfg.Partition, 0)
	// coming counts pods that are, or will be, at the update revision:
	// updated pods, and missing or terminating ones the built-in controller
	// recreates at the update revision.
	coming := int32(0)
	inFlight := int32(0)
	unavailable := int32(0)
	for _, v := range views {
		if v.pod == nil || v.terminating || v.updated {
			coming++
		}
		if v.pod == nil || v.terminating || (v.updated && !v.available) {
			inFlight++
		}
		if !v.available {
			unavailable++
		}
	}
	room := target - coming
	// rolling: there are pods we may delete now.
	rolling := outdated > 0 && room > 0
	prevRolling := in.Previous != nil && in.Previous.Phase.Rolling()
	// concluded: this revision was already rolled out, or found in place; a
	// pod missing now is a disruption, not a rollout.
	concluded := in.Previous != nil && in.Previous.UpdateRevision == st.UpdateRevision &&
		(in.Previous.Phase == PhaseComplete || in.Previous.Phase == PhaseIdle)
	// pending: outdated pods remain and the target is not reached, though
	// the pods on their way (missing, terminating) leave nothing to delete.
	pending := outdated > 0 && st.Updated < target && !concluded
	// underWay: a rollout has not reached its target, or its last
	// replacements are not available yet.
	underWay := rolling || pending || (prevRolling && (st.Available < replicas || st.Updated < target))

	// A readiness gate nobody can satisfy is worth saying whether or not a
	// rollout runs: new pods would never turn Ready. Without a rollout under
	// way it blocks none, and must not start the progress deadline.
	if msg := dnsDeadlock(sts, cfg, in.Service); msg != "" {
		phase := PhaseIdle
		if underWay {
			phase = PhaseBlocked
		}
		return stop(phase, ReasonDNSGateDeadlock, msg)
	}
	if cfg.DNSDomain != "" && in.DNSError != nil {
		return stop(PhaseInvalid, ReasonInvalidConfig, in.DNSError.Error())
	}
	if underWay {
		// Guards that stop every deletion for this StatefulSet.
		if in.AwaitingDeletions > 0 {
			return stop(PhaseRolling, ReasonWaitingForDeletion, fmt.Sprintf(
				"waiting to observe %d pod deletion(s) already made", in.AwaitingDeletions))
		}
		if msg := multipleBudgets(views, in.Budgets); msg != "" {
			return stop(PhaseBlocked, ReasonMultiplePDBs, msg)
		}
		if in.BudgetError != nil {
			return stop(PhaseBlocked, ReasonBlockedByPDB, in.BudgetError.Error())
		}
		if cfg.DNSDomain != "" {
			if msg := dnsUnreachable(views, in.DNS); msg != "" {
				return stop(PhaseBlocked, ReasonDNSUnreachable, msg)
			}
		}
	}

	// Candidates in the order they go: unhealthy first, then healthy
	// non-leaders, then leaders; highest ordinal first within each group.
	var unhealthy, healthy, leaders, draining []*podView
	for i := range views {
		v := &views[i]
		switch {
		case v.pod == nil || v.terminating || v.updated:
		case !v.ready:
			unhealthy = append(unhealthy, v)
		case cfg.DrainTimeout > 0 && PodDrain(v.pod).Requested:
			draining = append(draining, v)
		case v.leader:
			leaders = append(leaders, v)
		default:
			healthy = append(healthy, v)
		}
	}
	nonLeaderOutdated := len(healthy)
	for _, v := range unhealthy {
		if !v.leader {
			nonLeaderOutdated++
		}
	}
	// A pod asked to drain is leaving: it counts as unavailable, and it is
	// an outdated non-leader the leader waits for.
	drainUnavailable, drainNonLeaders := countDraining(draining)
	unavailable += drainUnavailable
	nonLeaderOutdated += drainNonLeaders

	var deleted []string
	for _, v := range unhealthy {
		if room <= 0 || inFlight >= cfg.MaxUnavailable {
			break
		}
		plan.Deletions = append(plan.Deletions, Deletion{Pod: v.pod, Method: MethodDelete, Message: fmt.Sprintf(
			"%s is outdated and not ready (%s): replaced first, it costs no availability", v.name(), unhealthyWhy(v.pod))})
		deleted = append(deleted, v.name())
		room--
		inFlight++
	}

	used := map[string]int32{}
	// waitDrain names the pods asked to drain and not evicted now, with the
	// request's time.
	waitDrain := map[string]string{}
	// pdbBlocked names the pods a budget held back; only the first few are
	// formatted, for the message.
	var pdbBlocked []string
	blocked := 0
	// evict plans the eviction of v unless a budget holds it back; the
	// message is made only for pods that go.
	evict := func(v *podView, why func() string) bool {
		for _, b := range in.Budgets[v.name()] {
			// A stale budget allows nothing, whatever its count says.
			if b.Stale || b.Allowed-used[b.Name] <= 0 {
				blocked++
				switch {
				case len(pdbBlocked) == maxListed:
				case b.Stale:
					pdbBlocked = append(pdbBlocked, fmt.Sprintf("%s (PodDisruptionBudget %s: status not yet observed)", v.name(), b.Name))
				default:
					pdbBlocked = append(pdbBlocked, fmt.Sprintf("%s (PodDisruptionBudget %s allows no more disruptions)", v.name(), b.Name))
				}
				return false
			}
		}
		for _, b := range in.Budgets[v.name()] {
			used[b.Name]++
		}
		plan.Deletions = append(plan.Deletions, evictOrAsk(in, v.pod, why(), waitDrain))
		deleted = append(deleted, v.name())
		room--
		if v.available {
			unavailable++
		}
		return true
	}
	// Pods asked to drain go first: they hold their budgets, and are evicted
	// once they answer or time out.
	for _, v := range draining {
		for _, b := range in.Budgets[v.name()] {
			used[b.Name]++
		}
	}
	for _, v := range draining {
		if room <= 0 {
			break
		}
		room--
		d, wait := drainedEviction(in, v.pod, waitDrain)
		if d == nil {
			if wait > 0 && (requeue == 0 || wait < requeue) {
				requeue = wait
			}
			continue
		}
		held := false
		for _, b := range in.Budgets[v.name()] {
			// used counts this pod already.
			if b.Stale || b.Allowed-used[b.Name]+1 <= 0 {
				held = true
				blocked++
				if len(pdbBlocked) < maxListed {
					pdbBlocked = append(pdbBlocked, fmt.Sprintf("%s (drained; PodDisruptionBudget %s allows no more disruptions)", v.name(), b.Name))
				}
				break
			}
		}
		if held {
			waitDrain[v.name()] = v.pod.Annotations[AnnotationDrainRequested]
			continue
		}
		plan.Deletions = append(plan.Deletions, *d)
		deleted = append(deleted, v.name())
	}
	for _, v := range healthy {
		if room <= 0 || unavailable >= cfg.MaxUnavailable {
			break
		}
		evict(v, func() string {
			return fmt.Sprintf("%s is outdated (ordinal %d, highest first); %d of %d pods unavailable allowed",
				v.name(), v.ordinal, cfg.MaxUnavailable, replicas)
		})
	}
	if nonLeaderOutdated == 0 {
		for _, v := range leaders {
			if room <= 0 || unavailable >= cfg.MaxUnavailable {
				break
			}
			evict(v, func() string {
				return fmt.Sprintf("%s is the leader and the last outdated pod: replaced once, last", v.name())
			})
		}
	}

	if len(waitDrain) > 0 {
		st.WaitingForDrain = waitDrain
	}
	switch {
	case len(waitDrain) > 0 && onlyDrainRequests(plan.Deletions):
		return stop(PhaseRolling, ReasonWaitingForDrain, waitingForDrainMessage(waitDrain, cfg))
	case len(deleted) > 0:
		return stop(PhaseRolling, ReasonDeletingPods, fmt.Sprintf("removing %s; %d of %d pods updated",
			listSome(deleted, len(deleted), ", "), st.Updated, target))
	case rolling && blocked > 0 && inFlight > 0:
		// The budgets are spent on replacements under way; they give the
		// headroom back as those become available. That is waiting, not a
		// block worth a warning.
		return stop(PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
			"%d replacement(s) not yet available; until then: %s", inFlight, listSome(pdbBlocked, blocked, "; ")))
	case rolling && blocked > 0:
		return stop(PhaseBlocked, ReasonBlockedByPDB, "no more pods can be disrupted: "+listSome(pdbBlocked, blocked, "; "))
	case rolling || pending || (prevRolling && (st.Updated < target || st.UpdatedAvailable < st.Updated)):
		if len(waitingDNS) > 0 {
			return stop(PhaseRolling, ReasonWaitingForDNS, fmt.Sprintf(
				"waiting for DNS: %s", formatWaiting(waitingDNS)))
		}
		if rolling {
			return stop(PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
				"%d of %d pods unavailable (max-unavailable %d); %d of %d pods updated",
				unavailable, replicas, cfg.MaxUnavailable, st.Updated, target))
		}
		return stop(PhaseRolling, ReasonWaitingForAvailability, fmt.Sprintf(
			"waiting for updated pods to become available: %d of %d updated, %d available", st.Updated, target, st.UpdatedAvailable))
	}
	if in.Previous != nil && in.Previous.UpdateRevision == st.UpdateRevision && in.Previous.Phase != PhaseIdle {
		return stop(PhaseComplete, ReasonRolloutComplete, fmt.Sprintf(
			"revision %s rolled out: %d of %d pods updated and available", st.UpdateRevision, st.UpdatedAvailable, replicas))
	}
	return stop(PhaseIdle, ReasonUpToDate, fmt.Sprintf("%d of %d pods at revision %s", st.Updated, replicas, st.UpdateRevision))
}

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

// viewPods looks at each ordinal the StatefulSet should have, and says how long
// until a Ready pod passes minReadySeconds (0 when none waits).
func viewPods(in Input) ([]podView, time.Duration) {
	sts := in.StatefulSet
	start := 0
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	replicas := int(Replicas(sts))
	byOrdinal := make(map[int]*corev1.Pod, len(in.Pods))
	for _, p := range in.Pods {
		if o, ok := Ordinal(sts, p); ok && o >= start && o < start+replicas {
			byOrdinal[o] = p
		}
	}
	minReady := time.Duration(sts.Spec.MinReadySeconds) * time.Second
	leader := in.Config.LeaderSelector
	if leader == nil {
		leader = labels.Nothing()
	}
	var requeue time.Duration
	views := make([]podView, 0, replicas)
	for o := start + replicas - 1; o >= start; o-- {
		v := podView{ordinal: o, pod: byOrdinal[o]}
		if v.pod != nil {
			p := v.pod
			v.terminating = p.DeletionTimestamp != nil
			v.updated = Revision(p) == sts.Status.UpdateRevision
			v.leader = leader.Matches(labels.Set(p.Labels))
			v.ready = IsRunningAndReady(p)
			dnsOK := true
			if in.Config.DNSDomain != "" && !v.terminating {
				s := in.DNS[p.Name]
				dnsOK = s.Propagated && !s.Unreachable
				v.waitingForDNS = !dnsOK && p.Status.PodIP != ""
			}
			if v.ready && !v.terminating {
				minReadyOK := true
				// Without minReadySeconds, Ready is available at once, even
				// when the kubelet's clock runs ahead of ours.
				if minReady > 0 {
					since := in.Now.Sub(readySince(p))
					if since < minReady {
						minReadyOK = false
						v.availableIn = minReady - since
						if requeue == 0 || v.availableIn < requeue {
							requeue = v.availableIn
						}
					}
				}
				v.available = dnsOK && minReadyOK
			}
		}
		views = append(views, v)
	}
	return views, requeue
}

// Ordinal parses the pod's ordinal from its name, <statefulset>-<ordinal>.
func Ordinal(sts *appsv1.StatefulSet, pod *corev1.Pod) (int, bool) {
	s, ok := strings.CutPrefix(pod.Name, sts.Name+"-")
	if !ok {
		return 0, false
	}
	// Digits only, without leading zeros: the one spelling the StatefulSet
	// controller gives an ordinal.
	if s == "" || len(s) > 1 && s[0] == '0' || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	o, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	return o, true
}

// Revision is the pod's controller-revision-hash label.
func Revision(pod *corev1.Pod) string {
	return pod.Labels[appsv1.ControllerRevisionHashLabelKey]
}

// IsRunningAndReady reports whether the pod runs and its Ready condition
// (which includes every readiness gate) is True.
func IsRunningAndReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	c := podCondition(pod, corev1.PodReady)
	return c != nil && c.Status == corev1.ConditionTrue
}

func readySince(pod *corev1.Pod) time.Time {
	if c := podCondition(pod, corev1.PodReady); c != nil {
		return c.LastTransitionTime.Time
	}
	return time.Time{}
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// unhealthyWhy names what is wrong with a pod that is not ready.
func unhealthyWhy(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" {
			return w.Reason
		}
	}
	if pod.Status.Phase != corev1.PodRunning {
		return string(pod.Status.Phase)
	}
	return "NotReady"
}

// multipleBudgets names the pods more than one budget selects. The eviction API
// refuses such pods, and stsroller will not guess which budget wins.
func multipleBudgets(views []podView, budgets map[string][]pdb.Budget) string {
	var bad []string
	for _, v := range views {
		if v.pod == nil {
			continue
		}
		if bs := budgets[v.name()]; len(bs) > 1 {
			names := make([]string, len(bs))
			for i, b := range bs {
				names[i] = b.Name
			}
			slices.Sort(names)
			bad = append(bad, fmt.Sprintf("%s (%s)", v.name(), strings.Join(names, ", ")))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return "more than one PodDisruptionBudget selects a pod, so none of them can be evicted safely: " + listSome(bad, len(bad), "; ")
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

func dnsUnreachable(views []podView, dns map[string]DNSState) string {
	var bad []string
	for _, v := range views {
		if v.pod == nil || v.terminating {
			continue
		}
		if s := dns[v.name()]; s.Unreachable {
			bad = append(bad, fmt.Sprintf("%s: %s", v.name(), s.Message))
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return "an authoritative DNS server cannot be asked, so no replacement could be proven resolvable: " + listSome(bad, len(bad), "; ")
}

func formatWaiting(m map[string]string) string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(a, b) })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n
		if m[n] != "" {
			parts[i] += " (" + m[n] + ")"
		}
	}
	return listSome(parts, len(parts), "; ")
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
	s := strings.Join(items, sep)
	if more := total - len(items); more > 0 {
		s += fmt.Sprintf("%sand %d more", sep, more)
	}
	return s
}
