package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/pdb"
	"github.com/stsroller/stsroller/policy"
)

// sendConcurrency bounds the removals in flight at once, over every
// StatefulSet. A batch of max-unavailable pods goes out together, as the
// built-in controller's does, instead of one API round trip after another.
const sendConcurrency = 32

// lostResponseHold is how long a removal whose answer was lost (a timeout, a
// reset connection: the request may have reached the API server) counts as on
// its way out when not even a look at the pod can tell.
const lostResponseHold = 30 * time.Second

// settleLooks is how many times a removal whose answer was lost looks at the
// pod before it resorts to lostResponseHold, settleWait the wait before the
// second look (doubling after: 1.5 s in all). A hold is a stall of its own;
// the fault that lost the answer seldom loses every look.
const (
	settleLooks = 5
	settleWait  = 100 * time.Millisecond
)

// hedgeAfter is how long a lane waits for an answer before it sends its
// next removal beside the one in flight (an eviction answers in tens of
// milliseconds unless the API server retries it, after 500 ms); laneInFlight
// bounds a lane's removals in flight at once.
const (
	hedgeAfter   = 150 * time.Millisecond
	laneInFlight = 3
)

// The sync plans; the sender carries the removals out, apart from it. A
// removal handed to the sender is an expectation at once (the pod counts as
// on its way out, and an eviction holds one of its budget's disruptions
// until the budget's status shows it), so the next plan goes on without
// waiting for the API server's answer, and a sync never holds its key and a
// worker through the round trips.
//
// Evictions through the same PodDisruptionBudgets go one after another, in
// a lane: each one updates that budget's status, and the API server answers
// concurrent ones with a conflict it retries after 500 ms, again and again
// (EvictionsRetry in its eviction handler). Only one that is slow (met such
// a conflict, most likely with the disruption controller) gets the next sent
// beside it (see run). The budget's local account is the
// planner's: disruptionsAllowed as the informer last showed it, minus our
// evictions it does not count yet. The API server's atomic check stays the
// final word: a 429 puts the pod back, holds that budget at no headroom until
// its status changes (refusal), and the evictions queued behind it in its
// lane are not sent.
type sender struct {
	c   *Controller
	sem chan struct{}

	mu sync.Mutex
	// lanes holds the removals queued per lane; a lane present has a
	// goroutine sending them.
	lanes    map[string][]*job
	refusals map[cache.ObjectName]refusal
	// spent is the local account of each budget ("namespace/name"): our
	// evictions, by pod UID, with the budget's resourceVersion when they were
	// handed over. Until the budget's status changes, the informer's
	// disruptionsAllowed predates them.
	spent  map[string]map[types.UID]spending
	closed bool
	// done is closed with closed set: a look at a pod waits no longer.
	done    chan struct{}
	running sync.WaitGroup
	// hedgeAfter and settleWait are the constants of those names (tests
	// change them).
	hedgeAfter, settleWait time.Duration
}

// job is one removal handed to the sender.
type job struct {
	log klog.Logger
	key cache.ObjectName
	sts *appsv1.StatefulSet
	cfg policy.Config
	d   policy.Deletion
	// budgets names the PodDisruptionBudgets over an evicted pod.
	budgets []string
	lane    string
	step    *step
}

// spending is one eviction of ours in a budget's local account.
type spending struct {
	pod string
	rv  string
	at  time.Time
}

// refusal is the API server's last 429s for a StatefulSet: the budgets that
// refused, at the resourceVersion the cache had then, and the pods refused.
type refusal struct {
	message string
	at      time.Time
	budgets map[string]string // name → resourceVersion
	pods    map[types.UID]bool
}

func newSender(c *Controller) *sender {
	return &sender{c: c, sem: make(chan struct{}, sendConcurrency), hedgeAfter: hedgeAfter, settleWait: settleWait, done: make(chan struct{}),
		lanes: map[string][]*job{}, refusals: map[cache.ObjectName]refusal{},
		spent: map[string]map[types.UID]spending{}}
}

// send hands the plan's removals (deletions and evictions) over. Each is
// expected from now on.
func (s *sender) send(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, cfg policy.Config, ds []policy.Deletion, budgets map[string][]pdb.Budget) {
	if len(ds) == 0 {
		return
	}
	st := &step{s: s, key: key, sts: sts, left: len(ds)}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range ds {
		j := &job{log: klog.FromContext(ctx), key: key, sts: sts, cfg: cfg, d: d, step: st}
		j.budgets, j.lane = laneOf(d, budgets)
		if s.closed {
			st.finish(j, false)
			continue
		}
		s.c.expectations.expect(key, d.Pod.UID, d.Method)
		if d.Method == policy.MethodEvict {
			s.spendLocked(d.Pod, budgets[d.Pod.Name])
		}
		q, ok := s.lanes[j.lane]
		s.lanes[j.lane] = append(q, j)
		if !ok {
			s.running.Add(1)
			go s.run(j.lane)
		}
	}
}

// spendLocked enters an eviction in the account of each budget over its pod.
// s.mu is held.
func (s *sender) spendLocked(pod *corev1.Pod, budgets []pdb.Budget) {
	for _, b := range budgets {
		rv := ""
		if cur, err := s.c.pdbLister.PodDisruptionBudgets(pod.Namespace).Get(b.Name); err == nil {
			rv = cur.ResourceVersion
		}
		k := pod.Namespace + "/" + b.Name
		if s.spent[k] == nil {
			s.spent[k] = map[types.UID]spending{}
		}
		s.spent[k][pod.UID] = spending{pod: pod.Name, rv: rv, at: s.c.clock.Now()}
	}
}

// notRemoved settles a removal that did not happen (refused, not sent, or
// the pod found as planned): it is expected no more, its budgets' accounts
// give the disruption back, and its step hears of it.
func (s *sender) notRemoved(j *job) {
	s.c.expectations.drop(j.key, j.d.Pod.UID)
	s.unspend(j)
	j.step.finish(j, false)
}

// unspend takes a removal that did not happen out of its budgets' accounts.
func (s *sender) unspend(j *job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range j.budgets {
		k := j.d.Pod.Namespace + "/" + name
		delete(s.spent[k], j.d.Pod.UID)
		if len(s.spent[k]) == 0 {
			delete(s.spent, k)
		}
	}
}

// laneOf is where a removal waits its turn: evictions through the same
// budgets share one; every other removal has its own. It returns the
// budgets' names too.
func laneOf(d policy.Deletion, budgets map[string][]pdb.Budget) ([]string, string) {
	if d.Method == policy.MethodEvict {
		if bs := budgets[d.Pod.Name]; len(bs) > 0 {
			names := make([]string, len(bs))
			for i, b := range bs {
				names[i] = b.Name
			}
			slices.Sort(names)
			return names, "budget " + d.Pod.Namespace + "/" + strings.Join(names, ",")
		}
	}
	return nil, "pod " + string(d.Pod.UID)
}

// run sends one lane's removals in order, until it is empty. One is in
// flight at a time, unless it is slow: once the newest removal in flight has
// waited hedgeAfter without an answer, the next is sent beside it, up to
// laneInFlight at once. An eviction that met a write of its budget's status
// by someone else (the disruption controller writes it on every change of
// its pods) waits 500 ms in the API server before it tries again
// (EvictionsRetry in its eviction handler); without this, the whole lane
// waited behind it, about once per step of the bench's pdb modes.
func (s *sender) run(lane string) {
	defer s.running.Done()
	answers := make(chan string, laneInFlight)
	inFlight := 0
	var lastSent time.Time
	answered := func(refused string) {
		inFlight--
		if refused == "" {
			return
		}
		// The budget said no: what waits behind it would hear the same.
		s.mu.Lock()
		rest := s.lanes[lane]
		s.lanes[lane] = nil
		s.mu.Unlock()
		for _, r := range rest {
			s.refuse(r, refused, false)
		}
	}
	for {
		// Room for the next: nothing in flight, or the newest sent long
		// enough ago (and fewer than laneInFlight).
		for inFlight > 0 {
			var hedge <-chan time.Time
			if inFlight < laneInFlight {
				left := s.hedgeAfter - time.Since(lastSent)
				if left <= 0 {
					break
				}
				// (Since Go 1.23 a timer nobody waits on any more is
				// collected without a Stop.)
				hedge = time.After(left)
			}
			select {
			case refused := <-answers:
				answered(refused)
			case <-hedge:
			}
		}
		s.mu.Lock()
		var j *job
		var dropped []*job
		if s.closed {
			// What is not sent yet never is. Whoever leads next plans
			// from the cluster.
			dropped, s.lanes[lane] = s.lanes[lane], nil
		} else if q := s.lanes[lane]; len(q) > 0 {
			j, s.lanes[lane] = q[0], q[1:]
		}
		if j == nil && inFlight == 0 {
			delete(s.lanes, lane)
		}
		s.mu.Unlock()
		for _, d := range dropped {
			s.notRemoved(d)
		}
		if j == nil {
			if inFlight == 0 {
				return
			}
			answered(<-answers)
			continue
		}

		s.sem <- struct{}{}
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			<-s.sem
			s.notRemoved(j)
			continue
		}
		inFlight++
		lastSent = time.Now()
		go func() {
			refused := s.remove(j)
			<-s.sem
			answers <- refused
		}()
	}
}

// remove sends one removal and handles its answer; it returns the API
// server's refusal (429), if any.
func (s *sender) remove(j *job) string {
	c, d := s.c, j.d
	ctx := klog.NewContext(context.Background(), j.log)
	logger := j.log.WithValues("pod", klog.KObj(d.Pod))
	if !controlledBy(d.Pod, j.sts) {
		// Never touch a pod that is not this StatefulSet's (orphaned, or
		// owned by another object of the same name).
		logger.Info("Not removing a pod the StatefulSet does not control")
		s.notRemoved(j)
		return ""
	}
	var err error
	if d.Method == policy.MethodEvict {
		err = c.remover.Evict(ctx, d.Pod)
	} else {
		err = c.remover.Delete(ctx, d.Pod)
	}
	switch {
	case err == nil:
		s.removed(ctx, j)
	case apierrors.IsTooManyRequests(err) && d.Method == policy.MethodEvict:
		msg := fmt.Sprintf("the API server refused to evict %s: %v", d.Pod.Name, err)
		logger.V(4).Info("Eviction blocked by a PodDisruptionBudget", "err", err)
		s.refuse(j, msg, true)
		return msg
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// The pod's own update or deletion requeues us; this is the
		// fallback, spaced so that a pod that keeps changing is no hot loop.
		logger.V(4).Info("Pod changed since it was planned; planning again", "err", err, "after", conflictRetry)
		s.notRemoved(j)
		c.queue.AddAfter(j.key, conflictRetry)
	case isAnswer(err):
		// The API server answered no: nothing was removed.
		s.notRemoved(j)
		utilruntime.HandleError(fmt.Errorf("removing pod %s/%s (%s): %w", d.Pod.Namespace, d.Pod.Name, d.Method, err))
		c.queue.AddRateLimited(j.key)
	default:
		s.lost(ctx, j, err)
	}
	return ""
}

// isAnswer reports whether err is the API server's own refusal (a 4xx
// status): the request did nothing. Anything else (a timeout, a reset
// connection, a 5xx) may have come after the removal was done.
func isAnswer(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	code := status.Status().Code
	return code >= 400 && code < 500 && !apierrors.IsTimeout(err)
}

// lost settles a removal whose answer was lost by looking at the pod: gone,
// replaced or terminating, it went; alive as planned, it did not, and is
// planned again with back-off. When settleLooks looks fail, the pod counts
// as on its way out for lostResponseHold: never more unavailable than
// allowed. While it looks, the pod counts as on its way out, as it has
// since it was handed over.
func (s *sender) lost(ctx context.Context, j *job, cause error) {
	c, p := s.c, j.d.Pod
	var cur *corev1.Pod
	var err error
	wait := s.settleWait
	for look := 1; ; look++ {
		cur, err = c.client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err == nil || apierrors.IsNotFound(err) || look == settleLooks || !s.pause(wait) {
			break
		}
		wait *= 2
	}
	switch {
	case apierrors.IsNotFound(err) || (err == nil && (cur.UID != p.UID || cur.DeletionTimestamp != nil)):
		j.log.V(2).Info("The answer to a removal was lost, but the pod went", "pod", klog.KObj(p), "err", cause)
		s.removed(ctx, j)
	case err == nil:
		s.notRemoved(j)
		utilruntime.HandleError(fmt.Errorf("removing pod %s/%s (%s): %w", p.Namespace, p.Name, j.d.Method, cause))
		c.queue.AddRateLimited(j.key)
	default:
		c.expectations.hold(j.key, p.UID, j.d.Method, lostResponseHold)
		j.step.finish(j, false)
		utilruntime.HandleError(fmt.Errorf("removing pod %s/%s (%s), the answer was lost and the pod could not be read; counting it as removed for %s: %w",
			p.Namespace, p.Name, j.d.Method, lostResponseHold, cause))
		c.queue.AddAfter(j.key, lostResponseHold)
	}
}

// pause waits d, or less if the sender closes; it says whether it waited d.
func (s *sender) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// removed records a removal done: metrics, the pod's event, how its drain
// ended, the health gate's step; the StatefulSet's event comes with its step.
func (s *sender) removed(ctx context.Context, j *job) {
	c, d := s.c, j.d
	reason, why := removalReason(d)
	c.metrics.PodsDeleted.WithLabelValues(why, string(d.Method)).Inc()
	j.log.V(2).Info("Removed pod", "pod", klog.KObj(d.Pod), "method", d.Method, "why", d.Message)
	c.recorder.Eventf(d.Pod, corev1.EventTypeNormal, reason, "stsroller (%s): %s", d.Method, d.Message)
	c.drained(ctx, j.sts, j.cfg, d)
	c.stepped(j.key, d)
	j.step.finish(j, true)
}

func removalReason(d policy.Deletion) (reason, why string) {
	switch d.Why {
	case policy.RemovalUnhealthy:
		return policy.ReasonDeletedUnhealthyPod, "unhealthy"
	case policy.RemovalLeader:
		return policy.ReasonEvictedPod, "leader"
	}
	return policy.ReasonEvictedPod, "outdated"
}

// refuse puts a refused removal back (sent: the API server refused it; else
// it was queued behind one that was) and remembers the refusal for the
// StatefulSet's next plan, which it wakes.
func (s *sender) refuse(j *job, msg string, sent bool) {
	c := s.c
	if sent {
		c.metrics.EvictionsBlocked.Inc()
	}
	s.mu.Lock()
	r, ok := s.refusals[j.key]
	if !ok || c.clock.Since(r.at) >= evictionRetry {
		r = refusal{budgets: map[string]string{}, pods: map[types.UID]bool{}}
	}
	r.message, r.at = msg, c.clock.Now()
	r.pods[j.d.Pod.UID] = true
	for _, name := range j.budgets {
		if b, err := c.pdbLister.PodDisruptionBudgets(j.d.Pod.Namespace).Get(name); err == nil {
			r.budgets[name] = b.ResourceVersion
		}
	}
	s.refusals[j.key] = r
	s.mu.Unlock()
	s.notRemoved(j)
	c.queue.Add(j.key)
}

// refused returns the API server's last refusals for a StatefulSet while
// they stand: no longer than evictionRetry, and only while the budgets that
// refused are as they were (their status changes when they gain headroom).
func (s *sender) refused(key cache.ObjectName) (refusal, bool) {
	s.mu.Lock()
	r, ok := s.refusals[key]
	s.mu.Unlock()
	if !ok {
		return refusal{}, false
	}
	stands := s.c.clock.Since(r.at) < evictionRetry
	for name, rv := range r.budgets {
		b, err := s.c.pdbLister.PodDisruptionBudgets(key.Namespace).Get(name)
		if err != nil || b.ResourceVersion != rv {
			stands = false
		}
	}
	if !stands {
		s.mu.Lock()
		if cur, ok := s.refusals[key]; ok && cur.at.Equal(r.at) {
			delete(s.refusals, key)
		}
		s.mu.Unlock()
		return refusal{}, false
	}
	return r, true
}

// unaccounted counts, for one budget, our evictions that the planner cannot
// see and the informer's disruptionsAllowed does not count yet: the pod is
// terminating or gone (so it is no longer expected, and the planner no
// longer counts it), while the budget is still at the resourceVersion it had
// when the eviction was handed over. Entries of a budget whose status has
// moved on, or older than expectationsTimeout, are dropped.
func (s *sender) unaccounted(namespace string, b pdb.Budget, removing map[types.UID]policy.Method) int32 {
	k := namespace + "/" + b.Name
	rv := ""
	if cur, err := s.c.pdbLister.PodDisruptionBudgets(namespace).Get(b.Name); err == nil {
		rv = cur.ResourceVersion
	}
	now := s.c.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int32
	for uid, e := range s.spent[k] {
		if e.rv != rv || now.Sub(e.at) > expectationsTimeout {
			delete(s.spent[k], uid)
			continue
		}
		if _, ok := removing[uid]; !ok && !b.Disrupted[e.pod] {
			n++
		}
	}
	if len(s.spent[k]) == 0 {
		delete(s.spent, k)
	}
	return n
}

// forget drops the refusal of a StatefulSet no longer managed.
func (s *sender) forget(key cache.ObjectName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refusals, key)
}

// shutdown sends nothing more and waits for the removals in flight: their
// answers are recorded before the process leaves.
func (s *sender) shutdown() {
	s.mu.Lock()
	if !s.closed {
		close(s.done)
	}
	s.closed = true
	s.mu.Unlock()
	s.running.Wait()
}

// idle waits until nothing is queued or in flight (tests).
func (s *sender) idle() { s.running.Wait() }

// step is one plan's removals. Once every one has been answered, the
// StatefulSet gets one event per reason naming the pods removed together.
type step struct {
	s    *sender
	key  cache.ObjectName
	sts  *appsv1.StatefulSet
	mu   sync.Mutex
	left int
	done []policy.Deletion
}

func (st *step) finish(j *job, ok bool) {
	st.mu.Lock()
	st.left--
	if ok {
		st.done = append(st.done, j.d)
	}
	last := st.left == 0
	st.mu.Unlock()
	if last {
		st.announce()
	}
}

// announce records the step's StatefulSet events: one per reason and method,
// naming its pods.
func (st *step) announce() {
	type kind struct {
		reason string
		method policy.Method
	}
	var order []kind
	by := map[kind][]policy.Deletion{}
	for _, d := range st.done {
		reason, _ := removalReason(d)
		k := kind{reason, d.Method}
		if _, ok := by[k]; !ok {
			order = append(order, k)
		}
		by[k] = append(by[k], d)
	}
	for _, k := range order {
		ds := by[k]
		msg := fmt.Sprintf("%s: %s", k.method, ds[0].Message)
		if len(ds) > 1 {
			names := make([]string, len(ds))
			for i, d := range ds {
				names[i] = d.Pod.Name
			}
			msg = fmt.Sprintf("%s %d pods (%s): %s", k.method, len(ds), strings.Join(names, ", "), ds[0].Message)
		}
		st.s.c.recorder.Event(st.sts, corev1.EventTypeNormal, k.reason, policy.Truncate(msg, maxEventMessage))
	}
}

// maxEventMessage bounds an event's message (the API server's limit is 1 KiB).
const maxEventMessage = 1000

// APIRemover removes pods through the API server.
type APIRemover struct {
	Client kubernetes.Interface
}

// Delete deletes the pod only if it is still the same pod in the same state
// that was planned (UID and resourceVersion preconditions).
func (r *APIRemover) Delete(ctx context.Context, pod *corev1.Pod) error {
	uid, rv := pod.UID, pod.ResourceVersion
	return r.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv},
	})
}

// Evict asks the Eviction API, which checks every PodDisruptionBudget over the
// pod atomically; it answers 429 when one has no headroom.
func (r *APIRemover) Evict(ctx context.Context, pod *corev1.Pod) error {
	uid := pod.UID
	return r.Client.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}},
	})
}
