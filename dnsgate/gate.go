// Package dnsgate keeps, for every pod of every StatefulSet that sets
// stsroller.io/dns-domain, an answer to "does <pod>.<domain> resolve to this
// pod's current IPs at every authoritative server?". It asks in the
// background, a bounded number of questions at a time, re-asks with backoff
// until the answer is yes, then now and then to notice a server that stops
// answering; and it sets the pod condition stsroller.io/dns-propagated through
// pods/status, so a readiness gate can hold the pod unready until then.
package dnsgate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
)

// Defaults of Options.
const (
	DefaultConcurrency   = 16
	DefaultCheckTimeout  = 10 * time.Second
	DefaultMinBackoff    = 500 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	DefaultNotYetBackoff = time.Second
	DefaultRecheck       = time.Minute
	fieldManager         = "stsroller"
)

// Options configure a Gate; zero fields get defaults.
type Options struct {
	// Concurrency bounds the checks running at once, so one slow server does
	// not hold every StatefulSet back.
	Concurrency int
	// CheckTimeout bounds one check of one name at every server.
	CheckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a name that did not
	// resolve is asked again; it doubles each time.
	MinBackoff, MaxBackoff time.Duration
	// NotYetBackoff caps the wait while the servers answer, but not yet with
	// the pod's IPs: the record is on its way (external-dns publishes it at
	// its next sync) and every second of waiting here adds to the rollout.
	// Timeouts and errors back off up to MaxBackoff.
	NotYetBackoff time.Duration
	// Recheck is how often a propagated name is asked again, to notice a
	// server that stops answering.
	Recheck time.Duration
	// Rounds is how many consecutive propagated answers make a name
	// propagated. Default 1.
	Rounds  int
	Clock   clock.WithDelayedExecution
	Metrics *metrics.Metrics
}

// AnnotationVouchedIPs is the pod annotation in which the gate records the
// IPs its stsroller.io/dns-propagated=True condition vouches for, written in
// the same pods/status patch as the condition: comma-separated, sorted.
const AnnotationVouchedIPs = "stsroller.io/dns-vouched-ips"

// Gate implements rollout.DNSGate.
type Gate struct {
	ctx     context.Context
	prober  dnsprobe.Prober
	client  kubernetes.Interface
	enqueue func(cache.ObjectName)
	opts    Options
	sem     chan struct{}
	mu      sync.Mutex
	// entries holds, per StatefulSet, what the gate knows of each pod by UID.
	entries map[cache.ObjectName]map[types.UID]*entry
	// checks counts the checks in flight; idle is signalled when it drops to 0.
	checks int
	idle   *sync.Cond
}

// entry is what the gate knows of one pod at one set of IPs.
type entry struct {
	key   cache.ObjectName
	name  string
	want  []netip.Addr
	start time.Time // the pod's start, for the propagation time

	checking   bool
	haveResult bool
	result     dnsprobe.Result
	agree      int // consecutive propagated answers
	propagated bool
	next       time.Time
	backoff    time.Duration
	// timer starts the next check when it is due; timerGen tells a timer
	// that fired from its successor.
	timer    clock.Timer
	timerGen int
}

// New returns a gate whose background checks live as long as ctx; enqueue is
// called with a StatefulSet's key when an answer about one of its pods
// changes what the gate says of it.
func New(ctx context.Context, prober dnsprobe.Prober, client kubernetes.Interface, enqueue func(cache.ObjectName), opts Options) *Gate {
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.NotYetBackoff <= 0 {
		opts.NotYetBackoff = min(DefaultNotYetBackoff, opts.MaxBackoff)
	}
	if opts.Recheck <= 0 {
		opts.Recheck = DefaultRecheck
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 1
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	g := &Gate{
		ctx: ctx, prober: prober, client: client, enqueue: enqueue, opts: opts,
		sem:     make(chan struct{}, opts.Concurrency),
		entries: map[cache.ObjectName]map[types.UID]*entry{},
	}
	g.idle = sync.NewCond(&g.mu)
	return g
}

// Wait blocks until the checks in flight are done (for tests and shutdown).
func (g *Gate) Wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.checks > 0 {
		g.idle.Wait()
	}
}

// View is what the gate answers for one StatefulSet: the planner's DNS view,
// and the pod condition writes it wants. Observe writes nothing; the caller
// applies the changes (Apply) after planning.
type View struct {
	States map[string]policy.DNSState
	// Changes are the stsroller.io/dns-propagated conditions to write.
	Changes []Change
	// Err is set when the gate cannot work at all: no authoritative server is
	// known. It is the planner's DNSError.
	Err error
}

// Change is one condition write the gate wants.
type Change struct {
	Pod     *corev1.Pod
	Status  corev1.ConditionStatus
	Reason  string
	Message string
	// IPs are the IPs a True condition vouches for.
	IPs []netip.Addr
}

// Observe answers from what the gate knows for each pod of the StatefulSet
// and starts the checks of pods it has not seen at these IPs. It costs
// O(pods of this StatefulSet), does no I/O, and writes nothing: the
// condition writes it wants are in the View.
func (g *Gate) Observe(_ context.Context, sts *appsv1.StatefulSet, domain string, pods []*corev1.Pod) View {
	key := cache.MetaObjectToName(sts)
	now := g.opts.Clock.Now()
	v := View{States: make(map[string]policy.DNSState, len(pods))}
	var noServers string

	g.mu.Lock()
	old := g.entries[key]
	cur := make(map[types.UID]*entry, len(pods))
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		want := PodIPs(pod)
		if len(want) == 0 {
			v.States[pod.Name] = policy.DNSState{Message: "no pod IP yet"}
			continue
		}
		name := pod.Name + "." + domain
		vouched := vouchedIPs(pod)

		e := old[pod.UID]
		if e == nil || e.name != name || !slices.Equal(e.want, want) {
			e = &entry{key: key, name: name, want: want, next: now, backoff: g.opts.MinBackoff}
			if pod.Status.StartTime != nil {
				e.start = pod.Status.StartTime.Time
			}
			// After a restart, trust a condition this gate set for exactly
			// these IPs; the first check confirms it in the background.
			e.propagated = slices.Equal(vouched, want)
		}
		cur[pod.UID] = e
		state := e.state()
		if e.haveResult && e.result.Reason == dnsprobe.ReasonNoServers {
			noServers = e.result.Message
		}
		if !e.checking && !now.Before(e.next) {
			g.startLocked(pod.UID, e)
		}
		v.States[pod.Name] = state
		if c, ok := wantedChange(pod, name, want, vouched, e.propagated); ok {
			v.Changes = append(v.Changes, c)
		}
	}
	for uid, e := range old {
		if cur[uid] != e {
			e.stop()
		}
	}
	if len(cur) == 0 {
		delete(g.entries, key)
	} else {
		g.entries[key] = cur
	}
	g.mu.Unlock()
	if noServers != "" {
		v.Err = fmt.Errorf("DNS gate for %s: no authoritative server to ask: %s; set the controller's --dns-servers", domain, noServers)
	}
	return v
}

// state is the planner's view of the entry.
func (e *entry) state() policy.DNSState {
	state := policy.DNSState{Propagated: e.propagated}
	if e.haveResult {
		r := e.result
		state.Unreachable = unreachable(r)
		if !r.Propagated {
			state.Message = fmt.Sprintf("%s: %s", r.Reason, r.Message)
		}
	} else if !e.propagated {
		state.Message = "not checked yet"
	}
	return state
}

// class is what the StatefulSet's plan can depend on: an answer that leaves
// it unchanged enqueues nothing.
type class struct {
	propagated, haveResult, unreachable bool
	reason                              dnsprobe.Reason
}

func (e *entry) class() class {
	return class{propagated: e.propagated, haveResult: e.haveResult, unreachable: e.haveResult && unreachable(e.result),
		reason: e.result.Reason}
}

func (e *entry) stop() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
}

// Forget drops what the gate holds for a StatefulSet.
func (g *Gate) Forget(key cache.ObjectName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.entries[key] {
		e.stop()
	}
	delete(g.entries, key)
}

// Len is how many pods the gate holds entries for (for tests).
func (g *Gate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, m := range g.entries {
		n += len(m)
	}
	return n
}

// current reports whether e is still what the gate holds for the pod. g.mu is held.
func (g *Gate) current(uid types.UID, e *entry) bool {
	return g.entries[e.key][uid] == e
}

// due starts the check of an entry whose timer fired, unless the entry is
// gone or its check already started.
func (g *Gate) due(uid types.UID, e *entry, gen int) {
	now := g.opts.Clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.timerGen != gen || !g.current(uid, e) || e.checking || now.Before(e.next) {
		return
	}
	g.startLocked(uid, e)
}

// startLocked checks one pod's name in the background. g.mu is held.
func (g *Gate) startLocked(uid types.UID, e *entry) {
	if g.ctx.Err() != nil {
		return
	}
	e.stop()
	e.checking = true
	name, want, key := e.name, e.want, e.key
	g.checks++
	go func() {
		defer func() {
			g.mu.Lock()
			g.checks--
			if g.checks == 0 {
				g.idle.Broadcast()
			}
			g.mu.Unlock()
		}()
		select {
		case g.sem <- struct{}{}:
		case <-g.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(g.ctx, g.opts.CheckTimeout)
		began := g.opts.Clock.Now()
		r := g.prober.Probe(ctx, name, want)
		cancel()
		<-g.sem
		now := g.opts.Clock.Now()
		g.opts.Metrics.DNSChecks.WithLabelValues(string(r.Reason)).Inc()
		g.opts.Metrics.DNSCheckDuration.Observe(now.Sub(began).Seconds())

		g.mu.Lock()
		if !g.current(uid, e) {
			g.mu.Unlock()
			return // the pod changed IPs or went away meanwhile
		}
		before := e.class()
		e.checking = false
		e.haveResult = true
		e.result = r
		if r.Propagated {
			e.agree++
			e.backoff = g.opts.MinBackoff
		} else {
			e.agree = 0
		}
		became := false
		if !e.propagated && e.agree >= g.opts.Rounds {
			e.propagated = true
			became = true
		}
		switch {
		case e.propagated && !unreachable(r):
			// Propagated stays propagated for these IPs; checking again
			// only watches for a server that stops answering.
			e.next = now.Add(g.opts.Recheck)
		case r.Propagated:
			e.next = now.Add(g.opts.MinBackoff) // counting agreeing rounds
		default:
			limit := g.opts.NotYetBackoff
			if unreachable(r) {
				limit = g.opts.MaxBackoff
			}
			e.backoff = min(e.backoff, limit)
			e.next = now.Add(e.backoff)
			e.backoff = min(2*e.backoff, limit)
		}
		changed := e.class() != before
		// The gate asks again by itself; the StatefulSet is planned again
		// only when the answer changed. The fake clock runs timers inside
		// Step, so the timer only hands over to a goroutine.
		e.stop()
		e.timerGen++
		gen := e.timerGen
		e.timer = g.opts.Clock.AfterFunc(e.next.Sub(now), func() { go g.due(uid, e, gen) })
		start := e.start
		g.mu.Unlock()

		if became && !start.IsZero() {
			g.opts.Metrics.DNSPropagation.Observe(now.Sub(start).Seconds())
		}
		klog.FromContext(g.ctx).V(4).Info("DNS check", "name", name, "reason", r.Reason, "message", r.Message, "changed", changed)
		if changed {
			g.enqueue(key)
		}
	}()
}

// unreachable: a server could not be asked, as opposed to answering "not yet".
// Any one server counts: the result's Reason is only the first disagreeing
// server's, so a primary that answers NXDOMAIN would hide a secondary that
// times out.
func unreachable(r dnsprobe.Result) bool {
	if unreachableReason(r.Reason) {
		return true
	}
	for _, a := range r.Answers {
		if unreachableReason(a.Reason) {
			return true
		}
	}
	return false
}

func unreachableReason(r dnsprobe.Reason) bool {
	return r == dnsprobe.ReasonTimeout || r == dnsprobe.ReasonError || r == dnsprobe.ReasonErrorRcode
}

// wantedChange is the condition write the pod needs: True once the name is
// propagated for the pod's IPs, False when the IPs the gate vouched for are no
// longer the pod's. A slow or failed answer never turns it False.
func wantedChange(pod *corev1.Pod, name string, want, vouched []netip.Addr, propagated bool) (Change, bool) {
	cond := condition(pod)
	switch {
	case propagated && slices.Equal(vouched, want) && cond.Status == corev1.ConditionTrue:
		return Change{}, false
	case propagated:
		return Change{Pod: pod, Status: corev1.ConditionTrue, Reason: policy.ReasonDNSPropagated, IPs: want,
			Message: fmt.Sprintf("%s resolves to %s at every authoritative server", name, joinAddrs(want))}, true
	case cond != nil && cond.Status == corev1.ConditionTrue && !slices.Equal(vouched, want):
		return Change{Pod: pod, Status: corev1.ConditionFalse, Reason: policy.ReasonDNSNotPropagated,
			Message: fmt.Sprintf("the pod's IPs changed to %s; waiting for %s to resolve to them", joinAddrs(want), name)}, true
	}
	return Change{}, false
}

// Apply writes one condition change through pods/status, with the vouched
// IPs in the AnnotationVouchedIPs annotation of the same patch. It reports
// false, nil when the pod is gone or replaced (its successor is checked
// anew); any other failure is an error to retry.
func (g *Gate) Apply(ctx context.Context, c Change) (bool, error) {
	pod := c.Pod
	vouched := any(nil) // null removes the annotation
	if c.Status == corev1.ConditionTrue {
		vouched = joinAddrs(c.IPs)
	}
	patch, err := json.Marshal(map[string]any{
		// The UID makes the patch fail on a new pod of the same name.
		"metadata": map[string]any{"uid": pod.UID, "annotations": map[string]any{AnnotationVouchedIPs: vouched}},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: policy.ConditionDNSPropagated, Status: c.Status, Reason: c.Reason, Message: c.Message,
			LastTransitionTime: metav1.NewTime(g.opts.Clock.Now()),
		}}},
	})
	if err != nil {
		return false, err
	}
	_, err = g.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("setting %s on pod %s/%s: %w", policy.ConditionDNSPropagated, pod.Namespace, pod.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Set DNS condition", "pod", klog.KObj(pod), "status", c.Status)
	return true, nil
}

// PodIPs are the pod's current IPs, sorted.
func PodIPs(pod *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	add(pod.Status.PodIP)
	for _, ip := range pod.Status.PodIPs {
		add(ip.IP)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func condition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == policy.ConditionDNSPropagated {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// vouchedIPs are the IPs a True condition set by this gate vouches for, read
// from the
// AnnotationVouchedIPs annotation the gate writes with the condition; a
// condition written before that annotation existed vouches for the IPs its
// message names. nil when the condition is not True or names nothing readable.
func vouchedIPs(pod *corev1.Pod) []netip.Addr {
	c := condition(pod)
	if c == nil || c.Status != corev1.ConditionTrue {
		return nil
	}
	if s, ok := pod.Annotations[AnnotationVouchedIPs]; ok {
		return parseAddrs(s)
	}
	_, rest, ok := strings.Cut(c.Message, " resolves to ")
	if !ok {
		return nil
	}
	list, _, ok := strings.Cut(rest, " at every authoritative server")
	if !ok {
		return nil
	}
	return parseAddrs(list)
}

// parseAddrs parses a comma-separated list of IPs, sorted; nil if any does
// not parse.
func parseAddrs(list string) []netip.Addr {
	var out []netip.Addr
	for _, s := range strings.Split(list, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil
		}
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
