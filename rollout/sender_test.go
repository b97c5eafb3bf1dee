package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

// The sender's accounting: a removal handed over counts as on its way out at
// once, and every answer the API server can give (or not give) leaves the
// expectation right: kept when the pod went, dropped when it did not.

// scriptedRemover answers each removal with what answer returns for the pod;
// with gone, it deletes the pod at the API server first, as a removal that
// went through would. A removal waits on hold, when set, until it is closed.
type scriptedRemover struct {
	f      *fixture
	answer func(pod *corev1.Pod) (gone bool, err error)
	hold   chan struct{}

	mu   sync.Mutex
	sent []string
}

func (r *scriptedRemover) Delete(ctx context.Context, pod *corev1.Pod) error { return r.do(ctx, pod) }
func (r *scriptedRemover) Evict(ctx context.Context, pod *corev1.Pod) error  { return r.do(ctx, pod) }

func (r *scriptedRemover) do(ctx context.Context, pod *corev1.Pod) error {
	r.mu.Lock()
	r.sent = append(r.sent, pod.Name)
	r.mu.Unlock()
	if r.hold != nil {
		<-r.hold
	}
	gone, err := r.answer(pod)
	if gone {
		if derr := r.f.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{}); derr != nil {
			return derr
		}
	}
	return err
}

func (r *scriptedRemover) sentNames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// outdated adds StatefulSet web with n pods, all Ready at the old revision.
func (f *fixture) outdated(n int, annotations map[string]string) *appsv1.StatefulSet {
	sts := newSts("web", int32(n), annotations)
	f.sts = append(f.sts, sts)
	for i := range n {
		f.pods = append(f.pods, newPod(sts, i, "old", true))
	}
	return sts
}

var errReset = errors.New("read tcp 10.0.0.1:43210->10.0.0.2:6443: read: connection reset by peer")

func TestSenderLostResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		// gone: the removal went through before the answer was lost.
		gone bool
		// unreadable: the look at the pod fails too.
		unreadable                               bool
		wantExpected, wantEvent, wantRateLimited bool
	}{
		{name: "the pod went", gone: true, wantExpected: true, wantEvent: true},
		{name: "the pod is still there", wantRateLimited: true},
		{name: "the pod cannot be read", unreadable: true, wantExpected: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sts := f.outdated(3, nil)
			r := &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) { return tc.gone, errReset }}
			f.remover = r
			if tc.unreadable {
				f.verbReactors = append(f.verbReactors, verbReactor{"get", "pods", func(core.Action) (bool, runtime.Object, error) {
					return true, nil, errReset
				}})
			}
			if err := f.run(key(sts)); err != nil {
				t.Fatal(err)
			}
			if got := r.sentNames(); !slices.Equal(got, []string{"web-2"}) {
				t.Fatalf("sent %v, want [web-2]", got)
			}
			// The informer still shows the pod alive: only the expectation
			// says whether it counts as on its way out.
			out := f.c.expectations.removing(key(sts), f.pods)
			if _, ok := out["web-2-uid"]; ok != tc.wantExpected {
				t.Errorf("web-2 expected = %v, want %v", ok, tc.wantExpected)
			}
			ev := strings.Join(f.events(), "\n")
			if got := strings.Contains(ev, policy.ReasonEvictedPod); got != tc.wantEvent {
				t.Errorf("events %q: EvictedPod recorded = %v, want %v", ev, got, tc.wantEvent)
			}
			if got := f.c.queue.NumRequeues(key(sts)) > 0; got != tc.wantRateLimited {
				t.Errorf("requeued with back-off = %v, want %v", got, tc.wantRateLimited)
			}
			if tc.unreadable {
				// Held no longer than lostResponseHold: then planned anew.
				f.clock.Step(lostResponseHold)
				if _, ok := f.c.expectations.removing(key(sts), f.pods)["web-2-uid"]; ok {
					t.Errorf("web-2 still expected after %s", lostResponseHold)
				}
				if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
					t.Errorf("not requeued after %s", lostResponseHold)
				}
			}
			// Whatever the answer, the next plan never removes more than
			// max-unavailable (1): with web-2 counted out, nothing else
			// goes; with it back, web-2 itself is tried again.
			f.client.ClearActions()
			if err := f.run(key(sts)); err != nil {
				t.Fatal(err)
			}
			sent := r.sentNames()
			switch {
			case tc.wantExpected && !tc.unreadable && len(sent) != 1:
				t.Errorf("sent %v after a removal that went: want nothing more", sent)
			case !tc.wantExpected && (len(sent) != 2 || sent[1] != "web-2"):
				t.Errorf("sent %v: want web-2 tried again", sent)
			}
		})
	}
}

// removing is what outstanding says is on its way out.
func (e *expectations) removing(key cache.ObjectName, pods []*corev1.Pod) map[types.UID]policy.Method {
	out, _ := e.outstanding(key, pods)
	return out
}

// TestSenderLostResponseLooksAgain: a removal whose answer was lost looks at
// the pod up to settleLooks times before it holds it as on its way out.
func TestSenderLostResponseLooksAgain(t *testing.T) {
	for _, failed := range []int{1, settleLooks - 1, settleLooks} {
		t.Run(fmt.Sprintf("%d looks fail", failed), func(t *testing.T) {
			f := newFixture(t)
			sts := f.outdated(3, nil)
			f.remover = &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) { return false, errReset }}
			var gets atomic.Int32
			f.verbReactors = append(f.verbReactors, verbReactor{"get", "pods", func(core.Action) (bool, runtime.Object, error) {
				if int(gets.Add(1)) <= failed {
					return true, nil, errReset
				}
				return false, nil, nil
			}})
			if err := f.run(key(sts)); err != nil {
				t.Fatal(err)
			}
			held := failed >= settleLooks
			if want := min(failed+1, settleLooks); int(gets.Load()) != want {
				t.Errorf("looked at the pod %d times, want %d", gets.Load(), want)
			}
			if _, ok := f.c.expectations.removing(key(sts), f.pods)["web-2-uid"]; ok != held {
				t.Errorf("web-2 held = %v, want %v", ok, held)
			}
			if got := f.c.queue.NumRequeues(key(sts)) > 0; got == held {
				t.Errorf("requeued with back-off = %v, want %v", got, !held)
			}
		})
	}
}

// TestHeldRemovalWakesDespiteEarlierRequeue: the work queue keeps one wake-up
// per key, the earliest. A hold's own (lostResponseHold) is lost to a
// back-off requeue of the same key; the plan made then must look again when
// the hold ends, though no event comes.
func TestHeldRemovalWakesDespiteEarlierRequeue(t *testing.T) {
	f := newFixture(t)
	sts := f.outdated(3, nil)
	r := &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) { return false, errReset }}
	f.remover = r
	f.verbReactors = append(f.verbReactors, verbReactor{"get", "pods", func(core.Action) (bool, runtime.Object, error) {
		return true, nil, errReset
	}})
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.c.expectations.removing(key(sts), f.pods)["web-2-uid"]; !ok {
		t.Fatal("web-2 is not held")
	}
	// A failed sync of the same key, retried within milliseconds. (The
	// queue takes it in before the clock moves: one already due when it
	// arrives would be added beside the hold's wake-up, not in its place.)
	f.c.queue.AddRateLimited(key(sts))
	time.Sleep(20 * time.Millisecond)
	f.clock.Step(time.Second)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Fatal("the back-off requeue did not come")
	}
	k, _ := f.c.queue.Get()
	f.c.queue.Forget(k)
	f.c.queue.Done(k)
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 1 {
		t.Fatalf("sent %v while web-2 is held, want [web-2] only", got)
	}
	f.clock.Step(lostResponseHold - time.Second)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Fatalf("not looked at again when the hold of %s ended", lostResponseHold)
	}
}

func TestSenderConflictDropsTheExpectation(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 2, nil)
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "new", true), newPod(sts, 1, "old", false))
	f.remover = &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) {
		return false, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "web-1", nil)
	}}
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if out := f.c.expectations.removing(key(sts), f.pods); len(out) != 0 {
		t.Errorf("a conflict left expectations %v", out)
	}
	if ev := strings.Join(f.events(), "\n"); strings.Contains(ev, policy.ReasonDeletedUnhealthyPod) {
		t.Errorf("events %q record a deletion that did not happen", ev)
	}
}

// TestSenderExpectsAtOnce: while removals are in flight, the next plan counts
// them, so it neither repeats them nor goes past max-unavailable; it does not
// wait for them either.
func TestSenderExpectsAtOnce(t *testing.T) {
	f := newFixture(t)
	sts := f.outdated(6, map[string]string{policy.AnnotationMaxUnavailable: "2"})
	hold := make(chan struct{})
	r := &scriptedRemover{f: f, hold: hold, answer: func(*corev1.Pod) (bool, error) { return true, nil }}
	f.remover = r
	// f.run waits for the sender; these syncs must not.
	done := make(chan error)
	go func() {
		if err := f.run(key(sts)); err != nil {
			done <- err
			return
		}
		done <- nil
	}()
	if err := waitFor(func() bool { return len(r.sentNames()) == 2 }); err != nil {
		t.Fatalf("sent %v, want the batch of 2 in flight", r.sentNames())
	}
	_, ctx := ktesting.NewTestContext(t)
	for range 3 {
		if err := f.c.sync(ctx, key(sts)); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.sentNames(); len(got) != 2 {
		t.Errorf("sent %v while 2 were in flight: want no more", got)
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// One event on the StatefulSet names the step's pods; each pod has its own.
	var stsEvents, podEvents int
	for _, e := range f.events() {
		switch {
		case strings.Contains(e, policy.ReasonEvictedPod+" Evict 2 pods (web-5, web-4)"),
			strings.Contains(e, policy.ReasonEvictedPod+" Evict 2 pods (web-4, web-5)"):
			stsEvents++
		case strings.Contains(e, policy.ReasonEvictedPod+" stsroller (Evict)"):
			podEvents++
		}
	}
	if stsEvents != 1 || podEvents != 2 {
		t.Errorf("%d StatefulSet events naming the step and %d pod events, want 1 and 2", stsEvents, podEvents)
	}
}

// TestSenderRestartWithRemovalsInFlight: a process that stops answers what
// it sent and sends nothing more; the next one plans from the cluster, so no
// pod is removed twice and none beyond the batch.
func TestSenderRestartWithRemovalsInFlight(t *testing.T) {
	sts := newSts("web", 4, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	var pods []*corev1.Pod
	for i := range 4 {
		pods = append(pods, newPod(sts, i, "old", true))
	}
	budget := budgetFor("web", "web")
	budget.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(3))
	budget.Status.DisruptionsAllowed = 3

	first := newFixture(t)
	first.hedge = time.Hour // the held eviction is not slow, only held
	first.sts, first.pods, first.pdbs = append(first.sts, sts), pods, append(first.pdbs, budget)
	hold := make(chan struct{})
	r1 := &scriptedRemover{f: first, hold: hold, answer: func(*corev1.Pod) (bool, error) { return true, nil }}
	first.remover = r1
	done := make(chan error)
	go func() { done <- first.run(key(sts)) }()
	// Evictions through one budget go one at a time: one in flight, two queued.
	if err := waitFor(func() bool { return len(r1.sentNames()) == 1 }); err != nil {
		t.Fatal("the first eviction was not sent")
	}
	stopped := make(chan struct{})
	go func() { first.c.sender.shutdown(); close(stopped) }()
	if err := waitFor(func() bool {
		first.c.sender.mu.Lock()
		defer first.c.sender.mu.Unlock()
		return first.c.sender.closed
	}); err != nil {
		t.Fatal("the sender did not begin to stop")
	}
	close(hold)
	<-stopped
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sent := r1.sentNames()
	if len(sent) != 1 {
		t.Fatalf("a stopping process sent %v, want only the one in flight", sent)
	}
	ev := strings.Join(first.events(), "\n")
	if !strings.Contains(ev, "stsroller (Evict): "+sent[0]) {
		t.Errorf("events %q: the removal in flight was not recorded", ev)
	}

	// The next process: its informers show what the API server has.
	second := newFixture(t)
	list, err := first.client.CoreV1().Pods("ns").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second.sts, second.pdbs = append(second.sts, sts), append(second.pdbs, budget)
	for i := range list.Items {
		second.pods = append(second.pods, &list.Items[i])
	}
	r2 := &scriptedRemover{f: second, answer: func(*corev1.Pod) (bool, error) { return true, nil }}
	second.remover = r2
	// The budget's status as the disruption controller left it: the pod
	// evicted counts, and it is gone.
	budget.Status.DisruptionsAllowed = 2
	if err := second.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	again := r2.sentNames()
	if slices.Contains(again, sent[0]) {
		t.Errorf("the next process removed %s again", sent[0])
	}
	if len(again)+len(sent) > 3 {
		t.Errorf("removed %v then %v: more than max-unavailable 3", sent, again)
	}
	if len(again) != 2 {
		t.Errorf("the next process removed %v, want the 2 the first never sent", again)
	}
}

// TestSenderBudgetAccount: the informer may show an evicted pod terminating
// before it shows the budget's status counting it. Until the budget's status
// changes, the local account counts the eviction, so the next plan never
// spends the same disruption twice (a 429 at best).
func TestSenderBudgetAccount(t *testing.T) {
	f := newFixture(t)
	sts := f.outdated(4, map[string]string{policy.AnnotationMaxUnavailable: "4"})
	budget := budgetFor("web", "web")
	budget.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(2))
	budget.Status.DisruptionsAllowed = 2
	f.pdbs = append(f.pdbs, budget)
	r := &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) { return false, nil }}
	f.remover = r
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 2 {
		t.Fatalf("sent %v, want the 2 the budget allows", got)
	}
	pods := f.factory.Core().V1().Pods().Informer().GetIndexer()
	budgets := f.factory.Policy().V1().PodDisruptionBudgets().Informer().GetIndexer()
	// The pods show terminating; the budget's status is as before.
	for _, name := range r.sentNames() {
		obj, ok, err := pods.GetByKey("ns/" + name)
		if err != nil || !ok {
			t.Fatalf("pod %s: %v", name, err)
		}
		p := obj.(*corev1.Pod).DeepCopy()
		p.DeletionTimestamp = ptr.To(metav1.NewTime(now))
		mustUpdate(t, pods, p)
	}
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 2 {
		t.Fatalf("sent %v on a budget status that predates the evictions: want no more", got)
	}
	// The budget's status counts them: no headroom left, nothing more.
	b := budget.DeepCopy()
	b.ResourceVersion, b.Status.DisruptionsAllowed = "2", 0
	mustUpdate(t, budgets, b)
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 2 {
		t.Fatalf("sent %v with no headroom: want no more", got)
	}
	// Headroom again (the replacements are there): the account is settled,
	// the rest go.
	b = b.DeepCopy()
	b.ResourceVersion, b.Status.DisruptionsAllowed = "3", 2
	mustUpdate(t, budgets, b)
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 4 {
		t.Fatalf("sent %v once the budget allows 2 again: want all 4", got)
	}
	if n := len(f.c.sender.spent); n != 1 {
		t.Errorf("%d accounts, want the budget's one", n)
	}
}

// budgeted adds web with n outdated pods, max-unavailable n, and a budget
// over them that allows n.
func (f *fixture) budgeted(n int) *appsv1.StatefulSet {
	sts := f.outdated(n, map[string]string{policy.AnnotationMaxUnavailable: strconv.Itoa(n)})
	budget := budgetFor("web", "web")
	budget.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(int32(n)))
	budget.Status.DisruptionsAllowed = int32(n)
	f.pdbs = append(f.pdbs, budget)
	return sts
}

// TestSenderLaneOneAtATime: evictions through one budget that answer
// quickly are never in flight together (concurrent ones would make the API
// server retry all but one after 500 ms).
func TestSenderLaneOneAtATime(t *testing.T) {
	f := newFixture(t)
	sts := f.budgeted(5)
	var mu sync.Mutex
	cur, most := 0, 0
	r := &scriptedRemover{f: f, answer: func(*corev1.Pod) (bool, error) {
		mu.Lock()
		cur++
		most = max(most, cur)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
		return true, nil
	}}
	f.remover = r
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	if got := r.sentNames(); len(got) != 5 {
		t.Fatalf("sent %v, want all 5", got)
	}
	if most != 1 {
		t.Errorf("%d evictions of one lane in flight at once, want 1", most)
	}
}

// TestSenderHedgesASlowEviction: an eviction the API server holds (as it
// does for 500 ms after a conflict on the budget's status) does not hold
// its lane: after hedgeAfter the next goes beside it, and the rest follow,
// never more than laneInFlight at once.
func TestSenderHedgesASlowEviction(t *testing.T) {
	for _, tc := range []struct {
		name     string
		slow     func(name string) bool
		wantSent int // while the slow ones are held
	}{
		{"one slow", func(name string) bool { return name == "web-4" }, 5},
		{"all slow", func(string) bool { return true }, laneInFlight},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.hedge = 10 * time.Millisecond
			sts := f.budgeted(5)
			release := make(chan struct{})
			r := &scriptedRemover{f: f, answer: func(p *corev1.Pod) (bool, error) {
				if tc.slow(p.Name) {
					<-release
				}
				return true, nil
			}}
			f.remover = r
			done := make(chan error)
			go func() { done <- f.run(key(sts)) }()
			if err := waitFor(func() bool { return len(r.sentNames()) == tc.wantSent }); err != nil {
				close(release)
				t.Fatalf("sent %v while the slow ones were held, want %d", r.sentNames(), tc.wantSent)
			}
			time.Sleep(50 * time.Millisecond)
			if got := r.sentNames(); len(got) != tc.wantSent {
				t.Errorf("sent %v while the slow ones were held, want %d", got, tc.wantSent)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			got := r.sentNames()
			if len(got) != 5 {
				t.Fatalf("sent %v, want all 5", got)
			}
			if got[0] != "web-4" || got[1] != "web-3" {
				t.Errorf("sent %v, want the plan's order (highest ordinal first)", got)
			}
		})
	}
}

func mustUpdate(t *testing.T, idx cache.Indexer, obj any) {
	t.Helper()
	if err := idx.Update(obj); err != nil {
		t.Fatal(err)
	}
}
