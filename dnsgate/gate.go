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
	"k8s.io/client-go/tools/record"
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
	Rounds   int
	Clock    clock.PassiveClock
	Metrics  *metrics.Metrics
	Recorder record.EventRecorder
}

// Gate implements rollout.DNSGate.
type Gate struct {
	ctx      context.Context
	prober   dnsprobe.Prober
	client   kubernetes.Interface
	enqueue  func(cache.ObjectName)
	opts     Options
	sem      chan struct{}
	mu       sync.Mutex
	entries  map[types.UID]*entry
	inFlight sync.WaitGroup
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
}

// New returns a gate whose background checks live as long as ctx; enqueue is
// called with a StatefulSet's key when an answer about one of its pods arrives.
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
	if opts.Recorder == nil {
		opts.Recorder = &record.FakeRecorder{}
	}
	return &Gate{
		ctx: ctx, prober: prober, client: client, enqueue: enqueue, opts: opts,
		sem:     make(chan struct{}, opts.Concurrency),
		entries: map[types.UID]*entry{},
	}
}

// Wait blocks until the checks in flight are done (for tests and shutdown).
func (g *Gate) Wait() { g.inFlight.Wait() }

// Observe answers from what the gate knows for each pod of the StatefulSet,
// starts the checks that are due, and keeps the pods' conditions current. It
// returns when a check will next be due.
func (g *Gate) Observe(ctx context.Context, sts *appsv1.StatefulSet, domain string, pods []*corev1.Pod) (map[string]policy.DNSState, time.Duration, error) {
	key := cache.MetaObjectToName(sts)
	now := g.opts.Clock.Now()
	states := make(map[string]policy.DNSState, len(pods))
	var requeue time.Duration
	var noServers string
	live := make(map[types.UID]bool, len(pods))

	for _, pod := range pods {
		if pod.DeletionTimestamp != nil {
			continue
		}
		want := PodIPs(pod)
		if len(want) == 0 {
			states[pod.Name] = policy.DNSState{Message: "no pod IP yet"}
			continue
		}
		live[pod.UID] = true
		name := pod.Name + "." + domain
		vouched := vouchedIPs(pod)

		g.mu.Lock()
		e := g.entries[pod.UID]
		if e == nil || e.name != name || !slices.Equal(e.want, want) {
			e = &entry{key: key, name: name, want: want, next: now, backoff: g.opts.MinBackoff}
			if pod.Status.StartTime != nil {
				e.start = pod.Status.StartTime.Time
			}
			// After a restart, trust a condition this gate set for exactly
			// these IPs; the first check confirms it in the background.
			e.propagated = slices.Equal(vouched, want)
			g.entries[pod.UID] = e
		}
		state := policy.DNSState{Propagated: e.propagated}
		if e.haveResult {
			r := e.result
			state.Unreachable = unreachable(r)
			if !r.Propagated {
				state.Message = fmt.Sprintf("%s: %s", r.Reason, r.Message)
			}
			if r.Reason == dnsprobe.ReasonNoServers {
				noServers = r.Message
			}
		} else if !e.propagated {
			state.Message = "not checked yet"
		}
		if !e.checking {
			if !now.Before(e.next) {
				g.startLocked(pod.UID, e)
			} else if d := e.next.Sub(now); requeue == 0 || d < requeue {
				requeue = d
			}
		}
		propagated := e.propagated
		g.mu.Unlock()

		states[pod.Name] = state
		if err := g.syncCondition(ctx, pod, name, want, vouched, propagated); err != nil {
			return states, requeue, err
		}
	}
	g.mu.Lock()
	for uid, e := range g.entries {
		if e.key == key && !live[uid] {
			delete(g.entries, uid)
		}
	}
	g.mu.Unlock()
	if noServers != "" {
		return states, requeue, fmt.Errorf("DNS gate for %s: no authoritative server to ask: %s; set the controller's --dns-servers", domain, noServers)
	}
	return states, requeue, nil
}

// Forget drops what the gate holds for a StatefulSet.
func (g *Gate) Forget(key cache.ObjectName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for uid, e := range g.entries {
		if e.key == key {
			delete(g.entries, uid)
		}
	}
}

// startLocked checks one pod's name in the background. g.mu is held.
func (g *Gate) startLocked(uid types.UID, e *entry) {
	e.checking = true
	name, want, key := e.name, e.want, e.key
	g.inFlight.Add(1)
	go func() {
		defer g.inFlight.Done()
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
		cur := g.entries[uid]
		if cur != e {
			g.mu.Unlock()
			return // the pod changed IPs or went away meanwhile
		}
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
		start := e.start
		g.mu.Unlock()

		if became && !start.IsZero() {
			g.opts.Metrics.DNSPropagation.Observe(now.Sub(start).Seconds())
		}
		klog.FromContext(g.ctx).V(4).Info("DNS check", "name", name, "reason", r.Reason, "message", r.Message)
		g.enqueue(key)
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

// syncCondition sets the pod's stsroller.io/dns-propagated condition True once
// the name is propagated for the pod's IPs, and False when the IPs it vouched
// for are no longer the pod's. A slow or failed answer never turns it False.
func (g *Gate) syncCondition(ctx context.Context, pod *corev1.Pod, name string, want, vouched []netip.Addr, propagated bool) error {
	cond := condition(pod)
	switch {
	case propagated && slices.Equal(vouched, want) && cond.Status == corev1.ConditionTrue:
		return nil
	case propagated:
		msg := fmt.Sprintf("%s resolves to %s at every authoritative server", name, joinAddrs(want))
		if err := g.patchCondition(ctx, pod, corev1.ConditionTrue, policy.ReasonDNSPropagated, msg); err != nil {
			return err
		}
		g.opts.Recorder.Event(pod, corev1.EventTypeNormal, policy.ReasonDNSPropagated, msg)
	case cond != nil && cond.Status == corev1.ConditionTrue && !slices.Equal(vouched, want):
		msg := fmt.Sprintf("the pod's IPs changed to %s; waiting for %s to resolve to them", joinAddrs(want), name)
		if err := g.patchCondition(ctx, pod, corev1.ConditionFalse, policy.ReasonDNSNotPropagated, msg); err != nil {
			return err
		}
		g.opts.Recorder.Event(pod, corev1.EventTypeNormal, policy.ReasonDNSNotPropagated, msg)
	}
	return nil
}

func (g *Gate) patchCondition(ctx context.Context, pod *corev1.Pod, status corev1.ConditionStatus, reason, msg string) error {
	patch, err := json.Marshal(map[string]any{
		// The UID makes the patch fail on a new pod of the same name.
		"metadata": map[string]any{"uid": pod.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type: policy.ConditionDNSPropagated, Status: status, Reason: reason, Message: msg,
			LastTransitionTime: metav1.NewTime(g.opts.Clock.Now()),
		}}},
	})
	if err != nil {
		return err
	}
	_, err = g.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager}, "status")
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // the pod is gone or replaced; its successor is checked anew
	}
	if err != nil {
		return fmt.Errorf("setting %s on pod %s/%s: %w", policy.ConditionDNSPropagated, pod.Namespace, pod.Name, err)
	}
	klog.FromContext(ctx).V(2).Info("Set DNS condition", "pod", klog.KObj(pod), "status", status)
	return nil
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
// back from its message; nil when the condition is not True.
func vouchedIPs(pod *corev1.Pod) []netip.Addr {
	c := condition(pod)
	if c == nil || c.Status != corev1.ConditionTrue {
		return nil
	}
	_, rest, ok := strings.Cut(c.Message, " resolves to ")
	if !ok {
		return nil
	}
	list, _, ok := strings.Cut(rest, " at every authoritative server")
	if !ok {
		return nil
	}
	var out []netip.Addr
	for _, s := range strings.Split(list, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return nil
		}
		out = append(out, a)
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
