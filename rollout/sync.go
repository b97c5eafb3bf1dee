package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/pdb"
	"github.com/stsroller/stsroller/policy"
)

// sync plans one StatefulSet anew from what the informers show and acts on
// the plan. Errors that a retry cannot fix are reported in status and events
// and return nil.
func (c *Controller) sync(ctx context.Context, key cache.ObjectName) error {
	start := c.clock.Now()
	defer func() { c.metrics.SyncDuration.Observe(c.clock.Since(start).Seconds()) }()
	logger := klog.FromContext(ctx).WithValues("statefulSet", key)
	ctx = klog.NewContext(ctx, logger)

	sts, err := c.stsLister.StatefulSets(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) || (err == nil && !policy.Enabled(sts)) {
		c.forget(key)
		c.noteMember(key, nil, policy.Input{})
		return c.forgetLocks(ctx, key)
	}
	if err != nil {
		return err
	}
	// The members of a rollout group are planned one at a time.
	defer c.groups.lock(sts)()
	in, err := c.input(ctx, key, sts)
	if err != nil {
		return err
	}
	refused := c.budgetView(key, &in.Input)
	group, err := c.groupView(ctx, sts, in.Input)
	if err != nil {
		return err
	}
	plan, err := c.withLock(ctx, key, sts, in.Input, policy.ComputeInGroup(in.Input, group))
	if err != nil {
		return err
	}
	defer c.noteMember(key, sts, in.Input)
	requeue := plan.RequeueAfter
	if !in.lapse.IsZero() {
		// An expectation that lapses unmet (a removal whose answer was
		// lost, or that the informer never reported) brings no event: the
		// plan must be made again then. Another wake-up of this key cannot
		// hide it, as the work queue keeps only a key's earliest one.
		requeue = sooner(requeue, max(in.lapse.Sub(c.clock.Now()), time.Millisecond))
	}
	if sts.DeletionTimestamp != nil && len(plan.Deletions) > 0 {
		// The StatefulSet is being deleted: nobody may recreate what we
		// remove. The planner refuses too; the shell never trusts that alone.
		logger.V(2).Info("StatefulSet is being deleted; removing no pods", "planned", len(plan.Deletions))
		plan.Deletions = nil
	}

	held := 0
	if refused != nil {
		// A pod refused without a budget the cache knows of (it may not
		// show one yet) waits as well.
		kept := plan.Deletions[:0:0]
		for _, d := range plan.Deletions {
			if d.Method == policy.MethodEvict && refused.pods[d.Pod.UID] {
				held++
				continue
			}
			kept = append(kept, d)
		}
		plan.Deletions = kept
	}

	if len(plan.Deletions) > 0 {
		// The pods and the StatefulSet come from two watches, which may lag
		// each other: a StatefulSet read before a template change, beside
		// pods already created from it, makes current pods look outdated.
		// Before removing anything, the StatefulSet is read from the API
		// server; planned on an older one, the round is dropped and planned
		// again once the cache has caught up.
		if stale, err := c.staleBasis(ctx, sts); err != nil {
			return err
		} else if stale != "" {
			logger.V(2).Info("StatefulSet changed since the cache read it; planning again", "changed", stale, "after", conflictRetry)
			c.queue.AddAfter(key, conflictRetry)
			return nil
		}
	}

	// Drain requests are written here, each a patch the next plan must see
	// (its resourceVersion precondition makes a repeat fail); deletions and
	// evictions go to the sender, which counts them as removed at once.
	var actErr error
	var removals []policy.Deletion
	for _, d := range plan.Deletions {
		if d.Method != policy.MethodRequestDrain {
			removals = append(removals, d)
			continue
		}
		if !controlledBy(d.Pod, sts) {
			logger.Info("Not asking a pod the StatefulSet does not control to drain", "pod", klog.KObj(d.Pod))
			continue
		}
		if actErr = c.requestDrain(ctx, key, sts, d); actErr != nil {
			break
		}
		c.stepped(key, d)
	}
	if actErr == nil {
		c.sender.send(ctx, key, sts, in.Config, removals, in.Budgets)
	}
	if refused != nil && (held > 0 || plan.Status.Phase == policy.PhaseBlocked && plan.Status.Reason == policy.ReasonBlockedByPDB) {
		// The API server's word on the budget is final until its status
		// changes: say why, and look again when the refusal lapses.
		plan.Status.Phase = policy.PhaseBlocked
		plan.Status.Reason = policy.ReasonEvictionBlocked
		plan.Status.Message = refused.message
		if wait := evictionRetry - c.clock.Since(refused.at); wait > 0 {
			requeue = sooner(requeue, wait)
		}
	}
	// Drain requests the plan no longer stands by.
	if sts.DeletionTimestamp == nil && actErr == nil {
		actErr = c.withdrawDrains(ctx, key, plan.Withdrawals)
	}
	// The DNS gate's condition writes, after the plan: a failed write is an
	// error to retry with back-off, never a verdict on the configuration.
	if err := c.applyDNS(ctx, in.dnsChanges); err != nil && actErr == nil {
		actErr = err
	}
	if err := c.writeStatus(ctx, key, sts, in.Previous, &plan.Status); err != nil && actErr == nil {
		actErr = err
	}
	c.observe(key, in.Previous, &plan.Status)
	if actErr != nil {
		return actErr
	}
	if requeue > 0 {
		logger.V(4).Info("Looking again later", "after", requeue, "reason", plan.Status.Reason)
		c.queue.AddAfter(key, requeue)
	}
	return nil
}

// sooner is the sooner of two waits, zero meaning none.
func sooner(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// staleBasis reads the StatefulSet from the API server and says what of it
// that a plan depends on differs from sts (the cache's copy): its identity,
// generation, update revision, deletion or annotations (the configuration;
// stsroller's own status annotation aside). Empty: sts is current.
func (c *Controller) staleBasis(ctx context.Context, sts *appsv1.StatefulSet) (string, error) {
	live, err := c.client.AppsV1().StatefulSets(sts.Namespace).Get(ctx, sts.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "deleted", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading StatefulSet %s/%s before removing pods: %w", sts.Namespace, sts.Name, err)
	}
	return basisChange(sts, live), nil
}

// basisChange names the first difference between two copies of a
// StatefulSet that could change a plan, or returns "". Of the annotations
// only stsroller's own count (its configuration; the status it writes aside):
// others are not read by the planner, and some never reach the cache at all
// (informers.Trim drops kubectl's last-applied-configuration), so comparing
// them would call every kubectl-applied StatefulSet stale forever.
func basisChange(cached, live *appsv1.StatefulSet) string {
	switch {
	case live.UID != cached.UID:
		return "uid"
	case live.Generation != cached.Generation:
		return "generation"
	case live.Status.ObservedGeneration != cached.Status.ObservedGeneration:
		return "observedGeneration"
	case live.Status.UpdateRevision != cached.Status.UpdateRevision:
		return "updateRevision"
	case (live.DeletionTimestamp == nil) != (cached.DeletionTimestamp == nil):
		return "deletionTimestamp"
	}
	for k, v := range live.Annotations {
		if configAnnotation(k) && cached.Annotations[k] != v {
			return "annotation " + k
		}
	}
	for k := range cached.Annotations {
		if _, ok := live.Annotations[k]; !ok && configAnnotation(k) {
			return "annotation " + k
		}
	}
	return ""
}

// configAnnotation reports whether a StatefulSet annotation is part of
// stsroller's configuration: under stsroller.io/, its own status aside.
func configAnnotation(k string) bool {
	return strings.HasPrefix(k, policy.AnnotationPrefix) && k != policy.AnnotationStatus
}

// applyDNS writes the DNS gate's condition changes, each with its event.
func (c *Controller) applyDNS(ctx context.Context, changes []dnsgate.Change) error {
	for _, ch := range changes {
		ok, err := c.gate.Apply(ctx, ch)
		if err != nil {
			return err
		}
		if ok {
			c.recorder.Event(ch.Pod, corev1.EventTypeNormal, ch.Reason, ch.Message)
		}
	}
	return nil
}

// input is the planner's input with the DNS gate's condition writes.
type input struct {
	policy.Input
	dnsChanges []dnsgate.Change
	// lapse is when the first of the expectations in Removing lapses.
	lapse time.Time
}

// input gathers the planner's input. It reads and writes nothing outside the
// controller's own memory.
func (c *Controller) input(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet) (input, error) {
	base, err := gather(ctx, listerSource{c}, sts, &c.selectors)
	if err != nil {
		return input{}, err
	}
	c.budgets.set(key, base.Budgets)
	in := input{Input: base}
	in.Previous = c.previous(key, sts, in.Previous)
	in.Removing, in.lapse = c.expectations.outstanding(key, in.Pods)
	in.Now = c.clock.Now()
	c.observeHealth(key, &in.Input)
	if c.gate != nil && (in.ConfigError != nil || in.Config.DNSDomain == "") {
		// The gate is off for this StatefulSet (or cannot be read): its
		// background checks stop.
		c.gate.Forget(key)
	}
	if in.ConfigError == nil && in.Config.DNSDomain != "" {
		if c.gate == nil {
			in.DNSError = errors.New("the DNS gate is off in this stsroller: " + policy.AnnotationDNSDomain + " cannot be honoured")
		} else {
			v := c.gate.Observe(ctx, sts, in.Config.DNSDomain, in.Pods)
			in.DNS, in.DNSError, in.dnsChanges = v.States, v.Err, v.Changes
		}
	}
	return in, nil
}

// listerSource reads from the controller's informer caches.
type listerSource struct{ c *Controller }

// Pods reads the StatefulSet's pods from the index by controller UID: the
// cost is the StatefulSet's pods, not the namespace's.
func (s listerSource) Pods(_ context.Context, sts *appsv1.StatefulSet) ([]*corev1.Pod, error) {
	return informers.PodsControlledBy(s.c.podIndexer, sts.UID)
}

func (s listerSource) Budgets(_ context.Context, namespace string) ([]*policyv1.PodDisruptionBudget, error) {
	return s.c.pdbLister.PodDisruptionBudgets(namespace).List(labels.Everything())
}

func (s listerSource) Service(_ context.Context, namespace, name string) (*corev1.Service, error) {
	svc, err := s.c.svcLister.Services(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return svc, err
}

// budgetView corrects the informer's view of the budgets before planning,
// and returns the refusal that stands, if any (nil: none). Each budget's
// headroom is counted down by our evictions it does not count yet and the
// planner cannot see (sender.unaccounted); a budget that refused one of the
// StatefulSet's evictions has none while the refusal stands (sender.refused).
func (c *Controller) budgetView(key cache.ObjectName, in *policy.Input) *refusal {
	r, refused := c.sender.refused(key)
	spent := map[string]int32{}
	for _, bs := range in.Budgets {
		for _, b := range bs {
			if _, ok := spent[b.Name]; !ok {
				spent[b.Name] = c.sender.unaccounted(key.Namespace, b, in.Removing)
			}
		}
	}
	changed := refused
	for _, n := range spent {
		changed = changed || n > 0
	}
	if !changed {
		return nil
	}
	budgets := make(map[string][]pdb.Budget, len(in.Budgets))
	for pod, bs := range in.Budgets {
		view := bs
		for i, b := range bs {
			allowed := max(b.Allowed-spent[b.Name], 0)
			if _, ok := r.budgets[b.Name]; refused && ok {
				allowed = 0
			}
			if allowed == b.Allowed {
				continue
			}
			if &view[0] == &bs[0] {
				view = slices.Clone(bs)
			}
			view[i].Allowed = allowed
		}
		budgets[pod] = view
	}
	in.Budgets = budgets
	if !refused {
		return nil
	}
	return &r
}
