// Package rollout is stsroller's controller shell: it watches opted-in
// StatefulSets, their pods, PodDisruptionBudgets and Services, gathers what the
// planner needs from the listers, calls policy.Compute, and carries the plan
// out: deletions, evictions, the status annotation and events.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	policylisters "k8s.io/client-go/listers/policy/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/pdb"
	"github.com/stsroller/stsroller/policy"
)

// FieldManager names stsroller in managedFields.
const FieldManager = "stsroller"

// Waits between looks when nothing will tell us that the world changed.
const (
	// evictionRetry: a 429 means a budget has no headroom now; the PDB's next
	// status update requeues us anyway, this is the fallback.
	evictionRetry = 5 * time.Second
	// statusCountsInterval spaces writes of the status that change neither
	// its phase nor its revision and deserve no event.
	statusCountsInterval = 2 * time.Second
	// conflictRetry: a pod changed or gone since it was planned.
	conflictRetry = time.Second
)

// PodRemover removes pods: Delete directly, Evict through the Eviction API.
type PodRemover interface {
	Delete(ctx context.Context, pod *corev1.Pod) error
	Evict(ctx context.Context, pod *corev1.Pod) error
}

// DNSGate tells the planner which pods resolve at the authoritative DNS
// servers. Observe is read-only and must not block on DNS: it answers from
// what it knows, checks in the background, and calls the controller's Enqueue
// when an answer changes. The condition writes it wants come back in the view;
// the controller applies them after planning.
type DNSGate interface {
	Observe(ctx context.Context, sts *appsv1.StatefulSet, domain string, pods []*corev1.Pod) dnsgate.View
	// Apply writes one change; false, nil when the pod is gone or replaced.
	Apply(ctx context.Context, c dnsgate.Change) (bool, error)
	// Forget drops what the gate holds for a StatefulSet no longer managed.
	Forget(key cache.ObjectName)
}

// Controller rolls out opted-in StatefulSets.
type Controller struct {
	client    kubernetes.Interface
	stsLister appslisters.StatefulSetLister
	pdbLister policylisters.PodDisruptionBudgetLister
	svcLister corelisters.ServiceLister
	synced    []cache.InformerSynced

	queue        workqueue.TypedRateLimitingInterface[cache.ObjectName]
	recorder     record.EventRecorder
	clock        clock.WithTicker
	remover      PodRemover
	gate         DNSGate
	health       HealthGate
	metrics      *metrics.Metrics
	expectations *expectations
	groups       *groups
	locks        *leaseLocks

	mu sync.Mutex
	// phases remembers each StatefulSet's last status, for the phase gauges
	// and the rollout duration.
	phases map[cache.ObjectName]*policy.Status
	starts map[cache.ObjectName]time.Time
	// healthWaits is since when each StatefulSet waits for its health gate.
	healthWaits map[cache.ObjectName]time.Time
	// lastWrite is when each StatefulSet's status was last written.
	lastWrite map[cache.ObjectName]time.Time
	// written is the status last written per StatefulSet, for syncs that
	// run before the informer shows our own patch.
	written map[cache.ObjectName]writtenStatus
	// gauged is the phase and reason each StatefulSet counts under in the
	// gauges.
	gauged map[cache.ObjectName]gaugeLabels

	podIndexer cache.Indexer
	stsIndexer cache.Indexer
	selectors  pdb.Selectors
	budgets    budgetUsers
}

// Options are the controller's collaborators; zero fields get defaults.
type Options struct {
	Recorder record.EventRecorder
	Clock    clock.WithTicker
	Remover  PodRemover
	// Gate is the DNS gate; without one, StatefulSets that set
	// stsroller.io/dns-domain are reported InvalidConfig.
	Gate DNSGate
	// Health is the Prometheus health gate; without one, StatefulSets that
	// set stsroller.io/health-query are reported InvalidConfig.
	Health  HealthGate
	Metrics *metrics.Metrics
	// Locks say where the rollout locks' Leases live; nil: in the
	// controller's cluster, namespace kube-system, cluster name "local".
	Locks *LockOptions
	// PodFactory, when set, provides the pod informer (informers.NewPodFactory:
	// StatefulSet pods only); else the main factory does. Start both.
	PodFactory kinformers.SharedInformerFactory
}

// QueueName names the workqueue in its metrics.
const QueueName = "stsroller"

// New wires the controller to the informers of the factory. Start the factory
// after New, and before Run.
func New(ctx context.Context, client kubernetes.Interface, factory kinformers.SharedInformerFactory, opts Options) (*Controller, error) {
	logger := klog.FromContext(ctx)
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Remover == nil {
		opts.Remover = &APIRemover{Client: client}
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	if opts.Recorder == nil {
		// Events are half of what users see: a controller that drops them
		// silently is misconfigured.
		return nil, errors.New("rollout.New: Options.Recorder is required")
	}
	if opts.PodFactory == nil {
		opts.PodFactory = factory
	}
	lockOpts := LockOptions{}
	if opts.Locks != nil {
		lockOpts = *opts.Locks
	}
	if lockOpts.Client == nil {
		lockOpts.Client = client.CoordinationV1()
	}
	if lockOpts.Namespace == "" {
		lockOpts.Namespace = "kube-system"
	}
	stsInformer := factory.Apps().V1().StatefulSets()
	podInformer := opts.PodFactory.Core().V1().Pods()
	if err := informers.AddPodIndexers(podInformer.Informer()); err != nil {
		return nil, fmt.Errorf("indexing pods: %w", err)
	}
	if err := informers.AddStatefulSetIndexers(stsInformer.Informer()); err != nil {
		return nil, fmt.Errorf("indexing StatefulSets: %w", err)
	}
	pdbInformer := factory.Policy().V1().PodDisruptionBudgets()
	svcInformer := factory.Core().V1().Services()
	c := &Controller{
		client:    client,
		stsLister: stsInformer.Lister(),
		pdbLister: pdbInformer.Lister(),
		svcLister: svcInformer.Lister(),
		synced: []cache.InformerSynced{stsInformer.Informer().HasSynced, podInformer.Informer().HasSynced,
			pdbInformer.Informer().HasSynced, svcInformer.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: QueueName, Clock: opts.Clock}),
		recorder:     opts.Recorder,
		clock:        opts.Clock,
		remover:      opts.Remover,
		gate:         opts.Gate,
		health:       opts.Health,
		healthWaits:  map[cache.ObjectName]time.Time{},
		metrics:      opts.Metrics,
		expectations: newExpectations(opts.Clock),
		phases:       map[cache.ObjectName]*policy.Status{},
		starts:       map[cache.ObjectName]time.Time{},
		lastWrite:    map[cache.ObjectName]time.Time{},
		written:      map[cache.ObjectName]writtenStatus{},
		gauged:       map[cache.ObjectName]gaugeLabels{},
		podIndexer:   podInformer.Informer().GetIndexer(),
		stsIndexer:   stsInformer.Informer().GetIndexer(),
		budgets:      newBudgetUsers(),
		locks:        newLeaseLocks(lockOpts, opts.Clock),
	}
	if err := stsInformer.Informer().AddIndexers(cache.Indexers{groupIndex: groupIndexFunc}); err != nil {
		return nil, fmt.Errorf("adding the rollout group index: %w", err)
	}
	c.groups = newGroups(stsInformer.Informer().GetIndexer())
	handlers := []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{stsInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.addStatefulSet,
			UpdateFunc: func(old, cur any) { c.updateStatefulSet(old, cur) },
			DeleteFunc: c.deleteStatefulSet,
		}},
		{podInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueuePodOwner,
			UpdateFunc: c.updatePod,
			DeleteFunc: c.enqueuePodOwner,
		}},
		{pdbInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.addBudget,
			UpdateFunc: c.updateBudget,
			DeleteFunc: c.deleteBudget,
		}},
		{svcInformer.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc:    c.enqueueServiceUsers,
			UpdateFunc: func(old, cur any) { c.enqueueServiceUsers(cur) },
			DeleteFunc: c.enqueueServiceUsers,
		}},
	}
	for _, h := range handlers {
		if _, err := h.informer.AddEventHandlerWithOptions(h.handler, cache.HandlerOptions{Logger: &logger}); err != nil {
			return nil, fmt.Errorf("adding event handler: %w", err)
		}
	}
	return c, nil
}

// Enqueue asks for a StatefulSet to be planned again. The DNS gate calls it
// when an answer arrives.
func (c *Controller) Enqueue(key cache.ObjectName) { c.queue.Add(key) }

// Run waits for the caches, then runs workers until ctx is done. A worker
// finishes the item in hand (and the API call in it) before Run returns.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrashWithContext(ctx)
	logger := klog.FromContext(ctx)
	logger.Info("Starting stsroller controller", "workers", workers)
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced...) {
		c.queue.ShutDown()
		return errors.New("timed out waiting for caches to sync")
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { wait.UntilWithContext(ctx, c.runWorker, time.Second) })
	}
	<-ctx.Done()
	logger.Info("Shutting down stsroller controller, finishing work in hand")
	// Workers finish the item in hand and take no other (see
	// processNextWorkItem): a process that is leaving must not start new
	// deletions, whoever leads next plans from the cluster anyway.
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

func (c *Controller) runWorker(ctx context.Context) {
	for c.processNextWorkItem(ctx) {
	}
}

func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if ctx.Err() != nil {
		return false
	}
	// The work in hand finishes even when ctx is cancelled: a deletion already
	// sent must be followed by its expectation and status.
	err := c.sync(context.WithoutCancel(ctx), key)
	if err == nil {
		c.queue.Forget(key)
		return true
	}
	utilruntime.HandleErrorWithContext(ctx, err, "Syncing StatefulSet failed, requeueing", "statefulSet", key)
	c.queue.AddRateLimited(key)
	return true
}

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
	if sts.DeletionTimestamp != nil && len(plan.Deletions) > 0 {
		// The StatefulSet is being deleted: nobody may recreate what we
		// remove. The planner refuses too; the shell never trusts that alone.
		logger.V(2).Info("StatefulSet is being deleted; removing no pods", "planned", len(plan.Deletions))
		plan.Deletions = nil
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

	var actErr error
	for _, r := range c.removeAll(ctx, key, sts, in.Config, plan.Deletions, in.Budgets) {
		blocked, err := r.blocked, r.err
		if blocked != "" {
			// The API server's word is final for this round: say why, and
			// look again when the budget may have changed.
			plan.Status.Phase = policy.PhaseBlocked
			plan.Status.Reason = policy.ReasonEvictionBlocked
			plan.Status.Message = blocked
			if requeue == 0 || evictionRetry < requeue {
				requeue = evictionRetry
			}
			break
		}
		if err != nil {
			actErr = err
			break
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

// removeConcurrency bounds the removals of one plan in flight at once. A
// batch of max-unavailable pods goes out together, as the built-in
// controller's does, instead of one API round trip after another: with
// batches of 25 and pods that return in a second, sending them one by one
// kept fewer than half of the batch out at any time. The Eviction API checks
// each budget atomically, so removals at once never exceed one.
const removeConcurrency = 16

// removal is the outcome of one planned removal.
type removal struct {
	blocked string
	err     error
}

// removeAll carries out the plan's removals, at most removeConcurrency at
// once. Evictions through the same PodDisruptionBudget go one after another:
// each one updates that budget's status, and the API server answers
// concurrent ones with a conflict it retries after 500 ms, again and again
// (EvictionsRetry in its eviction handler), so a batch of 12 sent at once
// through one budget took seconds and left the batch half empty. One after
// another they take a round trip each. Once a budget refuses (429), the
// evictions queued behind it are not sent and report the same refusal.
func (c *Controller) removeAll(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, cfg policy.Config,
	ds []policy.Deletion, budgets map[string][]pdb.Budget) []removal {
	out := make([]removal, len(ds))
	var lanes [][]int
	byBudget := map[string]int{}
	for i, d := range ds {
		lane := ""
		if d.Method == policy.MethodEvict {
			var names []string
			for _, b := range budgets[d.Pod.Name] {
				names = append(names, b.Name)
			}
			lane = strings.Join(names, ",")
		}
		if lane == "" {
			lanes = append(lanes, []int{i})
			continue
		}
		if l, ok := byBudget[lane]; ok {
			lanes[l] = append(lanes[l], i)
			continue
		}
		byBudget[lane] = len(lanes)
		lanes = append(lanes, []int{i})
	}
	sem := make(chan struct{}, removeConcurrency)
	var wg sync.WaitGroup
	for _, lane := range lanes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for n, i := range lane {
				out[i].blocked, out[i].err = c.remove(ctx, key, sts, cfg, ds[i])
				if out[i].blocked != "" {
					for _, j := range lane[n+1:] {
						out[j].blocked = out[i].blocked
					}
					return
				}
			}
		})
	}
	wg.Wait()
	return out
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
	in.Removing = c.expectations.outstanding(key, in.Pods)
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

// remove carries out one deletion. It returns the API server's refusal when an
// eviction is blocked by a disruption budget (429), and errors worth a retry.
// A pod already gone or changed since it was planned is no error: the next
// plan sees it as it is.
func (c *Controller) remove(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, cfg policy.Config, d policy.Deletion) (string, error) {
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(d.Pod))
	if !controlledBy(d.Pod, sts) {
		// Never touch a pod that is not this StatefulSet's (orphaned, or
		// owned by another object of the same name).
		logger.Info("Not removing a pod the StatefulSet does not control")
		return "", nil
	}
	var err error
	switch d.Method {
	case policy.MethodRequestDrain:
		err := c.requestDrain(ctx, key, sts, d)
		if err == nil {
			c.stepped(key, d)
		}
		return "", err
	case policy.MethodDelete:
		err = c.remover.Delete(ctx, d.Pod)
	case policy.MethodEvict:
		err = c.remover.Evict(ctx, d.Pod)
	}
	switch {
	case err == nil:
	case apierrors.IsTooManyRequests(err):
		c.metrics.EvictionsBlocked.Inc()
		logger.V(4).Info("Eviction blocked by a PodDisruptionBudget", "err", err)
		return fmt.Sprintf("the API server refused to evict %s: %v", d.Pod.Name, err), nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// The pod's own update or deletion requeues us; this is the
		// fallback, spaced so that a pod that keeps changing is no hot loop.
		logger.V(4).Info("Pod changed since it was planned; planning again", "err", err, "after", conflictRetry)
		c.queue.AddAfter(key, conflictRetry)
		return "", nil
	default:
		return "", fmt.Errorf("removing pod %s/%s (%s): %w", d.Pod.Namespace, d.Pod.Name, d.Method, err)
	}
	c.expectations.expect(key, d.Pod.UID, d.Method)
	reason, why := policy.ReasonEvictedPod, "outdated"
	switch d.Why {
	case policy.RemovalUnhealthy:
		reason, why = policy.ReasonDeletedUnhealthyPod, "unhealthy"
	case policy.RemovalLeader:
		why = "leader"
	}
	c.metrics.PodsDeleted.WithLabelValues(why, string(d.Method)).Inc()
	logger.V(2).Info("Removed pod", "method", d.Method, "why", d.Message)
	c.recorder.Eventf(sts, corev1.EventTypeNormal, reason, "%s: %s", d.Method, d.Message)
	c.recorder.Eventf(d.Pod, corev1.EventTypeNormal, reason, "stsroller (%s): %s", d.Method, d.Message)
	c.drained(ctx, sts, cfg, d)
	c.stepped(key, d)
	return "", nil
}

// writeStatus patches the status annotation when what it says changed, and
// records the events the change deserves. A change that deserves no event
// and keeps the phase and revision (counts, words, or a reason such as
// DeletingPods turning into WaitingForAvailability and back) is written at
// most every statusCountsInterval: in a large rollout every pod's every step
// would otherwise be a write to the API server, and each write of the
// StatefulSet wakes the built-in StatefulSet controller too.
func (c *Controller) writeStatus(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, prev, next *policy.Status) error {
	if prev.SameAs(next) {
		return nil
	}
	now := c.clock.Now()
	events := policy.Events(prev, next)
	if prev != nil && prev.Phase == next.Phase && prev.UpdateRevision == next.UpdateRevision && len(events) == 0 {
		c.mu.Lock()
		last := c.lastWrite[key]
		c.mu.Unlock()
		if wait := statusCountsInterval - now.Sub(last); wait > 0 {
			c.queue.AddAfter(key, wait)
			return nil
		}
	}
	patch, err := annotationPatch(policy.AnnotationStatus, next.Encode())
	if err != nil {
		return err
	}
	got, err := c.client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, mergePatch, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status of %s/%s: %w", sts.Namespace, sts.Name, err)
	}
	w := writtenStatus{status: policy.ParseStatus(map[string]string{policy.AnnotationStatus: next.Encode()}), readAt: sts.ResourceVersion}
	if got != nil {
		w.writtenAt = got.ResourceVersion
	}
	c.mu.Lock()
	c.lastWrite[key] = now
	c.written[key] = w
	c.mu.Unlock()
	for _, e := range events {
		c.recorder.Event(sts, e.Type, e.Reason, e.Message)
	}
	klog.FromContext(ctx).V(2).Info("Status changed", "phase", next.Phase, "reason", next.Reason, "message", next.Message)
	return nil
}

// observe keeps the phase gauges and the rollout duration.
func (c *Controller) observe(key cache.ObjectName, prev, next *policy.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if next.Phase.Rolling() {
		if _, ok := c.starts[key]; !ok {
			start := c.clock.Now()
			if prev != nil && prev.Phase.Rolling() && prev.LastTransitionTime.Time.Before(start) {
				start = prev.LastTransitionTime.Time
			}
			c.starts[key] = start
		}
	} else if start, ok := c.starts[key]; ok {
		if next.Phase == policy.PhaseComplete {
			c.metrics.RolloutDuration.Observe(c.clock.Since(start).Seconds())
		}
		delete(c.starts, key)
	}
	c.healthWaitLocked(key, next)
	s := *next
	c.phases[key] = &s
	c.gaugeLocked(key, &s)
}

func (c *Controller) forget(key cache.ObjectName) {
	c.expectations.forget(key)
	if c.gate != nil {
		c.gate.Forget(key)
	}
	if c.health != nil {
		c.health.Forget(key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.phases, key)
	delete(c.starts, key)
	delete(c.healthWaits, key)
	delete(c.lastWrite, key)
	delete(c.written, key)
	c.gaugeLocked(key, nil)
	c.budgets.set(key, nil)
}

// gaugeLabels is where one StatefulSet counts in the phase gauges.
type gaugeLabels struct {
	phase   policy.Phase
	blocked string // the reason, when blocked, stalled or invalid
}

func labelsOf(s *policy.Status) (gaugeLabels, bool) {
	if s == nil {
		return gaugeLabels{}, false
	}
	l := gaugeLabels{phase: s.Phase}
	if s.Phase == policy.PhaseBlocked || s.Phase == policy.PhaseStalled || s.Phase == policy.PhaseInvalid {
		l.blocked = s.Reason
	}
	return l, true
}

// gaugeLocked moves the StatefulSet in the phase gauges from where it counted
// to where next puts it (nil: nowhere). The gauges change by one step at a
// time, never reset, so a scrape never sees a managed StatefulSet missing.
// c.mu is held.
func (c *Controller) gaugeLocked(key cache.ObjectName, next *policy.Status) {
	old, had := c.gauged[key]
	cur, has := labelsOf(next)
	if had == has && old == cur {
		return
	}
	if has {
		c.metrics.Rollouts.WithLabelValues(string(cur.phase)).Inc()
		if cur.blocked != "" {
			c.metrics.RolloutsBlocked.WithLabelValues(cur.blocked).Inc()
		}
		c.gauged[key] = cur
	} else {
		delete(c.gauged, key)
	}
	if had {
		c.metrics.Rollouts.WithLabelValues(string(old.phase)).Dec()
		if old.blocked != "" {
			c.metrics.RolloutsBlocked.WithLabelValues(old.blocked).Dec()
		}
	}
}

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
