package rollout

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
)

// drain empties the queue, returning the keys that were in it.
func drain(c *Controller) []string {
	var out []string
	for c.queue.Len() > 0 {
		k, _ := c.queue.Get()
		out = append(out, k.String())
		c.queue.Done(k)
		c.queue.Forget(k)
	}
	return out
}

func sortedKeys(keys []string) []string {
	out := append([]string(nil), keys...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func budgetFor(name string, app string) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: ktypes.UID("pdb-" + name), ResourceVersion: "1", Generation: 1},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: 1},
	}
}

// TestPDBEventEnqueuesOnlySelectedStatefulSets (issue 8): a budget's add,
// update and delete re-plan the StatefulSets whose pods it selects, found
// through the template label index, plus those it selected before (its old
// selector, and the last gather), never the rest of the namespace.
func TestPDBEventEnqueuesOnlySelectedStatefulSets(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"a", "b", "c", "d"} {
		sts := newSts(n, 1, nil)
		sts.Spec.Template.Labels = map[string]string{"app": n}
		f.sts = append(f.sts, sts)
		f.pods = append(f.pods, newPod(sts, 0, "new", true))
	}
	f.pdbs = append(f.pdbs, budgetFor("pa", "a"))
	// Sync a: its gather records that pa selects its pods.
	if err := f.run(key(f.sts[0])); err != nil {
		t.Fatal(err)
	}
	drain(f.c)

	pa := budgetFor("pa", "a")
	f.c.addBudget(pa)
	if diff := cmp.Diff([]string{"ns/a"}, drain(f.c)); diff != "" {
		t.Errorf("add of a budget over a: enqueued (-want +got):\n%s", diff)
	}
	// Its status changes: a only.
	pa2 := pa.DeepCopy()
	pa2.ResourceVersion = "2"
	pa2.Status.DisruptionsAllowed = 0
	f.c.updateBudget(pa, pa2)
	if diff := cmp.Diff([]string{"ns/a"}, drain(f.c)); diff != "" {
		t.Errorf("status update: enqueued (-want +got):\n%s", diff)
	}
	// Its selector moves from a to b: both, not c or d.
	pa3 := pa2.DeepCopy()
	pa3.ResourceVersion = "3"
	pa3.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}
	f.c.updateBudget(pa2, pa3)
	if diff := cmp.Diff([]string{"ns/a", "ns/b"}, sortedKeys(drain(f.c))); diff != "" {
		t.Errorf("selector a→b: enqueued (-want +got):\n%s", diff)
	}
	// The last gather of a still shows pa over it (a was not synced since):
	// a later update of pa, with only b selected now, still reaches a.
	pa4 := pa3.DeepCopy()
	pa4.ResourceVersion = "4"
	f.c.updateBudget(pa3, pa4)
	if diff := cmp.Diff([]string{"ns/a", "ns/b"}, sortedKeys(drain(f.c))); diff != "" {
		t.Errorf("update after the move: enqueued (-want +got):\n%s", diff)
	}
	f.c.deleteBudget(cache.DeletedFinalStateUnknown{Key: "ns/pa", Obj: pa4})
	if diff := cmp.Diff([]string{"ns/a", "ns/b"}, sortedKeys(drain(f.c))); diff != "" {
		t.Errorf("delete: enqueued (-want +got):\n%s", diff)
	}
}

func gaugeValues(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "stsroller_statefulsets" {
			continue
		}
		for _, mt := range mf.Metric {
			out[labelValue(mt, "phase")] = mt.GetGauge().GetValue()
		}
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestPhaseGaugesUpdatedIncrementally (issue 8): syncs move a StatefulSet
// from one phase's count to another's and never reset the gauges, so a
// scrape during a sync sees every managed StatefulSet.
func TestPhaseGaugesUpdatedIncrementally(t *testing.T) {
	f := newFixture(t)
	a, b := newSts("a", 1, nil), newSts("b", 1, nil)
	f.sts = append(f.sts, a, b)
	if err := f.run(key(a)); err != nil {
		t.Fatal(err)
	}
	m := f.c.metrics
	rolling := &policy.Status{Phase: policy.PhaseRolling, Reason: policy.ReasonDeletingPods}
	idle := &policy.Status{Phase: policy.PhaseIdle}
	f.c.observe(key(a), nil, rolling)
	f.c.observe(key(b), nil, rolling)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bad []map[string]float64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// a is always Rolling: the count never drops below 1.
			if g := gaugeValues(t, m); g[string(policy.PhaseRolling)] < 1 {
				bad = append(bad, g)
			}
		}
	})
	// b goes back and forth while a stays Rolling; a scrape must always
	// count a.
	for range 20000 {
		f.c.observe(key(b), rolling, idle)
		f.c.observe(key(b), idle, rolling)
		f.c.observe(key(b), rolling, idle)
	}
	close(stop)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d scrapes missed a managed StatefulSet, e.g. %v", len(bad), bad[0])
	}
	f.c.forget(key(a))
	g := gaugeValues(t, m)
	if g[string(policy.PhaseRolling)] != 0 || g[string(policy.PhaseIdle)] != 1 {
		t.Errorf("gauges after a is forgotten = %v, want Rolling 0, Idle 1", g)
	}
}

// propagated is a prober for which every name is propagated.
type propagated struct{}

func (propagated) Probe(_ context.Context, name string, _ []netip.Addr) dnsprobe.Result {
	return dnsprobe.Result{Name: name, Propagated: true, Reason: dnsprobe.ReasonPropagated}
}

// TestDNSConditionWriteFailureIsRetriedNotInvalid (issue 9, bug 1): the DNS
// gate's pods/status write failing with 503 is a sync error (retried with
// back-off), and the phase never turns Invalid.
func TestDNSConditionWriteFailureIsRetriedNotInvalid(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, map[string]string{policy.AnnotationDNSDomain: "web.example.test"})
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "new", true), newPod(sts, 1, "new", true))
	var gate *dnsgate.Gate
	f.gate = func(f *fixture) DNSGate {
		gate = dnsgate.New(t.Context(), propagated{}, f.client, func(k cache.ObjectName) {}, dnsgate.Options{Clock: f.clock})
		return gate
	}
	f.verbReactors = append(f.verbReactors, verbReactor{"patch", "pods", func(a core.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewServiceUnavailable("injected")
	}})
	if err := f.run(key(sts)); err != nil { // starts the checks
		t.Fatal(err)
	}
	gate.Wait()
	f.client.ClearActions()
	err := f.run(key(sts))
	if err == nil || !apierrors.IsServiceUnavailable(err) {
		t.Fatalf("sync = %v, want the 503 back, to be retried with back-off", err)
	}
	var wrote []string
	for _, a := range describe(f.actions()) {
		if strings.HasPrefix(a, "patch pods/status") {
			wrote = append(wrote, a)
		}
	}
	if len(wrote) == 0 {
		t.Fatalf("no condition write was tried: %v", describe(f.actions()))
	}
	if st := f.status(); st != nil && st.Phase == policy.PhaseInvalid {
		t.Errorf("status = %+v: a failed write turned the phase Invalid", st)
	}
	if ev := strings.Join(f.events(), "\n"); strings.Contains(ev, policy.ReasonInvalidConfig) {
		t.Errorf("events %q report a configuration error", ev)
	}
}

// TestSyncTwiceOnStaleCacheAnnouncesOnce (issue 9, bug 5): a second sync on a
// cache that does not show our status patch yet does not repeat the phase
// events.
func TestSyncTwiceOnStaleCacheAnnouncesOnce(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, nil)
	sts.ResourceVersion = "5"
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	f.verbReactors = append(f.verbReactors, verbReactor{"patch", "statefulsets", func(a core.Action) (bool, runtime.Object, error) {
		out := sts.DeepCopy()
		out.ResourceVersion = "6"
		return true, out, nil
	}})
	for range 2 {
		if err := f.run(key(sts)); err != nil {
			t.Fatal(err)
		}
		f.clock.Step(statusCountsInterval)
	}
	n := strings.Count(strings.Join(f.events(), "\n"), policy.ReasonRolloutStarted)
	if n != 1 {
		t.Errorf("%d %s events over two syncs on a stale cache, want 1", n, policy.ReasonRolloutStarted)
	}
	// Once the cache shows a newer version, it is believed again.
	fresh := sts.DeepCopy()
	fresh.ResourceVersion = "7"
	if got := f.c.previous(key(sts), fresh, nil); got != nil {
		t.Errorf("previous on a fresh cache = %+v, want the cache's (nil)", got)
	}
}

// TestConflictOnDeleteRequeuesWithBackoff (issue 9, bug 6): a pod changed
// since it was planned requeues the StatefulSet after a pause, not at once.
func TestConflictOnDeleteRequeuesWithBackoff(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, nil)
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "new", true))
	f.verbReactors = append(f.verbReactors, verbReactor{"delete", "pods", func(a core.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "web-0", nil)
	}})
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if n := f.c.queue.Len(); n != 0 {
		t.Fatalf("queue length = %d right after a conflict, want 0 (no hot loop)", n)
	}
	f.clock.Step(conflictRetry)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Errorf("not requeued %s after the conflict", conflictRetry)
	}
}

// TestNewRequiresARecorder (issue 9, bug 6): no silent FakeRecorder.
func TestNewRequiresARecorder(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	client := fake.NewClientset()
	if _, err := New(ctx, client, kinformers.NewSharedInformerFactory(client, 0), Options{}); err == nil {
		t.Fatal("New without a recorder succeeded")
	}
}

// TestDeletingStatefulSetGetsNoDeletions (issue 9, bug 2): a StatefulSet with
// a deletion timestamp has nothing removed, and its status is still written.
func TestDeletingStatefulSetGetsNoDeletions(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	sts.DeletionTimestamp = ptr.To(metav1.NewTime(now))
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	for _, a := range describe(f.actions()) {
		if strings.HasPrefix(a, "delete") || strings.HasPrefix(a, "create pods/eviction") {
			t.Errorf("a StatefulSet being deleted had a pod removed: %s", a)
		}
	}
	if st := f.status(); st == nil {
		t.Errorf("no status written")
	}
}

// TestForeignPodsNeverTouched (issue 9, bug 2): pods that match the selector
// but have no controller reference, or one to another UID, are not touched,
// whatever the planner is handed.
func TestForeignPodsNeverTouched(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	f.sts = append(f.sts, sts)
	orphan := newPod(sts, 0, "old", false)
	orphan.OwnerReferences = nil
	foreign := newPod(sts, 1, "old", true)
	foreign.OwnerReferences[0].UID = "another-uid"
	f.pods = append(f.pods, orphan, foreign, newPod(sts, 2, "new", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	for _, a := range describe(f.actions()) {
		if strings.HasPrefix(a, "delete") || strings.HasPrefix(a, "create pods/eviction") {
			t.Errorf("a pod the StatefulSet does not control was removed: %s", a)
		}
	}
	// And the sender itself re-checks ownership.
	f.client.ClearActions()
	var ds []policy.Deletion
	for _, p := range []*corev1.Pod{orphan, foreign} {
		ds = append(ds, policy.Deletion{Pod: p, Method: policy.MethodDelete})
	}
	_, ctx := ktesting.NewTestContext(t)
	f.c.sender.send(ctx, key(sts), sts, policy.Config{}, ds, nil)
	f.c.sender.idle()
	if got := describe(f.actions()); len(got) != 0 {
		t.Errorf("remove acted on pods the StatefulSet does not control: %v", got)
	}
}
