// Package rollout is stsroller's controller shell: it watches opted-in
// StatefulSets, their pods, PodDisruptionBudgets and Services, gathers what the
// planner needs from the listers, calls policy.Compute, and carries the plan
// out: deletions, evictions, the status annotation and events.
package rollout

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
)

// FieldManager names stsroller in managedFields.
const FieldManager = "stsroller"

// Waits between looks when nothing will tell us that the world changed.
const (
	// evictionRetry: a 429 means a budget has no headroom now; the PDB's next
	// status update requeues us anyway, this is the fallback.
	evictionRetry = 5 * time.Second
	// statusCountsInterval spaces writes of the status that change only its
	// counts and words.
	statusCountsInterval = 2 * time.Second
)

// PodRemover removes pods: Delete directly, Evict through the Eviction API.
type PodRemover interface {
	Delete(ctx context.Context, pod *corev1.Pod) error
	Evict(ctx context.Context, pod *corev1.Pod) error
}

// DNSGate tells the planner which pods resolve at the authoritative DNS servers,
// and keeps their stsroller.io/dns-propagated condition current. Observe must
// not block on DNS: it answers from what it knows and checks in the background,
// calling the controller's Enqueue when an answer arrives. It returns when to
// look again (0 for never).
type DNSGate interface {
	Observe(ctx context.Context, sts *appsv1.StatefulSet, domain string, pods []*corev1.Pod) (map[string]policy.DNSState, time.Duration, error)
	// Forget drops what the gate holds for a StatefulSet no longer managed.
	Forget(key cache.ObjectName)
}

// Controller rolls out opted-in StatefulSets.
type Controller struct {
	client    kubernetes.Interface
	stsLister appslisters.StatefulSetLister
	podLister corelisters.PodLister
	pdbLister policylisters.PodDisruptionBudgetLister
	svcLister corelisters.ServiceLister
	synced    []cache.InformerSynced

	queue        workqueue.TypedRateLimitingInterface[cache.ObjectName]
	recorder     record.EventRecorder
	clock        clock.WithTicker
	remover      PodRemover
	gate         DNSGate
	metrics      *metrics.Metrics
	expectations *expectations

	mu sync.Mutex
	// phases remembers each StatefulSet's last status, for the phase gauges
	// and the rollout duration.
	phases map[cache.ObjectName]*policy.Status
	starts map[cache.ObjectName]time.Time
	// lastWrite is when each StatefulSet's status was last written.
	lastWrite map[cache.ObjectName]time.Time
}

// Options are the controller's collaborators; zero fields get defaults.
type Options struct {
	Recorder record.EventRecorder
	Clock    clock.WithTicker
	Remover  PodRemover
	// Gate is the DNS gate; without one, StatefulSets that set
	// stsroller.io/dns-domain are reported InvalidConfig.
	Gate    DNSGate
	Metrics *metrics.Metrics
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
		opts.Recorder = &record.FakeRecorder{}
	}
	stsInformer := factory.Apps().V1().StatefulSets()
	podInformer := factory.Core().V1().Pods()
	pdbInformer := factory.Policy().V1().PodDisruptionBudgets()
	svcInformer := factory.Core().V1().Services()
	c := &Controller{
		client:    client,
		stsLister: stsInformer.Lister(),
		podLister: podInformer.Lister(),
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
		metrics:      opts.Metrics,
		expectations: newExpectations(opts.Clock),
		phases:       map[cache.ObjectName]*policy.Status{},
		starts:       map[cache.ObjectName]time.Time{},
		lastWrite:    map[cache.ObjectName]time.Time{},
	}
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
			AddFunc:    c.enqueueNamespaceOf,
			UpdateFunc: c.updateNamespaced,
			DeleteFunc: c.enqueueNamespaceOf,
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
		return nil
	}
	if err != nil {
		return err
	}
	in, err := c.input(ctx, key, sts)
	if err != nil {
		return err
	}
	plan := policy.Compute(in.Input)
	requeue := plan.RequeueAfter
	if d := in.dnsRequeue; d > 0 && (requeue == 0 || d < requeue) {
		requeue = d
	}

	var actErr error
	for _, d := range plan.Deletions {
		blocked, err := c.remove(ctx, key, sts, in.Config, d)
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

// input is the planner's input with the DNS gate's own wish to look again.
type input struct {
	policy.Input
	dnsRequeue time.Duration
}

func (c *Controller) input(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet) (input, error) {
	base, err := Gather(ctx, listerSource{c}, sts)
	if err != nil {
		return input{}, err
	}
	in := input{Input: base}
	in.AwaitingDeletions = c.expectations.outstanding(key, in.Pods)
	in.Now = c.clock.Now()
	if in.ConfigError == nil && in.Config.DNSDomain != "" {
		if c.gate == nil {
			in.DNSError = errors.New("the DNS gate is off in this stsroller: " + policy.AnnotationDNSDomain + " cannot be honoured")
		} else {
			in.DNS, in.dnsRequeue, in.DNSError = c.gate.Observe(ctx, sts, in.Config.DNSDomain, in.Pods)
		}
	}
	return in, nil
}

// listerSource reads from the controller's informer caches.
type listerSource struct{ c *Controller }

func (s listerSource) Pods(_ context.Context, namespace string, sel labels.Selector) ([]*corev1.Pod, error) {
	return s.c.podLister.Pods(namespace).List(sel)
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
	var err error
	switch d.Method {
	case policy.MethodRequestDrain:
		return "", c.requestDrain(ctx, key, sts, d)
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
		logger.V(4).Info("Pod changed since it was planned; planning again", "err", err)
		c.queue.Add(key)
		return "", nil
	default:
		return "", fmt.Errorf("removing pod %s/%s (%s): %w", d.Pod.Namespace, d.Pod.Name, d.Method, err)
	}
	c.expectations.expect(key, d.Pod.UID)
	reason, why := policy.ReasonEvictedPod, "outdated"
	if d.Method == policy.MethodDelete {
		reason, why = policy.ReasonDeletedUnhealthyPod, "unhealthy"
	} else if cfg.LeaderSelector != nil && cfg.LeaderSelector.Matches(labels.Set(d.Pod.Labels)) {
		why = "leader"
	}
	c.metrics.PodsDeleted.WithLabelValues(why, string(d.Method)).Inc()
	logger.V(2).Info("Removed pod", "method", d.Method, "why", d.Message)
	c.recorder.Eventf(sts, corev1.EventTypeNormal, reason, "%s: %s", d.Method, d.Message)
	c.recorder.Eventf(d.Pod, corev1.EventTypeNormal, reason, "stsroller (%s): %s", d.Method, d.Message)
	if d.Method == policy.MethodEvict {
		c.drained(ctx, sts, cfg, d.Pod)
	}
	return "", nil
}

// writeStatus patches the status annotation when what it says changed, and
// records the events the change deserves. A change of counts and words alone
// (same phase, reason and revision) is written at most every
// statusCountsInterval: in a large rollout every pod's every step would
// otherwise be one more write to the API server.
func (c *Controller) writeStatus(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, prev, next *policy.Status) error {
	if prev.SameAs(next) {
		return nil
	}
	now := c.clock.Now()
	if prev != nil && prev.Phase == next.Phase && prev.Reason == next.Reason && prev.UpdateRevision == next.UpdateRevision {
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
	_, err = c.client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, mergePatch, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status of %s/%s: %w", sts.Namespace, sts.Name, err)
	}
	c.mu.Lock()
	c.lastWrite[key] = now
	c.mu.Unlock()
	for _, e := range policy.Events(prev, next) {
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
	s := *next
	c.phases[key] = &s
	c.updateGaugesLocked()
}

func (c *Controller) forget(key cache.ObjectName) {
	c.expectations.forget(key)
	if c.gate != nil {
		c.gate.Forget(key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.phases, key)
	delete(c.starts, key)
	delete(c.lastWrite, key)
	c.updateGaugesLocked()
}

func (c *Controller) updateGaugesLocked() {
	c.metrics.Rollouts.Reset()
	c.metrics.RolloutsBlocked.Reset()
	for _, s := range c.phases {
		c.metrics.Rollouts.WithLabelValues(string(s.Phase)).Inc()
		if s.Phase == policy.PhaseBlocked || s.Phase == policy.PhaseStalled || s.Phase == policy.PhaseInvalid {
			c.metrics.RolloutsBlocked.WithLabelValues(s.Reason).Inc()
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
