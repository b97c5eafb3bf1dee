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
	sender       *sender

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
	c.sender = newSender(c)
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
	// Removals handed over and not yet sent are dropped; those in flight
	// are answered and recorded.
	c.sender.shutdown()
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
