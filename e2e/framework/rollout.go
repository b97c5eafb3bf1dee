package framework

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/e2e/invariants"
)

// HealthGate is the readiness gate the tests own: a pod whose template lists it
// is Ready only while the test keeps this condition True (kwok's stages honour
// readiness gates), so the test decides which pods are healthy.
const HealthGate corev1.PodConditionType = "e2e.stsroller.io/healthy"

// Deletion is a pod the watcher saw deleted, as it was just before.
type Deletion struct {
	Pod      string
	Revision string
	Ready    bool
	Leader   bool
	// OutdatedOthers counts the other pods, not terminating, that were not at
	// the update revision when this one was deleted.
	OutdatedOthers int
	At             time.Time
}

// PodWatcher watches the pods of one StatefulSet from an informer. It keeps
// their HealthGate condition as Broken says (True unless broken, once a pod is
// at least HealthyAfter old), and records every deletion and the peak number
// of unavailable pods.
type PodWatcher struct {
	client   kubernetes.Interface
	ns, name string
	replicas int
	leader   labels.Selector

	mu           sync.Mutex
	broken       func(*corev1.Pod) bool
	healthyAfter time.Duration
	revision     string
	deletions    []Deletion
	immediate    int
	peak         int
	peakAt       time.Time
	store        cache.Store
}

// WatchPods starts a PodWatcher for the StatefulSet until t ends. The leader
// selector marks leader pods in the recorded deletions.
func WatchPods(ctx context.Context, t testing.TB, client kubernetes.Interface, sts *appsv1.StatefulSet, leader string) *PodWatcher {
	t.Helper()
	sel, err := labels.Parse(leader)
	if err != nil {
		t.Fatal(err)
	}
	w := &PodWatcher{
		client: client, ns: sts.Namespace, name: sts.Name, replicas: int(*sts.Spec.Replicas), leader: sel,
		broken: func(*corev1.Pod) bool { return false },
	}
	ctx, cancel := context.WithCancel(ctx)
	podSel, _ := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	factory := kinformers.NewSharedInformerFactoryWithOptions(client, 0, kinformers.WithNamespace(sts.Namespace),
		kinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = podSel.String() }))
	inf := factory.Core().V1().Pods().Informer()
	w.store = inf.GetStore()
	_, err = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { w.changed(ctx, nil, obj.(*corev1.Pod)) },
		UpdateFunc: func(old, cur any) {
			w.changed(ctx, old.(*corev1.Pod), cur.(*corev1.Pod))
		},
		DeleteFunc: func(obj any) {
			t, tombstone := obj.(cache.DeletedFinalStateUnknown)
			if tombstone {
				obj = t.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok && p.DeletionTimestamp == nil {
				// A grace-0 deletion, which stsroller never makes (kwok
				// does: see invariants.DeletedAtOnce), is not one
				// of its deletions; a re-list's tombstone may hide the
				// deletion timestamp and counts as one.
				if !tombstone && invariants.DeletedAtOnce(p) {
					w.countImmediate()
				} else {
					w.recordDeletion(p)
				}
			}
			w.measure()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	// Pods that must wait HealthyAfter are healed by this loop.
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				for _, obj := range w.store.List() {
					w.heal(ctx, obj.(*corev1.Pod))
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	return w
}

// SetBroken says which pods the health gate keeps False.
func (w *PodWatcher) SetBroken(broken func(*corev1.Pod) bool) {
	w.mu.Lock()
	w.broken = broken
	w.mu.Unlock()
	for _, obj := range w.store.List() {
		w.heal(context.Background(), obj.(*corev1.Pod))
	}
}

// SetHealthyAfter makes new pods wait this long before they turn healthy,
// like an application that starts slowly.
func (w *PodWatcher) SetHealthyAfter(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.healthyAfter = d
}

// SetUpdateRevision tells the watcher which revision is current, for
// Deletion.OutdatedOthers.
func (w *PodWatcher) SetUpdateRevision(rev string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.revision = rev
}

// ResetPeak starts measuring the peak of unavailable pods anew.
func (w *PodWatcher) ResetPeak() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peak = 0
}

// Peak is the largest number of unavailable pods (missing, terminating or not
// Ready) seen since the last ResetPeak.
func (w *PodWatcher) Peak() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// Immediate counts the pods seen gone with grace period 0, which are not
// among Deletions.
func (w *PodWatcher) Immediate() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.immediate
}

func (w *PodWatcher) countImmediate() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.immediate++
}

// Deletions are the deletions seen, in order.
func (w *PodWatcher) Deletions() []Deletion {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Deletion(nil), w.deletions...)
}

func (w *PodWatcher) changed(ctx context.Context, old, cur *corev1.Pod) {
	if old != nil && old.DeletionTimestamp == nil && cur.DeletionTimestamp != nil {
		if invariants.ForcedDeletion(cur) {
			w.countImmediate()
		} else {
			w.recordDeletion(old)
		}
	}
	w.measure()
	w.heal(ctx, cur)
}

func (w *PodWatcher) recordDeletion(p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := Deletion{
		Pod:      p.Name,
		Revision: p.Labels[appsv1.ControllerRevisionHashLabelKey],
		Ready:    PodReady(p),
		Leader:   w.leader.Matches(labels.Set(p.Labels)),
		At:       time.Now(),
	}
	for _, obj := range w.store.List() {
		o := obj.(*corev1.Pod)
		if o.UID != p.UID && o.DeletionTimestamp == nil && o.Labels[appsv1.ControllerRevisionHashLabelKey] != w.revision {
			d.OutdatedOthers++
		}
	}
	w.deletions = append(w.deletions, d)
}

func (w *PodWatcher) measure() {
	ready := 0
	for _, obj := range w.store.List() {
		p := obj.(*corev1.Pod)
		if p.DeletionTimestamp == nil && PodReady(p) {
			ready++
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if u := w.replicas - ready; u > w.peak {
		w.peak, w.peakAt = u, time.Now()
	}
}

// heal sets the pod's HealthGate as the test wants it.
func (w *PodWatcher) heal(ctx context.Context, p *corev1.Pod) {
	if p.DeletionTimestamp != nil || !hasGate(p, HealthGate) {
		return
	}
	w.mu.Lock()
	broken := w.broken(p)
	wait := w.healthyAfter
	w.mu.Unlock()
	want := corev1.ConditionTrue
	if broken {
		want = corev1.ConditionFalse
	} else if time.Since(p.CreationTimestamp.Time) < wait {
		return
	}
	if PodConditionStatus(p, HealthGate) == want {
		return
	}
	_ = SetPodCondition(ctx, w.client, p.Namespace, p.Name, HealthGate, want, "SetByTest")
}

func hasGate(p *corev1.Pod, t corev1.PodConditionType) bool {
	for _, g := range p.Spec.ReadinessGates {
		if g.ConditionType == t {
			return true
		}
	}
	return false
}

// CheckDeletionOrder checks what the deletions say of stsroller's order: every
// pod deleted while it was Ready went after every not-Ready outdated pod of
// the initial set that was deleted; a leader went only when no other outdated
// pod was left.
func CheckDeletionOrder(dels []Deletion) error {
	lastUnready := -1
	for i, d := range dels {
		if !d.Ready {
			lastUnready = i
		}
	}
	for i, d := range dels {
		if d.Ready && i < lastUnready {
			return fmt.Errorf("healthy pod %s was deleted (#%d) before unhealthy pod %s (#%d)", d.Pod, i, dels[lastUnready].Pod, lastUnready)
		}
		if d.Leader && d.Ready && d.OutdatedOthers > 0 {
			return fmt.Errorf("leader %s was deleted while %d other outdated pods were left", d.Pod, d.OutdatedOthers)
		}
	}
	return nil
}
