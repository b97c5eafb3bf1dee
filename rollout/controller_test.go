package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
)

var now = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// fixture is a controller over a fake clientset whose informer indexers are
// filled by hand, as in sample-controller.
type fixture struct {
	t        *testing.T
	client   *fake.Clientset
	sts      []*appsv1.StatefulSet
	pods     []*corev1.Pod
	pdbs     []*policyv1.PodDisruptionBudget
	reactors []core.ReactionFunc
	// more reactors, by verb and resource ("*" for any)
	verbReactors []verbReactor
	gate         func(f *fixture) DNSGate
	health       HealthGate
	// remover, if set, replaces the API server's removals.
	remover PodRemover
	// hedge, if set, replaces the sender's hedgeAfter.
	hedge    time.Duration
	factory  kinformers.SharedInformerFactory
	recorder *record.FakeRecorder
	clock    *clocktesting.FakeClock
	c        *Controller
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, recorder: record.NewFakeRecorder(100), clock: clocktesting.NewFakeClock(now)}
}

func (f *fixture) run(key cache.ObjectName) error {
	f.t.Helper()
	_, ctx := ktesting.NewTestContext(f.t)
	if f.c == nil {
		var objs []runtime.Object
		for _, o := range f.sts {
			objs = append(objs, o)
		}
		for _, o := range f.pods {
			objs = append(objs, o)
		}
		for _, o := range f.pdbs {
			objs = append(objs, o)
		}
		f.client = fake.NewClientset(objs...)
		for _, r := range f.reactors {
			f.client.PrependReactor("create", "pods", r)
		}
		for _, r := range f.verbReactors {
			f.client.PrependReactor(r.verb, r.resource, r.fn)
		}
		apiCalls.Watch(f.client)
		factory := kinformers.NewSharedInformerFactory(f.client, 0)
		f.factory = factory
		opts := Options{Recorder: f.recorder, Clock: f.clock, Metrics: metrics.New(), Remover: f.remover}
		if f.gate != nil {
			opts.Gate = f.gate(f)
		}
		opts.Health = f.health
		c, err := New(ctx, f.client, factory, opts)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, o := range f.sts {
			mustAdd(f.t, factory.Apps().V1().StatefulSets().Informer().GetIndexer(), o)
		}
		for _, o := range f.pods {
			mustAdd(f.t, factory.Core().V1().Pods().Informer().GetIndexer(), o)
		}
		for _, o := range f.pdbs {
			mustAdd(f.t, factory.Policy().V1().PodDisruptionBudgets().Informer().GetIndexer(), o)
		}
		if f.hedge != 0 {
			c.sender.hedgeAfter = f.hedge
		}
		c.sender.settleWait = time.Millisecond
		f.c = c
	}
	err := f.c.sync(ctx, key)
	// The removals of the plan are answered before the test looks.
	f.c.sender.idle()
	return err
}

type verbReactor struct {
	verb, resource string
	fn             core.ReactionFunc
}

func mustAdd(t *testing.T, idx cache.Indexer, obj any) {
	t.Helper()
	if err := idx.Add(obj); err != nil {
		t.Fatal(err)
	}
}

// actions are the client calls that change something (no list or watch).
// The removals of a plan are sent apart from the sync, so their place among
// the sync's own calls is not fixed: when each comes after the sync's read of
// the StatefulSet (as it must), they are put right after it, in the order of
// their description.
func (f *fixture) actions() []core.Action {
	var out, removals []core.Action
	get := -1
	ordered := true
	for _, a := range f.client.Actions() {
		if a.GetVerb() == "list" || a.GetVerb() == "watch" {
			continue
		}
		if isRemoval(a) {
			ordered = ordered && get >= 0
			removals = append(removals, a)
			continue
		}
		if get < 0 && a.GetVerb() == "get" && a.GetResource().Resource == "statefulsets" {
			get = len(out)
		}
		out = append(out, a)
	}
	if !ordered {
		return f.client.Actions()
	}
	sort.SliceStable(removals, func(i, j int) bool {
		return describe(removals[i : i+1])[0] < describe(removals[j : j+1])[0]
	})
	if len(removals) == 0 {
		return out
	}
	return slices.Concat(out[:get+1], removals, out[get+1:])
}

func isRemoval(a core.Action) bool {
	return (a.GetVerb() == "delete" && a.GetResource().Resource == "pods") ||
		(a.GetVerb() == "create" && a.GetSubresource() == "eviction")
}

// describe renders actions as short strings: "delete pods web-2", "create
// pods/eviction web-1", "patch statefulsets web".
func describe(actions []core.Action) []string {
	var out []string
	for _, a := range actions {
		res := a.GetResource().Resource
		if a.GetSubresource() != "" {
			res += "/" + a.GetSubresource()
		}
		name := ""
		switch a := a.(type) {
		case core.GetAction:
			name = a.GetName()
		case core.DeleteAction:
			name = a.GetName()
		case core.PatchAction:
			name = a.GetName()
		case core.CreateAction:
			if e, ok := a.GetObject().(*policyv1.Eviction); ok {
				name = e.Name
			}
		}
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s", a.GetVerb(), res, name)))
	}
	return out
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

// status reads the status annotation the last patch wrote.
func (f *fixture) status() *policy.Status {
	f.t.Helper()
	var st *policy.Status
	for _, a := range f.actions() {
		p, ok := a.(core.PatchAction)
		if !ok || p.GetResource().Resource != "statefulsets" {
			continue
		}
		var obj struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(p.GetPatch(), &obj); err != nil {
			f.t.Fatal(err)
		}
		st = policy.ParseStatus(obj.Metadata.Annotations)
	}
	return st
}

func newSts(name string, replicas int32, annotations map[string]string) *appsv1.StatefulSet {
	a := map[string]string{policy.AnnotationEnabled: "true"}
	for k, v := range annotations {
		a[k] = v
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid"),
			Generation: 2, Annotations: a},
		Spec: appsv1.StatefulSetSpec{
			Replicas:       ptr.To(replicas),
			Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
		},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdateRevision: "new", CurrentRevision: "old"},
	}
}

func newPod(sts *appsv1.StatefulSet, ordinal int, revision string, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	name := fmt.Sprintf("%s-%d", sts.Name, ordinal)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: sts.Namespace, UID: types.UID(name + "-uid"), ResourceVersion: "7",
			Labels: map[string]string{"app": sts.Name, appsv1.ControllerRevisionHashLabelKey: revision},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts,
				appsv1.SchemeGroupVersion.WithKind("StatefulSet"))},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: fmt.Sprintf("10.0.0.%d", ordinal+1),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status,
				LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}},
		},
	}
}

func key(sts *appsv1.StatefulSet) cache.ObjectName { return cache.MetaObjectToName(sts) }

func TestSyncDeletesUnhealthyFirstWithPreconditions(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, nil)
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	// The StatefulSet is read from the API server before any removal.
	want := []string{"get statefulsets web", "delete pods web-0", "patch statefulsets web"}
	if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	del := f.actions()[1].(core.DeleteActionImpl)
	pre := del.GetDeleteOptions().Preconditions
	if pre == nil || ptr.Deref(pre.UID, "") != "web-0-uid" || ptr.Deref(pre.ResourceVersion, "") != "7" {
		t.Errorf("delete preconditions = %+v, want UID web-0-uid and resourceVersion 7", pre)
	}
	if st := f.status(); st == nil || st.Phase != policy.PhaseRolling {
		t.Errorf("status = %+v, want phase Rolling", st)
	}
	ev := strings.Join(f.events(), "\n")
	if !strings.Contains(ev, policy.ReasonDeletedUnhealthyPod) || !strings.Contains(ev, policy.ReasonRolloutStarted) {
		t.Errorf("events %q lack %s and %s", ev, policy.ReasonDeletedUnhealthyPod, policy.ReasonRolloutStarted)
	}
}

func TestSyncEvictsHealthyHighestOrdinalFirst(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "2"})
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	// A plan's removals are sent together, so their order among themselves
	// is not fixed; which pods are chosen is.
	got := describe(f.actions())
	if len(got) == 4 {
		sort.Strings(got[1:3])
	}
	want := []string{"get statefulsets web", "create pods/eviction web-1", "create pods/eviction web-2", "patch statefulsets web"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	for _, a := range f.actions()[1:3] {
		ev := a.(core.CreateAction).GetObject().(*policyv1.Eviction)
		if ev.DeleteOptions == nil || ev.DeleteOptions.Preconditions == nil || ptr.Deref(ev.DeleteOptions.Preconditions.UID, "") != types.UID(ev.Name+"-uid") {
			t.Errorf("eviction %+v lacks the UID precondition", ev)
		}
	}
}

func TestSyncEvictionBlockedIs429NotError(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, nil)
	sts.Annotations[policy.AnnotationStatus] = (&policy.Status{Phase: policy.PhaseRolling, UpdateRevision: "new",
		Reason: policy.ReasonDeletingPods}).Encode()
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	f.reactors = append(f.reactors, func(a core.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	})
	if err := f.run(key(sts)); err != nil {
		t.Fatalf("a 429 must not be an error to retry hot: %v", err)
	}
	// The sender hands the refusal to the next plan, and asks for it.
	if n := f.c.queue.Len(); n != 1 {
		t.Fatalf("queue length = %d after a 429, want 1 (the refusal is planned on)", n)
	}
	k, _ := f.c.queue.Get()
	f.c.queue.Done(k)
	f.c.queue.Forget(k)
	if err := f.run(key(sts)); err != nil {
		t.Fatalf("a 429 must not be an error to retry hot: %v", err)
	}
	want := []string{"get statefulsets web", "create pods/eviction web-2", "patch statefulsets web", "patch statefulsets web"}
	if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got): the refused pod must not be evicted again at once\n%s", diff)
	}
	st := f.status()
	if st == nil || st.Phase != policy.PhaseBlocked || st.Reason != policy.ReasonEvictionBlocked {
		t.Fatalf("status = %+v, want Blocked/EvictionBlocked", st)
	}
	if n := len(f.c.expectations.removing(key(sts), f.pods)); n != 0 {
		t.Errorf("a refused eviction left %d expectations", n)
	}
	if ev := strings.Join(f.events(), "\n"); !strings.Contains(ev, "Warning "+policy.ReasonEvictionBlocked) {
		t.Errorf("events %q lack a Warning %s", ev, policy.ReasonEvictionBlocked)
	}
	// The retry waits: nothing is queued now, the key comes back after evictionRetry.
	if n := f.c.queue.Len(); n != 0 {
		t.Errorf("queue length = %d right after a 429, want 0 (no hot retry)", n)
	}
	f.clock.Step(evictionRetry)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Errorf("the StatefulSet was not requeued after %s", evictionRetry)
	}
	// Once the refusal lapses, the pod is tried again.
	f.client.ClearActions()
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := describe(f.actions()); !slices.Contains(got, "create pods/eviction web-2") {
		t.Errorf("actions %v after the refusal lapsed: want web-2 evicted again", got)
	}
}

func waitFor(cond func() bool) error {
	for range 1000 {
		if cond() {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("condition not met")
}

func TestSyncNotOnDeleteDeletesNothing(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, nil)
	sts.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"patch statefulsets web"}, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if st := f.status(); st.Phase != policy.PhaseInvalid || st.Reason != policy.ReasonNotOnDelete {
		t.Errorf("status = %+v, want Invalid/NotOnDelete", st)
	}
	if ev := strings.Join(f.events(), "\n"); !strings.Contains(ev, "Warning "+policy.ReasonNotOnDelete) {
		t.Errorf("events %q lack a Warning %s", ev, policy.ReasonNotOnDelete)
	}
}

func TestSyncInvalidConfigDeletesNothing(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, map[string]string{policy.AnnotationMaxUnavailable: "lots"})
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"patch statefulsets web"}, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	ev := strings.Join(f.events(), "\n")
	if !strings.Contains(ev, "Warning "+policy.ReasonInvalidConfig) || !strings.Contains(ev, policy.AnnotationMaxUnavailable) {
		t.Errorf("events %q lack a Warning %s naming the annotation", ev, policy.ReasonInvalidConfig)
	}
}

func TestSyncNotEnabledDoesNothing(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, nil)
	delete(sts.Annotations, policy.AnnotationEnabled)
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := describe(f.actions()); len(got) != 0 {
		t.Errorf("actions = %v, want none", got)
	}
}

func TestSyncDoesNotRepeatADeletionBeforeItIsObserved(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", false), newPod(sts, 1, "new", true), newPod(sts, 2, "new", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	// The informer still shows web-0 alive: nothing more may be deleted.
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	for _, a := range describe(f.actions()) {
		if strings.HasPrefix(a, "delete") || strings.HasPrefix(a, "create pods/eviction") {
			t.Errorf("second sync acted before the first deletion was observed: %s", a)
		}
	}
}

func TestSyncStatusWrittenOnlyWhenChanged(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, nil)
	prev := &policy.Status{Phase: policy.PhaseIdle, UpdateRevision: "new", Replicas: 2, Updated: 2, Available: 2,
		UpdatedAvailable: 2, Reason: policy.ReasonUpToDate, Message: "2 of 2 pods at revision new",
		ObservedGeneration: 2, LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}
	sts.Annotations[policy.AnnotationStatus] = prev.Encode()
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "new", true), newPod(sts, 1, "new", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := describe(f.actions()); len(got) != 0 {
		t.Errorf("actions = %v, want none: the status did not change", got)
	}
}

func TestEnqueuePodOwnerChecksUID(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 1, nil)
	f.sts = append(f.sts, sts)
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		f.c.queue.Forget(k)
	}
	stranger := newPod(sts, 0, "new", true)
	stranger.OwnerReferences[0].UID = "another-uid"
	f.c.enqueuePodOwner(stranger)
	if n := f.c.queue.Len(); n != 0 {
		t.Errorf("a pod owned by another StatefulSet of the same name was enqueued (%d)", n)
	}
	f.c.enqueuePodOwner(cache.DeletedFinalStateUnknown{Key: "ns/web-0", Obj: newPod(sts, 0, "new", true)})
	if n := f.c.queue.Len(); n != 1 {
		t.Errorf("queue length = %d after a tombstone of an owned pod, want 1", n)
	}
}

// TestStatusCountsAreWrittenAtMostEveryInterval: a status that changes only
// its counts, or its reason between two that deserve no event, is written at
// most every statusCountsInterval; a change of phase, or to a reason with an
// event, is written at once.
func TestStatusCountsAreWrittenAtMostEveryInterval(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, nil)
	f.sts = append(f.sts, sts)
	if err := f.run(key(sts)); err != nil { // builds the fixture
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	status := func(phase policy.Phase, reason string, updated int32) *policy.Status {
		return &policy.Status{Phase: phase, Reason: reason, UpdateRevision: "new", Replicas: 3, Updated: updated}
	}
	patches := func() int {
		n := 0
		for _, a := range describe(f.actions()) {
			if a == "patch statefulsets web" {
				n++
			}
		}
		return n
	}
	f.client.ClearActions()
	steps := []struct {
		prev, next *policy.Status
		step       time.Duration
		want       int
	}{
		// The fixture's first sync wrote a status just now.
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 0), status(policy.PhaseRolling, policy.ReasonDeletingPods, 1), 0, 0},
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 0), status(policy.PhaseRolling, policy.ReasonDeletingPods, 1), statusCountsInterval, 1},
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 1), status(policy.PhaseRolling, policy.ReasonDeletingPods, 2), time.Second, 1},
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 1), status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 2), 0, 2},
		{status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 2), status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 3), 0, 2},
		{status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 2), status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 3), statusCountsInterval, 3},
		{status(policy.PhaseBlocked, policy.ReasonBlockedByPDB, 3), status(policy.PhaseRolling, policy.ReasonDeletingPods, 3), 0, 4},
		// DeletingPods and WaitingForAvailability deserve no event: the
		// sliding window of a large rollout flips between them at every pod.
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 3), status(policy.PhaseRolling, policy.ReasonWaitingForAvailability, 3), time.Second, 4},
		{status(policy.PhaseRolling, policy.ReasonDeletingPods, 3), status(policy.PhaseRolling, policy.ReasonWaitingForAvailability, 3), statusCountsInterval, 5},
		{status(policy.PhaseRolling, policy.ReasonWaitingForAvailability, 3), status(policy.PhaseRolling, policy.ReasonWaitingForGroup, 3), 0, 6},
	}
	for i, s := range steps {
		f.clock.Step(s.step)
		if err := f.c.writeStatus(ctx, key(sts), sts, s.prev, s.next); err != nil {
			t.Fatal(err)
		}
		if got := patches(); got != s.want {
			t.Fatalf("step %d: %d status patches, want %d", i, got, s.want)
		}
	}
}

// TestSyncRemovesNothingOnAStaleStatefulSet: the cache still holds the
// StatefulSet of the previous rollout (update revision "old") while the API
// server's has moved on to "newer" and the pods are already there (two
// watches that lag each other: a cut StatefulSet watch, say). The live read
// before any removal catches it: nothing is removed, no status is written,
// and the key is planned again shortly.
func TestSyncRemovesNothingOnAStaleStatefulSet(t *testing.T) {
	f := newFixture(t)
	live := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	live.Generation, live.Status.ObservedGeneration, live.Status.UpdateRevision = 3, 3, "newer"
	cached := live.DeepCopy()
	cached.Generation, cached.Status.ObservedGeneration, cached.Status.UpdateRevision = 2, 2, "old"
	f.sts = append(f.sts, cached)
	f.pods = append(f.pods, newPod(live, 0, "newer", true), newPod(live, 1, "newer", true), newPod(live, 2, "newer", false))
	// The fixture seeds the client with the cache's copy; the API server's
	// is the newer one.
	f.verbReactors = append(f.verbReactors, verbReactor{verb: "get", resource: "statefulsets",
		fn: func(core.Action) (bool, runtime.Object, error) { return true, live.DeepCopy(), nil }})
	if err := f.run(key(cached)); err != nil {
		t.Fatal(err)
	}
	want := []string{"get statefulsets web"}
	if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if n := f.c.queue.Len(); n != 0 {
		t.Errorf("queue length = %d right away, want 0 (no hot retry)", n)
	}
	f.clock.Step(conflictRetry)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Errorf("the StatefulSet was not planned again after %s", conflictRetry)
	}
}

func TestBasisChange(t *testing.T) {
	base := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "2"})
	for _, tc := range []struct {
		name   string
		change func(s *appsv1.StatefulSet)
		want   string
	}{
		{"same", func(*appsv1.StatefulSet) {}, ""},
		{"only our status and the replica counts moved", func(s *appsv1.StatefulSet) {
			s.Annotations[policy.AnnotationStatus] = `{"phase":"Rolling"}`
			s.Status.ReadyReplicas, s.ResourceVersion = 2, "99"
		}, ""},
		{"recreated", func(s *appsv1.StatefulSet) { s.UID = "other" }, "uid"},
		{"new template", func(s *appsv1.StatefulSet) { s.Generation++ }, "generation"},
		{"new update revision", func(s *appsv1.StatefulSet) { s.Status.UpdateRevision = "newer" }, "updateRevision"},
		{"being deleted", func(s *appsv1.StatefulSet) { s.DeletionTimestamp = &metav1.Time{Time: now} }, "deletionTimestamp"},
		{"paused", func(s *appsv1.StatefulSet) { s.Annotations[policy.AnnotationPaused] = "true" }, "annotation " + policy.AnnotationPaused},
		{"kubectl's last-applied-configuration, which the cache never holds", func(s *appsv1.StatefulSet) {
			s.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = `{"kind":"StatefulSet"}`
			s.Annotations["team"] = "db"
		}, ""},
		{"max-unavailable removed", func(s *appsv1.StatefulSet) { delete(s.Annotations, policy.AnnotationMaxUnavailable) },
			"annotation " + policy.AnnotationMaxUnavailable},
	} {
		live := base.DeepCopy()
		tc.change(live)
		if got := basisChange(base, live); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSyncEvictsThroughOneBudgetOneAtATime: the API server answers
// concurrent evictions through one PodDisruptionBudget with conflicts it
// retries after 500 ms each, so evictions that share a budget go one after
// another; without a budget they go together. A 429 stops the evictions
// queued behind it through the same budget.
func TestSyncEvictsThroughOneBudgetOneAtATime(t *testing.T) {
	for _, tc := range []struct {
		name         string
		budget       bool
		refuse       bool
		wantParallel bool
		wantSent     int
	}{
		{name: "no budget", wantParallel: true, wantSent: 4},
		{name: "one budget", budget: true, wantSent: 4},
		{name: "one budget that refuses", budget: true, refuse: true, wantSent: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sts := newSts("web", 4, map[string]string{policy.AnnotationMaxUnavailable: "4"})
			f.sts = append(f.sts, sts)
			for i := range 4 {
				f.pods = append(f.pods, newPod(sts, i, "old", true))
			}
			if tc.budget {
				b := budgetFor("web", "web")
				b.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(4))
				b.Status.DisruptionsAllowed = 4
				f.pdbs = append(f.pdbs, b)
			}
			r := &countingRemover{refuse: tc.refuse}
			f.remover = r
			if err := f.run(key(sts)); err != nil {
				t.Fatal(err)
			}
			if tc.refuse {
				// The refusal is said by the next plan.
				if err := f.run(key(sts)); err != nil {
					t.Fatal(err)
				}
			}
			if r.sent != tc.wantSent {
				t.Errorf("%d evictions sent, want %d", r.sent, tc.wantSent)
			}
			if (r.peak > 1) != tc.wantParallel {
				t.Errorf("at most %d evictions in flight at once, want parallel=%v", r.peak, tc.wantParallel)
			}
			if st := f.status(); tc.refuse && (st == nil || st.Reason != policy.ReasonEvictionBlocked) {
				t.Errorf("status %+v, want EvictionBlocked", st)
			}
		})
	}
}

// countingRemover counts evictions and how many were in flight at once; each
// takes 20 ms, and with refuse each is refused with 429.
type countingRemover struct {
	refuse               bool
	mu                   sync.Mutex
	inFlight, peak, sent int
}

func (r *countingRemover) Delete(context.Context, *corev1.Pod) error { return nil }

func (r *countingRemover) Evict(context.Context, *corev1.Pod) error {
	r.mu.Lock()
	r.inFlight++
	r.sent++
	r.peak = max(r.peak, r.inFlight)
	r.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	r.mu.Lock()
	r.inFlight--
	r.mu.Unlock()
	if r.refuse {
		return apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	}
	return nil
}
