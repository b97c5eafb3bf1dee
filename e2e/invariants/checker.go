// Package invariants judges what stsroller asked of the API server against
// the state of the cluster at the moment it asked.
//
// Who removed a pod, when, and with what answer comes from the
// kube-apiserver's audit log (e2e/cluster writes one): every pod delete,
// pods/eviction create and pod patch of the test's namespace, with the user,
// the user agent, the response code and the time the API server received
// the request. A request is stsroller's when its Identity matches; only the
// successful (2xx) ones took effect. Nothing is inferred from pod state:
// kwok's late delete by name, the garbage collector, a drain and the
// StatefulSet controller are simply not stsroller.
//
// The state at a request's time comes from one watch of the namespace's
// pods, StatefulSets and PodDisruptionBudgets, every change kept with the
// time it arrived. A watch delivers a change after the API server made it,
// never before, so the state the API server had at time T is either the
// last one that arrived by T or one that arrived within Lag after it: the
// checker looks ahead, never back. A rule fires only if it fires for every
// state the API server may have had, so a lagging watch causes no false
// violation, and a change made before the request and shown after it
// cannot hide one for longer than Lag.
//
// The rules, for each of stsroller's successful removals (a delete or an
// eviction) and drain requests (a patch that sets stsroller.io/drain-requested):
//
//   - hands off: the pod belongs to a StatefulSet that exists; it is not
//     being deleted, is enabled, OnDelete, valid, not paused, and its
//     generation was observed;
//   - only outdated pods: the pod's controller-revision-hash is not the
//     update revision;
//   - partition: at least stsroller.io/partition pods of the old revision
//     stay (outdated, not removed, not asked to drain);
//   - Ready pods only by eviction: stsroller deletes only pods that are not
//     Running and Ready;
//   - unhealthy first: no healthy pod is evicted or asked to drain while an
//     outdated pod that is not Running and Ready is left;
//   - leader last, and alone: a healthy pod matching the leader selector goes
//     (or is asked) only while every other pod is updated and Ready;
//   - max-unavailable: an eviction or a drain request leaves at most
//     max-unavailable pods unavailable or asked to drain, itself included;
//     an unhealthy pod's deletion leaves at most max-unavailable
//     replacements in flight (missing, terminating, updated and not Ready);
//   - drain handshake: with stsroller.io/drain-timeout-seconds, a healthy
//     pod is evicted only after its request for the update revision was
//     answered (stsroller.io/drain-complete) or timed out; a pod is asked
//     once per rollout: not again while its request stands;
//   - rollout groups: an eviction or drain request only while every other
//     member of the group has all its pods Ready, live and not asked to
//     drain; an unhealthy pod's deletion only while no other member has
//     replacements on their way;
//   - no deletecollection.
//
// For every successful eviction, by anyone, of a Ready pod: each budget over
// it keeps its desired healthy pods. And no pod of a StatefulSet stsroller
// does not manage gets its DNS condition.
//
// The checker parses stsroller's annotations itself (config.go), never with
// the policy package it checks.
package invariants

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// Lag is how long after the API server made a change the checker's watch may
// show it: a request at T is judged against every state that arrived by
// T+Lag (the last one by T and those after it).
const Lag = 2 * time.Second

// settle is how long after T+Lag a request waits before it is judged, for
// the audit lines of requests received before it.
const settle = time.Second

// EnvAuditLog names the API server's audit log for Watch; the e2e suite's
// TestMain sets it to the local cluster's.
const EnvAuditLog = "STSROLLER_E2E_AUDIT_LOG"

// ErrNoAuditLog: Watch was given no audit log, so nothing can be attributed.
var ErrNoAuditLog = errors.New("no kube-apiserver audit log (" + EnvAuditLog + " is empty): the invariants are judged from the requests it records; the local cluster of e2e/cluster writes one")

// Options configure a checker.
type Options struct {
	// Identity is stsroller's. Default DefaultIdentity.
	Identity Identity
	// AuditLog is the path of the API server's audit log (JSON lines of
	// audit.k8s.io/v1 Events). Watch's default: $STSROLLER_E2E_AUDIT_LOG.
	AuditLog string
	// Lease, when set, names the leader-election Lease of the namespace
	// that stsroller instances of distinct users hold: each removal and
	// drain request must then come from the user whose write of the Lease
	// the API server received last before it (one holder at a time).
	Lease string
	// StallAfter, when set, makes a stall a violation: a StatefulSet that
	// stsroller could act on within every limit (see couldActLocked) for
	// longer than this, with no request of stsroller's for its pods.
	StallAfter time.Duration
}

// Checker checks the invariants of one namespace. Its methods are safe for
// concurrent use.
type Checker struct {
	clock    clock.Clock
	identity Identity
	tail     *auditTail // nil without Watch
	ns       string

	mu      sync.Mutex
	sets    map[string]*setState // by name
	pods    map[string]*corev1.Pod
	history map[string][]podAt // by pod name, oldest first
	pdbs    map[string]*policyv1.PodDisruptionBudget
	// removals are every successful delete and eviction, by anyone, by pod
	// name: a pod removed before a request is unavailable at it.
	removals map[string][]*removal
	pending  []*AuditEvent
	// lease and leaseWrites: Options.Lease and its successful writes, in
	// the order received.
	lease       string
	leaseWrites []leaseWrite
	// stallAfter is Options.StallAfter.
	stallAfter time.Duration

	checks     int
	violations []string
	deletions  int
	completed  int
	stats      Stats
}

// podAt is a pod as the watch showed it at a time; pod is nil once it is
// gone.
type podAt struct {
	at  time.Time
	pod *corev1.Pod
}

type leaseWrite struct {
	at   time.Time
	user string
}

type removal struct {
	at   time.Time
	name string
	// uid is the incarnation removed, known once the watch has had Lag.
	uid      types.UID
	resolved bool
}

type setState struct {
	uid  types.UID
	name string
	// history of the StatefulSet, oldest first, one entry per change.
	history []setAt
	// phases are the distinct phase/reason pairs of the status seen, in
	// order.
	phases []string
	// idleSince is when stsroller could last begin to act on the set
	// without having acted since (zero: it could not); acted is the time of
	// its last request of one of the set's pods; stalled says the stall
	// since idleSince was reported.
	idleSince, acted time.Time
	stalled          bool
}

type setAt struct {
	at       time.Time
	replicas int32
	cfg      config
	// updateRevision is status.updateRevision; observed says whether
	// status.observedGeneration >= metadata.generation.
	updateRevision string
	observed       bool
	deleting       bool // deletion timestamp set, or the object is gone
	status         *status
	minReady       int32 // spec.minReadySeconds
}

// New returns a checker fed by nothing yet; Watch feeds it from a cluster,
// tests feed it with the On* methods.
func New(clk clock.Clock, opts Options) *Checker {
	if opts.Identity == (Identity{}) {
		opts.Identity = DefaultIdentity
	}
	return &Checker{
		clock: clk, identity: opts.Identity, sets: map[string]*setState{}, pods: map[string]*corev1.Pod{},
		history: map[string][]podAt{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		removals: map[string][]*removal{}, lease: opts.Lease, stallAfter: opts.StallAfter,
	}
}

// Watch starts a checker on namespace ns until ctx is done, with the audit
// log of $STSROLLER_E2E_AUDIT_LOG and DefaultIdentity.
func Watch(ctx context.Context, client kubernetes.Interface, ns string) (*Checker, error) {
	return WatchWith(ctx, client, ns, Options{AuditLog: os.Getenv(EnvAuditLog)})
}

// WatchWith starts a checker on namespace ns until ctx is done: informers
// on its pods, StatefulSets and PodDisruptionBudgets, a tail of the audit
// log from its current end, and a loop that judges each request once the
// watch has had Lag to show the state around it.
func WatchWith(ctx context.Context, client kubernetes.Interface, ns string, opts Options) (*Checker, error) {
	if opts.AuditLog == "" {
		return nil, ErrNoAuditLog
	}
	tail, err := openAuditTail(opts.AuditLog)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	c := New(clock.RealClock{}, opts)
	c.tail, c.ns = tail, ns
	f := kinformers.NewSharedInformerFactoryWithOptions(client, 0, kinformers.WithNamespace(ns))
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandlerFuncs
	}{
		{f.Apps().V1().StatefulSets().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.OnStatefulSet(o.(*appsv1.StatefulSet)) },
			UpdateFunc: func(_, o any) { c.OnStatefulSet(o.(*appsv1.StatefulSet)) },
			DeleteFunc: func(o any) {
				if s, ok := unwrap(o).(*appsv1.StatefulSet); ok {
					c.OnStatefulSetDeleted(s)
				}
			},
		}},
		{f.Policy().V1().PodDisruptionBudgets().Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { c.OnPDB(o.(*policyv1.PodDisruptionBudget)) },
			UpdateFunc: func(_, o any) { c.OnPDB(o.(*policyv1.PodDisruptionBudget)) },
			DeleteFunc: func(o any) {
				if p, ok := unwrap(o).(*policyv1.PodDisruptionBudget); ok {
					c.OnPDBDeleted(p)
				}
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			tail.close()
			return nil, err
		}
	}
	// The StatefulSets and budgets first, so that the pods' first events
	// find their owners.
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	podInf := f.Core().V1().Pods().Informer()
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.OnPod(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { c.OnPod(o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if p, ok := unwrap(o).(*corev1.Pod); ok {
				c.OnPodDeleted(p)
			}
		},
	}); err != nil {
		tail.close()
		return nil, err
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				f.Shutdown()
				return
			case <-t.C:
				c.Resolve(false)
			}
		}
	}()
	return c, nil
}

func unwrap(o any) any {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return o
}

// OnStatefulSet records a StatefulSet's state.
func (c *Checker) OnStatefulSet(s *appsv1.StatefulSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[s.Name]
	if st == nil || st.uid != s.UID {
		st = &setState{uid: s.UID, name: s.Name}
		c.sets[s.Name] = st
	}
	h := setAt{at: c.clock.Now(), replicas: ptr.Deref(s.Spec.Replicas, 1), cfg: parseConfig(s),
		updateRevision: s.Status.UpdateRevision, observed: s.Status.ObservedGeneration >= s.Generation,
		deleting: s.DeletionTimestamp != nil, status: parseStatus(s.Annotations), minReady: s.Spec.MinReadySeconds}
	st.history = append(st.history, h)
	if h.status != nil {
		pr := h.status.Phase + "/" + h.status.Reason
		if len(st.phases) == 0 || st.phases[len(st.phases)-1] != pr {
			st.phases = append(st.phases, pr)
		}
	}
}

// Phases are the phase/reason pairs a StatefulSet's status went through, in
// order (a repeat only after another).
func (c *Checker) Phases(set string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.sets[set]; st != nil {
		return append([]string(nil), st.phases...)
	}
	return nil
}

// OnStatefulSetDeleted records that a StatefulSet is gone.
func (c *Checker) OnStatefulSetDeleted(s *appsv1.StatefulSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[s.Name]
	if st == nil || st.uid != s.UID {
		return
	}
	h := st.history[len(st.history)-1]
	h.at, h.deleting = c.clock.Now(), true
	st.history = append(st.history, h)
}

// OnPDB records a budget.
func (c *Checker) OnPDB(p *policyv1.PodDisruptionBudget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pdbs[p.Name] = p
}

// OnPDBDeleted forgets a budget.
func (c *Checker) OnPDBDeleted(p *policyv1.PodDisruptionBudget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pdbs, p.Name)
}

// OnPod records a pod's new state.
func (c *Checker) OnPod(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	old := c.pods[p.Name]
	if old != nil && old.UID != p.UID {
		// The old pod went without our seeing its end.
		c.goneLocked(old, now)
		old = nil
	}
	if old != nil && old.DeletionTimestamp == nil && p.DeletionTimestamp != nil {
		c.deletions++
	}
	c.pods[p.Name] = p
	c.history[p.Name] = append(c.history[p.Name], podAt{at: now, pod: p})
	c.touchedLocked(old, p)
}

// OnPodDeleted records a pod that is gone.
func (c *Checker) OnPodDeleted(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.pods[p.Name]
	if old == nil || old.UID != p.UID {
		return
	}
	c.goneLocked(old, c.clock.Now())
}

func (c *Checker) goneLocked(old *corev1.Pod, now time.Time) {
	if old.DeletionTimestamp == nil {
		c.deletions++
	}
	delete(c.pods, old.Name)
	c.history[old.Name] = append(c.history[old.Name], podAt{at: now})
}

// ForcedDeletion says whether a terminating pod was deleted with grace period
// 0 on purpose: its deletion grace period is 0 though it has one of its own,
// runs on a node and has not finished. The checker does not need it (the
// audit log says who deleted); framework's pod watcher, which has no audit
// log, uses it to leave kwok's late delete by name out of its counts.
func ForcedDeletion(p *corev1.Pod) bool {
	return p.DeletionTimestamp != nil && p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 0 &&
		ptr.Deref(p.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds) > 0 &&
		p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
}

// DeletedAtOnce says whether a pod that a watch's DELETED event reports gone,
// never having shown a deletion timestamp, was deleted with grace period 0
// (see ForcedDeletion: for framework's pod watcher, not the checker).
func DeletedAtOnce(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil &&
		ptr.Deref(p.Spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds) > 0
}

// touchedLocked checks that stsroller's pod condition appears only on pods
// of managed StatefulSets.
func (c *Checker) touchedLocked(old, cur *corev1.Pod) {
	if set := c.ownerLocked(cur); set != "" {
		h := c.sets[set].last()
		if h.cfg.enabled && h.cfg.onDelete {
			return
		}
	}
	c.checks++
	before := conditionOf(old, ConditionDNSPropagated)
	after := conditionOf(cur, ConditionDNSPropagated)
	if after != nil && (before == nil || *before != *after) {
		c.violatef("pod %s of another owner got condition %s=%s", cur.Name, after.Type, after.Status)
	}
}

func (s *setState) last() setAt { return s.history[len(s.history)-1] }

func conditionOf(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	if p == nil {
		return nil
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			c := p.Status.Conditions[i]
			c.LastProbeTime, c.LastTransitionTime = metav1.Time{}, metav1.Time{}
			return &c
		}
	}
	return nil
}

// ownerLocked is the name of the known StatefulSet controlling p, or "".
func (c *Checker) ownerLocked(p *corev1.Pod) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "StatefulSet" {
		return ""
	}
	if s := c.sets[ref.Name]; s != nil && s.uid == ref.UID {
		return ref.Name
	}
	return ""
}

// OnAudit records an audit event of the namespace (Watch feeds the audit
// log's): a removal by anyone is noted at once, stsroller's requests are
// judged once the watch has had Lag.
func (c *Checker) OnAudit(e *AuditEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auditLocked(e)
}

func (c *Checker) auditLocked(e *AuditEvent) {
	k := e.kind()
	if k == "" {
		return
	}
	if k == kindLease {
		if c.lease != "" && e.ObjectRef.Name == c.lease && e.succeeded() {
			i := sort.Search(len(c.leaseWrites), func(i int) bool { return c.leaseWrites[i].at.After(e.RequestReceivedTimestamp) })
			c.leaseWrites = slices.Insert(c.leaseWrites, i, leaseWrite{at: e.RequestReceivedTimestamp, user: e.User.Username})
		}
		return
	}
	if (k == kindDelete || k == kindEvict) && e.succeeded() {
		c.removals[e.ObjectRef.Name] = append(c.removals[e.ObjectRef.Name],
			&removal{at: e.RequestReceivedTimestamp, name: e.ObjectRef.Name})
	}
	ours := c.identity.matches(e)
	if ours {
		for set, st := range c.sets {
			if _, isOrd := ordinal(e.ObjectRef.Name, set); isOrd && e.RequestReceivedTimestamp.After(st.acted) {
				st.acted = e.RequestReceivedTimestamp
			}
		}
	}
	switch {
	case ours && !e.succeeded():
		if k != kindPatch {
			c.stats.Refused++
		}
		return
	case !ours && k == kindEvict && e.succeeded():
		// Anyone's eviction is judged against the budgets.
	case !ours:
		if k == kindDelete && e.succeeded() {
			c.stats.Others++
		}
		return
	}
	c.pending = append(c.pending, e)
}

// Resolve reads the audit log and judges the requests whose states have all
// arrived, or, with all, every request read.
func (c *Checker) Resolve(all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tail != nil {
		for _, e := range c.tail.read(c.ns) {
			c.auditLocked(e)
		}
	}
	sort.SliceStable(c.pending, func(i, j int) bool {
		return c.pending[i].RequestReceivedTimestamp.Before(c.pending[j].RequestReceivedTimestamp)
	})
	now := c.clock.Now()
	n := 0
	for _, e := range c.pending {
		if !all && now.Sub(e.RequestReceivedTimestamp) < Lag+settle {
			break
		}
		c.judgeLocked(e)
		n++
	}
	c.pending = c.pending[n:]
	if c.stallAfter > 0 {
		c.stallsLocked(now)
	}
}

// stallsLocked reports each StatefulSet that stsroller could have acted on
// for longer than StallAfter, all that time, without a request for one of
// its pods.
func (c *Checker) stallsLocked(now time.Time) {
	names := make([]string, 0, len(c.sets))
	for name := range c.sets {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		st := c.sets[name]
		why := c.couldActLocked(st)
		if why == "" || !st.acted.Before(st.idleSince) {
			st.idleSince, st.stalled = time.Time{}, false
			if why != "" {
				st.idleSince = now
			}
			continue
		}
		if st.idleSince.IsZero() {
			st.idleSince = now
		}
		if !st.stalled && now.Sub(st.idleSince) > c.stallAfter {
			st.stalled = true
			c.checks++
			c.violatef("StatefulSet %s stalled: for %s since %s stsroller could act (%s) but sent no request for its pods",
				name, now.Sub(st.idleSince).Round(100*time.Millisecond), st.idleSince.Format("15:04:05.000"), why)
		}
	}
}

// couldActLocked says why stsroller could act on the StatefulSet now, by the
// watch's latest state, within every limit, or "" if it could not or the
// checker cannot tell: managed, valid and not paused; every pod below
// replicas there, Running, Ready and not asked to drain, no other pod of the
// set terminating; more outdated pods than the partition keeps; each budget
// over its pods observed and allowing a disruption (and no pod under two).
// Rollout groups, the DNS gate, minReadySeconds, rollout locks and the
// health gate, which the checker does not model, never count as could-act.
func (c *Checker) couldActLocked(st *setState) string {
	s := st.last()
	if s.deleting || !s.cfg.enabled || !s.cfg.onDelete || s.cfg.invalid != "" || s.cfg.paused || !s.observed ||
		s.updateRevision == "" || s.cfg.group != "" || s.cfg.dnsGate || s.cfg.waitsElsewhere || s.minReady > 0 || s.replicas == 0 {
		return ""
	}
	var pods []*corev1.Pod
	outdated := int32(0)
	for _, p := range c.pods {
		n, isOrd := ordinal(p.Name, st.name)
		if !isOrd || c.ownerLocked(p) != st.name {
			continue
		}
		if p.DeletionTimestamp != nil {
			return ""
		}
		if int32(n) >= s.replicas {
			continue
		}
		if !runningReady(p) || p.Annotations[AnnotationDrainRequested] != "" {
			return ""
		}
		if r := p.Labels[appsv1.ControllerRevisionHashLabelKey]; r == "" || r != s.updateRevision {
			outdated++
		}
		pods = append(pods, p)
	}
	if int32(len(pods)) != s.replicas || outdated <= s.cfg.partition {
		return ""
	}
	covered := map[string]int{}
	for _, pdb := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() {
			return ""
		}
		over := false
		for _, p := range pods {
			if sel.Matches(labels.Set(p.Labels)) {
				over = true
				covered[p.Name]++
			}
		}
		if over && (pdb.Status.ObservedGeneration < pdb.Generation || pdb.Status.DisruptionsAllowed < 1) {
			return ""
		}
	}
	for _, n := range covered {
		if n > 1 {
			return ""
		}
	}
	return fmt.Sprintf("%d of %d pods outdated, all Ready, partition %d, every budget allowing a disruption", outdated, s.replicas, s.cfg.partition)
}

// candidates are the states a pod of this name may have had at the API
// server at time t: the last that arrived by t, then those that arrived
// within Lag after it. A nil entry is no pod.
func (c *Checker) candidates(name string, t time.Time) []*corev1.Pod {
	h := c.history[name]
	i := sort.Search(len(h), func(i int) bool { return h[i].at.After(t) })
	var out []*corev1.Pod
	if i > 0 {
		out = append(out, h[i-1].pod)
	} else {
		out = append(out, nil)
	}
	for ; i < len(h) && !h[i].at.After(t.Add(Lag)); i++ {
		out = append(out, h[i].pod)
	}
	return out
}

// target is the incarnation of a pod a request at t acted on: the one the
// watch showed by t, or, when none was there, the first to show up within
// Lag that the API server had created by t.
func (c *Checker) target(name string, t time.Time) *corev1.Pod {
	cands := c.candidates(name, t)
	if cands[0] != nil {
		return cands[0]
	}
	for _, p := range cands[1:] {
		if p != nil && !p.CreationTimestamp.Time.After(t) {
			return p
		}
	}
	return nil
}

// removedBefore says whether incarnation uid of pod name was removed (by a
// successful delete or eviction, anyone's) before t.
func (c *Checker) removedBefore(name string, uid types.UID, t time.Time) bool {
	for _, r := range c.removals[name] {
		if !r.at.Before(t) {
			continue
		}
		if !r.resolved {
			if p := c.target(name, r.at); p != nil {
				r.uid = p.UID
			}
			r.resolved = true
		}
		if r.uid == uid {
			return true
		}
	}
	return false
}

// sameIncarnation keeps the candidates that are pod uid and still there.
func sameIncarnation(cands []*corev1.Pod, uid types.UID) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range cands {
		if p != nil && p.UID == uid {
			out = append(out, p)
		}
	}
	return out
}

// view is one state the API server may have had at a request: one of the
// StatefulSet's candidate states, with the pods' candidates.
type view struct {
	c      *Checker
	at     time.Time
	set    string
	setUID types.UID
	s      setAt
	target *corev1.Pod
}

// live: there, not terminating, not removed before the request, and the
// set's.
func (v *view) live(p *corev1.Pod) bool {
	if p == nil || p.DeletionTimestamp != nil {
		return false
	}
	if ref := metav1.GetControllerOf(p); ref == nil || ref.UID != v.setUID {
		return false
	}
	return !v.c.removedBefore(p.Name, p.UID, v.at)
}

func (v *view) outdated(p *corev1.Pod) bool {
	r := p.Labels[appsv1.ControllerRevisionHashLabelKey]
	return r == "" || r != v.s.updateRevision
}

// requested: p carries a drain request for the update revision.
func (v *view) requested(p *corev1.Pod) bool {
	return p.Annotations[AnnotationDrainRequested] != "" && p.Annotations[AnnotationDrainRevision] == v.s.updateRevision &&
		v.outdated(p)
}

// others are the names of the set's ordinals below replicas but the target,
// each with its candidate states.
func (v *view) others() map[string][]*corev1.Pod {
	out := map[string][]*corev1.Pod{}
	for i := range v.s.replicas {
		name := v.set + "-" + strconv.Itoa(int(i))
		if v.target == nil || name != v.target.Name {
			out[name] = v.c.candidates(name, v.at)
		}
	}
	return out
}

// countOthers counts the other pods every candidate of which is such.
func (v *view) countOthers(such func(p *corev1.Pod) bool) (int, []string) {
	var names []string
	for name, cands := range v.others() {
		all := true
		for _, p := range cands {
			if !such(p) {
				all = false
				break
			}
		}
		if all {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return len(names), names
}

func listed(names []string) string {
	if len(names) > 5 {
		return strings.Join(names[:5], ",") + fmt.Sprintf(" and %d more", len(names)-5)
	}
	return strings.Join(names, ",")
}

// action is what a request of stsroller's did to its target.
type action string

const (
	actDelete  action = "deleted"
	actEvict   action = "evicted"
	actRequest action = "asked to drain"
)

func (c *Checker) judgeLocked(e *AuditEvent) {
	name, t := e.ObjectRef.Name, e.RequestReceivedTimestamp
	k := e.kind()
	if k == kindDeleteCo {
		c.checks++
		c.violatef("stsroller deleted a collection of pods (%s)", t.Format(time.RFC3339Nano))
		return
	}
	p := c.target(name, t)
	if p == nil {
		if c.identity.matches(e) {
			c.stats.Unknown++
		}
		return
	}
	cands := sameIncarnation(c.candidates(name, t), p.UID)
	if k == kindEvict && ready(p) && p.DeletionTimestamp == nil && !c.removedBefore(name, p.UID, t) {
		c.checkBudgetsLocked(p, t)
	}
	if !c.identity.matches(e) {
		return
	}
	act := actDelete
	switch k {
	case kindEvict:
		act = actEvict
	case kindPatch:
		if !newRequest(p, cands) {
			return // a withdrawal, or no drain request
		}
		act = actRequest
		c.stats.DrainRequests++
	}
	if act != actRequest {
		if p.DeletionTimestamp != nil || c.removedBefore(name, p.UID, t) {
			c.stats.Repeats++ // removed already: nothing more is disrupted
			return
		}
		c.stats.Removals++
	}
	if c.lease != "" {
		c.checks++
		if holder := c.holderLocked(t); holder != e.User.Username {
			if holder == "" {
				holder = "nobody"
			}
			c.violatef("pod %s was %s by %s while %s held Lease %s (its last write before %s)", name, act, e.User.Username,
				holder, c.lease, t.Format("15:04:05.000"))
		}
	}
	set := c.ownerLocked(p)
	if set == "" {
		c.checks++
		c.violatef("pod %s of another owner (%s) was %s", name, ownerString(p), act)
		return
	}
	st := c.sets[set]
	// The StatefulSet's candidate states, as for pods.
	states := st.at(t)
	if len(states) == 0 {
		states = append(states, st.history[0])
	}
	var fired map[string]string
	var order []string
	for n, s := range states {
		v := &view{c: c, at: t, set: set, setUID: st.uid, s: s, target: p}
		got, checked := v.rules(act, cands)
		if n == 0 {
			c.checks += checked
			fired = got
			for r := range got {
				order = append(order, r)
			}
			continue
		}
		for r := range fired {
			if _, ok := got[r]; !ok {
				delete(fired, r)
			}
		}
	}
	sort.Strings(order)
	for _, r := range order {
		if msg, ok := fired[r]; ok {
			c.violatef("%s (%s at %s)", msg, e.User.Username, t.Format("15:04:05.000"))
		}
	}
}

// holderLocked is the user whose write of the Lease the API server received
// last before t, "" if none.
func (c *Checker) holderLocked(t time.Time) string {
	i := sort.Search(len(c.leaseWrites), func(i int) bool { return !c.leaseWrites[i].at.Before(t) })
	if i == 0 {
		return ""
	}
	return c.leaseWrites[i-1].user
}

// newRequest says whether a patch of p set a drain request: its value
// changes, after the request, to another that is not empty.
func newRequest(p *corev1.Pod, cands []*corev1.Pod) bool {
	before := p.Annotations[AnnotationDrainRequested]
	for _, q := range cands[1:] {
		if v := q.Annotations[AnnotationDrainRequested]; v != before {
			return v != ""
		}
	}
	return false
}

// rules are the invariants of one removal or drain request in one view: the
// rules that fire, by name, with their messages.
func (v *view) rules(act action, cands []*corev1.Pod) (_ map[string]string, checked int) {
	out := map[string]string{}
	p, s := v.target, v.s
	what := fmt.Sprintf("pod %s of %s was %s", p.Name, v.set, act)
	fire := func(rule, format string, args ...any) {
		out[rule] = what + " " + fmt.Sprintf(format, args...)
	}
	switch {
	case s.deleting:
		fire("managed", "while the StatefulSet was being deleted")
	case !s.cfg.enabled:
		fire("managed", "though the StatefulSet is not enabled")
	case !s.cfg.onDelete:
		fire("managed", "though the StatefulSet is not OnDelete")
	case s.cfg.invalid != "":
		fire("managed", "while annotation %s does not parse", s.cfg.invalid)
	case s.cfg.paused:
		fire("managed", "while the StatefulSet was paused")
	case !s.observed || s.updateRevision == "":
		fire("managed", "before the StatefulSet's generation was observed")
	}
	rev := p.Labels[appsv1.ControllerRevisionHashLabelKey]
	switch {
	case rev == "":
		fire("outdated", "though it has no revision label")
	case rev == s.updateRevision:
		fire("outdated", "at revision %s, which is the update revision", rev)
	}
	if ord, ok := ordinal(p.Name, v.set); !ok || int32(ord) >= s.replicas {
		return out, 2 // the StatefulSet controller's to remove; no count applies
	}
	healthy := len(cands) > 0
	anyHealthy := false
	for _, q := range cands {
		if q.DeletionTimestamp == nil && runningReady(q) {
			anyHealthy = true
		} else if q.DeletionTimestamp == nil {
			healthy = false
		}
	}
	healthy = healthy && anyHealthy

	if act == actDelete && healthy {
		fire("ready-by-eviction", "though it was Running and Ready: Ready pods go only by eviction")
	}

	// Partition: pods of the old revision that stay.
	stay, _ := v.countStaying()
	if int32(stay) < s.cfg.partition {
		fire("partition", "leaving %d pods of the old revision, partition is %d", stay, s.cfg.partition)
	}

	// Leader last, and alone.
	if healthy && s.cfg.leader != nil && s.cfg.leader.Matches(labels.Set(p.Labels)) && allMatch(cands, s.cfg.leader) {
		if n, names := v.countOthers(func(q *corev1.Pod) bool {
			return !(v.live(q) && !v.outdated(q) && runningReady(q))
		}); n > 0 {
			fire("leader-last", "as a leader while %d other pods were not updated and Ready (%s)", n, listed(names))
		}
	}

	if act == actDelete && !anyHealthy {
		// An unhealthy pod: replacements in flight.
		n, names := v.countOthers(func(q *corev1.Pod) bool {
			return !v.live(q) || (!v.outdated(q) && !runningReady(q))
		})
		if int32(n+1) > s.cfg.maxUnavailable {
			fire("max-unavailable", "with %d other replacements in flight (%s), max-unavailable is %d", n, listed(names), s.cfg.maxUnavailable)
		}
	} else if act != actDelete {
		// An eviction or a drain request: pods unavailable or asked to
		// drain, this one included.
		n, names := v.countOthers(func(q *corev1.Pod) bool {
			return !v.live(q) || !runningReady(q) || v.requested(q)
		})
		if int32(n+1) > s.cfg.maxUnavailable {
			fire("max-unavailable", "with %d other pods unavailable or asked to drain (%s), max-unavailable is %d",
				n, listed(names), s.cfg.maxUnavailable)
		}
	}

	// Unhealthy outdated pods first: they cost no availability, so a healthy
	// pod goes only once none is left (or goes in the same round: its
	// removal shows within Lag).
	if act != actDelete && healthy {
		if n, names := v.countOthers(func(q *corev1.Pod) bool {
			return v.live(q) && q.Labels[appsv1.ControllerRevisionHashLabelKey] != "" && v.outdated(q) && !runningReady(q)
		}); n > 0 {
			fire("unhealthy-first", "while %d unhealthy outdated pods were left (%s)", n, listed(names))
		}
	}

	// A request is made once per pod and rollout.
	if act == actRequest && v.requested(p) {
		fire("once", "while its request of %s for revision %s stood", p.Annotations[AnnotationDrainRequested], s.updateRevision)
	}

	// The drain handshake.
	if act == actEvict && s.cfg.drainTimeout > 0 && healthy {
		ok, why := false, "it was never asked to drain for revision "+s.updateRevision
		for _, q := range cands {
			if !v.requested(q) {
				continue
			}
			if _, answered := q.Annotations[AnnotationDrainComplete]; answered {
				ok = true
				break
			}
			at, err := time.Parse(time.RFC3339Nano, q.Annotations[AnnotationDrainRequested])
			if err == nil && !v.at.Before(at.Add(s.cfg.drainTimeout)) {
				ok = true
				break
			}
			why = fmt.Sprintf("its request of %s was unanswered and the timeout %s had not passed",
				q.Annotations[AnnotationDrainRequested], s.cfg.drainTimeout)
		}
		if !ok {
			fire("drain", "healthy, though %s", why)
		}
	}

	// Rollout groups: one member at a time.
	if s.cfg.group != "" && s.cfg.enabled {
		for _, m := range v.members() {
			if act == actDelete {
				// A repair waits only for a member whose replacements are on
				// their way.
				if n, names := m.countOthers(func(q *corev1.Pod) bool {
					return !m.live(q) || (!m.outdated(q) && !runningReady(q)) || m.requested(q)
				}); n > 0 {
					fire("group", "while %s of its rollout group %s had replacements on their way (%s)", m.set, s.cfg.group, listed(names))
				}
				continue
			}
			if n, names := m.countOthers(func(q *corev1.Pod) bool {
				return !m.live(q) || !runningReady(q) || m.requested(q)
			}); n > 0 {
				fire("group", "while %s of its rollout group %s had pods unavailable or asked to drain (%s)", m.set, s.cfg.group, listed(names))
			}
		}
	}
	return out, 10
}

// members are views of the other StatefulSets of the target's rollout group
// at the request: those that are members in every state they may have had.
func (v *view) members() []*view {
	var out []*view
	for name, st := range v.c.sets {
		if name == v.set {
			continue
		}
		states := st.at(v.at)
		member := len(states) > 0
		for _, s := range states {
			if !s.cfg.enabled || s.cfg.group != v.s.cfg.group || s.deleting {
				member = false
			}
		}
		if member {
			out = append(out, &view{c: v.c, at: v.at, set: name, setUID: st.uid, s: states[0]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].set < out[j].set })
	return out
}

// at are the states the StatefulSet may have had at the API server at t:
// the last that arrived by t, then those that arrived within Lag after it.
func (s *setState) at(t time.Time) []setAt {
	i := sort.Search(len(s.history), func(i int) bool { return s.history[i].at.After(t) })
	var out []setAt
	if i > 0 {
		out = append(out, s.history[i-1])
	}
	for ; i < len(s.history) && !s.history[i].at.After(t.Add(Lag)); i++ {
		out = append(out, s.history[i])
	}
	return out
}

// countStaying counts the set's pods below replicas, the target excluded,
// that stay at an old revision: some candidate is live, outdated and not
// asked to drain.
func (v *view) countStaying() (int, []string) {
	var names []string
	for name, cands := range v.others() {
		for _, q := range cands {
			if v.live(q) && v.outdated(q) && !v.requested(q) {
				names = append(names, name)
				break
			}
		}
	}
	return len(names), names
}

func allMatch(cands []*corev1.Pod, sel labels.Selector) bool {
	for _, q := range cands {
		if q.DeletionTimestamp == nil && !sel.Matches(labels.Set(q.Labels)) {
			return false
		}
	}
	return true
}

// checkBudgetsLocked: an eviction of Ready pod p at t leaves each budget
// over it its desired healthy pods.
func (c *Checker) checkBudgetsLocked(p *corev1.Pod, t time.Time) {
	for name, pdb := range c.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		owners := map[string]bool{}
		others, healthy := 0, 0
		for podName := range c.history {
			cands := c.candidates(podName, t)
			selected, ok := false, false
			for _, q := range cands {
				if q == nil || !sel.Matches(labels.Set(q.Labels)) {
					continue
				}
				if !selected {
					selected = true
					if s := c.ownerLocked(q); s != "" {
						owners[s] = true
					} else {
						others++
					}
				}
				if q.UID != p.UID && q.DeletionTimestamp == nil && ready(q) && !c.removedBefore(q.Name, q.UID, t) {
					ok = true
				}
			}
			if ok {
				healthy++
			}
		}
		expected := others
		for s := range owners {
			expected += int(c.sets[s].last().replicas)
		}
		want, ok := desiredHealthy(pdb, expected)
		if !ok {
			continue
		}
		c.checks++
		if healthy < want {
			c.violatef("PDB %s: evicting Ready pod %s at %s left %d healthy, the budget wants %d",
				name, p.Name, t.Format("15:04:05.000"), healthy, want)
		}
	}
}

// desiredHealthy is the disruption controller's count of pods a budget wants
// healthy.
func desiredHealthy(pdb *policyv1.PodDisruptionBudget, expected int) (int, bool) {
	switch {
	case pdb.Spec.MinAvailable != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MinAvailable, expected, true)
		return n, err == nil
	case pdb.Spec.MaxUnavailable != nil:
		n, err := intstr.GetScaledValueFromIntOrPercent(pdb.Spec.MaxUnavailable, expected, true)
		return max(0, expected-n), err == nil
	}
	return 0, false
}

func ownerString(p *corev1.Pod) string {
	if ref := metav1.GetControllerOf(p); ref != nil {
		return ref.Kind + "/" + ref.Name
	}
	return "no controller"
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// runningReady is healthy as docs/behaviour.md says: Running and Ready.
func runningReady(p *corev1.Pod) bool {
	return p != nil && p.Status.Phase == corev1.PodRunning && ready(p)
}

// ordinal parses <set>-<n>.
func ordinal(pod, set string) (int, bool) {
	s, ok := strings.CutPrefix(pod, set+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0
}

func (c *Checker) violatef(format string, args ...any) {
	c.violations = append(c.violations, c.clock.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// Stats are what a checker counted.
type Stats struct {
	Checks, Violations int
	// Deletions counts pods the watch saw deleted, by anyone.
	Deletions int
	Completed int
	// Removals counts stsroller's successful deletes and evictions judged;
	// DrainRequests its drain requests judged; Refused its removals the API
	// server refused; Repeats its removals of pods already removed; Unknown
	// its requests of pods the watch never showed.
	Removals, DrainRequests, Refused, Repeats, Unknown int
	// Others counts successful deletes by other actors.
	Others int
}

// Stats returns the counts so far.
func (c *Checker) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Checks, s.Violations, s.Deletions, s.Completed = c.checks, len(c.violations), c.deletions, c.completed
	return s
}

// Violations returns what was violated so far.
func (c *Checker) Violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.violations...)
}

// Complete reports whether a StatefulSet's rollout is done: every ordinal
// below spec.replicas has a Ready pod, not terminating, replicas-partition
// of them at the update revision, and the status says Complete. It is an
// error saying what is missing otherwise.
func (c *Checker) Complete(set string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.sets[set]
	if st == nil {
		return fmt.Errorf("no StatefulSet %s", set)
	}
	h := st.last()
	if !h.observed || h.updateRevision == "" {
		return fmt.Errorf("%s: generation not observed", set)
	}
	updated, ok := 0, 0
	for _, p := range c.pods {
		n, isOrd := ordinal(p.Name, set)
		if !isOrd || c.ownerLocked(p) != set || int32(n) >= h.replicas || p.DeletionTimestamp != nil || !ready(p) {
			continue
		}
		ok++
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] == h.updateRevision {
			updated++
		}
	}
	want := max(0, h.replicas-h.cfg.partition)
	if int32(ok) != h.replicas || int32(updated) != want {
		return fmt.Errorf("%s: %d of %d pods Ready, %d at %s (want %d)", set, ok, h.replicas, updated, h.updateRevision, want)
	}
	if h.status == nil || h.status.Phase != "Complete" || h.status.UpdateRevision != h.updateRevision {
		return fmt.Errorf("%s: status %+v, want Complete at %s", set, h.status, h.updateRevision)
	}
	return nil
}

// CountCompleted counts a rollout that completed, for the table.
func (c *Checker) CountCompleted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.completed++
}
