//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/proc"
	"github.com/stsroller/stsroller/policy"
)

// drainRecord is what the tracker saw of one pod (one UID).
type drainRecord struct {
	name, revision string
	// requests are the distinct drain-requested values seen, in order.
	requests []string
	// requestedAt is when the first request was seen; outdatedOthers counts
	// the other outdated pods, not terminating, at that moment.
	requestedAt    time.Time
	outdatedOthers int
	// completeAt is when drain-complete was first seen.
	completeAt time.Time
	// deletedAt is when the pod was seen terminating, and complete whether
	// it carried drain-complete then.
	deletedAt time.Time
	complete  bool
	answered  bool
	// completeValue is the value of drain-complete at the deletion, and
	// lastRequest the request the pod carried then.
	completeValue, lastRequest string
}

// drainTracker watches the pods of a rollout, records every drain request,
// answer and deletion, measures the peak of pods unavailable or draining, and
// plays the sidecar: answer(pod) says after how long to answer a request (< 0:
// never, or someone else answers). onRequest, when set, runs before the answer.
type drainTracker struct {
	r        *rollout
	replicas int

	mu        sync.Mutex
	pods      map[types.UID]*drainRecord
	peak      int
	answer    func(name string) time.Duration
	onRequest func(p *corev1.Pod)
	store     cache.Store
}

func trackDrains(r *rollout, answer func(string) time.Duration) *drainTracker {
	r.t.Helper()
	d := &drainTracker{r: r, replicas: int(*r.sts.Spec.Replicas), pods: map[types.UID]*drainRecord{}, answer: answer}
	ctx, cancel := context.WithCancel(r.ctx)
	r.t.Cleanup(cancel)
	f := kinformers.NewSharedInformerFactoryWithOptions(r.client, 0, kinformers.WithNamespace(r.ns))
	inf := f.Core().V1().Pods().Informer()
	d.store = inf.GetStore()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.seen(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, cur any) { d.seen(ctx, cur.(*corev1.Pod)) },
	}); err != nil {
		r.t.Fatal(err)
	}
	f.Start(ctx.Done())
	f.WaitForCacheSync(ctx.Done())
	return d
}

func (d *drainTracker) setAnswer(answer func(string) time.Duration) {
	d.mu.Lock()
	d.answer = answer
	d.mu.Unlock()
	for _, obj := range d.store.List() {
		d.seen(d.r.ctx, obj.(*corev1.Pod))
	}
}

func (d *drainTracker) seen(ctx context.Context, p *corev1.Pod) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := d.pods[p.UID]
	if rec == nil {
		rec = &drainRecord{name: p.Name, revision: p.Labels[appsv1.ControllerRevisionHashLabelKey]}
		d.pods[p.UID] = rec
	}
	now := time.Now()
	v, requested := p.Annotations[policy.AnnotationDrainRequested]
	_, complete := p.Annotations[policy.AnnotationDrainComplete]
	if requested && !slices.Contains(rec.requests, v) {
		if len(rec.requests) == 0 {
			rec.requestedAt = now
			for _, obj := range d.store.List() {
				o := obj.(*corev1.Pod)
				if o.UID != p.UID && o.DeletionTimestamp == nil && o.Labels[appsv1.ControllerRevisionHashLabelKey] == rec.revision {
					rec.outdatedOthers++
				}
			}
		}
		rec.requests = append(rec.requests, v)
	}
	if complete && rec.completeAt.IsZero() {
		rec.completeAt = now
	}
	if p.DeletionTimestamp != nil && rec.deletedAt.IsZero() {
		rec.deletedAt, rec.complete = now, complete
		rec.completeValue, rec.lastRequest = p.Annotations[policy.AnnotationDrainComplete], v
	}
	if requested && !complete && p.DeletionTimestamp == nil && !rec.answered {
		if wait := d.answer(p.Name); wait >= 0 {
			rec.answered = true
			onRequest := d.onRequest
			pod := p.DeepCopy()
			go func() {
				if onRequest != nil {
					onRequest(pod)
				}
				time.Sleep(wait)
				patch := fmt.Sprintf(`{"metadata":{"uid":%q,"annotations":{%q:"by-test"}}}`, pod.UID, policy.AnnotationDrainComplete)
				_, _ = d.r.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, []byte(patch),
					metav1.PatchOptions{FieldManager: "e2e-sidecar"})
			}()
		}
	}
	// Unavailable or draining: every pod that is not there, not Ready, or
	// asked to drain.
	ok := 0
	for _, obj := range d.store.List() {
		o := obj.(*corev1.Pod)
		if _, asked := o.Annotations[policy.AnnotationDrainRequested]; o.DeletionTimestamp == nil && framework.PodReady(o) && !asked {
			ok++
		}
	}
	if u := d.replicas - ok; u > d.peak {
		d.peak = u
	}
}

// records returns the records of the pods at rev (the old revision), by name.
func (d *drainTracker) records(rev string) map[string]drainRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]drainRecord{}
	for _, rec := range d.pods {
		if rec.revision == rev {
			out[rec.name] = *rec
		}
	}
	return out
}

func (d *drainTracker) requested(rev string) []string {
	var out []string
	for n, rec := range d.records(rev) {
		if len(rec.requests) > 0 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// check checks the handshake over the old pods: each asked once, none
// deleted before its answer or its timeout, the peak of unavailable or
// draining pods within maxUnavailable.
func (d *drainTracker) check(t *testing.T, oldRev string, timeout time.Duration, maxUnavailable int) {
	t.Helper()
	for n, rec := range d.records(oldRev) {
		switch {
		case len(rec.requests) != 1:
			t.Errorf("%s was asked to drain %d times (%v), want once", n, len(rec.requests), rec.requests)
		case rec.deletedAt.IsZero():
			t.Errorf("%s was never deleted", n)
		case !rec.complete && rec.deletedAt.Sub(requestTime(t, rec.lastRequest)) < timeout:
			// The request's own time, with sub-second precision: the
			// timeout runs from it, not from when the test saw it.
			t.Errorf("%s was deleted %s after its request, unanswered, before the timeout %s",
				n, rec.deletedAt.Sub(requestTime(t, rec.lastRequest)), timeout)
		}
	}
	d.mu.Lock()
	peak := d.peak
	d.mu.Unlock()
	if peak > maxUnavailable {
		t.Errorf("peak of pods unavailable or draining = %d, want at most %d", peak, maxUnavailable)
	}
}

// requestTime parses a drain request's time.
func requestTime(t *testing.T, v string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Errorf("drain request %q is not an RFC 3339 time: %v", v, err)
	}
	return at
}

// startDrainSidecar runs examples/drain-sidecar as a process for one pod,
// answering through the API server after running cmd.
func startDrainSidecar(t *testing.T, ns, pod string, cmd ...string) *proc.Process {
	t.Helper()
	dir := t.TempDir()
	bin, err := framework.Build(dir, "./examples/drain-sidecar")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--kubeconfig=" + os.Getenv("KUBECONFIG"), "--namespace=" + ns, "--pod-name=" + pod,
		"--interval=500ms", "--"}, cmd...)
	var log syncLog
	c := exec.Command(bin, args...)
	c.Stdout, c.Stderr = &log, &log
	p, err := proc.Spawn("drain-sidecar-"+pod, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Stop(5 * time.Second)
		<-p.Done()
		if t.Failed() {
			t.Logf("drain-sidecar %s log (tail):\n%s", pod, proc.Tail(log.String(), 30))
		}
	})
	return p
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDrainHandshake: 6 pods, max-unavailable 2, a drain timeout of 15 s. The
// test plays the sidecar of db-1..db-4 and answers 3 s after each request,
// except db-3, which never answers and is evicted at the timeout with a
// DrainTimeout warning; db-0's sidecar is examples/drain-sidecar, running as a
// process. The leader db-5 is asked last; on its request the test moves the
// label to an updated pod (the sidecar stepping down) and answers.
func TestDrainHandshake(t *testing.T) {
	t.Parallel()
	const timeout = 15 * time.Second
	r := newRollout(t, rolloutOptions{replicas: 6, annotations: map[string]string{
		policy.AnnotationMaxUnavailable:      "2",
		policy.AnnotationDrainTimeoutSeconds: fmt.Sprint(int(timeout / time.Second)),
	}})
	r.label("db-5", "stsroller.io/role", "leader")
	old := r.current().Status.UpdateRevision
	startDrainSidecar(t, r.ns, "db-0", "/bin/sh", "-c", "sleep 1")
	d := trackDrains(r, func(name string) time.Duration {
		switch name {
		case "db-0", "db-3":
			return -1
		case "db-5":
			return time.Second
		}
		return 3 * time.Second
	})
	var rev string
	d.onRequest = func(p *corev1.Pod) {
		if p.Name != "db-5" {
			return
		}
		// Step down: the leader label moves to an updated pod.
		for _, o := range r.pods() {
			if o.Labels[appsv1.ControllerRevisionHashLabelKey] == rev && o.DeletionTimestamp == nil {
				r.label(o.Name, "stsroller.io/role", "leader")
				break
			}
		}
		r.label("db-5", "stsroller.io/role", "")
	}
	rev = r.newRevision("2")
	r.waitRolledOut(rev, 6)

	d.check(t, old, timeout, 2)
	recs := d.records(old)
	if rec := recs["db-3"]; rec.complete {
		t.Errorf("db-3 carried %s, but nobody answered it", policy.AnnotationDrainComplete)
	}
	if rec := recs["db-0"]; !rec.complete {
		t.Errorf("db-0 was deleted without the answer of examples/drain-sidecar")
	}
	if rec := recs["db-5"]; rec.outdatedOthers != 0 {
		t.Errorf("the leader db-5 was asked while %d other outdated pods were left", rec.outdatedOthers)
	}
	ev := r.waitEvent(policy.ReasonDrainTimeout, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, "db-3") {
		t.Errorf("DrainTimeout event %q does not name db-3", ev.Message)
	}
	if n := len(r.events(policy.ReasonDrainRequested)); n == 0 {
		t.Errorf("no %s event", policy.ReasonDrainRequested)
	}
	if n := len(r.events(policy.ReasonDrainCompleted)); n == 0 {
		t.Errorf("no %s event", policy.ReasonDrainCompleted)
	}
	r.checkEachOnceWithin(2, "with drains")
}

// TestDrainSurvivesControllerKill: the controller is killed (SIGKILL) while two
// drains are pending and started again. No pod is evicted before its answer,
// none is asked twice, and the status names the pods waited for.
func TestDrainSurvivesControllerKill(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Second // never reached: every pod answers
	r := newRollout(t, rolloutOptions{replicas: 6, annotations: map[string]string{
		policy.AnnotationMaxUnavailable:      "2",
		policy.AnnotationDrainTimeoutSeconds: fmt.Sprint(int(timeout / time.Second)),
	}})
	old := r.current().Status.UpdateRevision
	d := trackDrains(r, func(string) time.Duration { return -1 })
	rev := r.newRevision("2")

	var asked []string
	err := framework.Eventually(r.ctx, rolloutTimeout, 100*time.Millisecond, func(context.Context) error {
		if asked = d.requested(old); len(asked) < 2 {
			return fmt.Errorf("pods asked to drain: %v, want 2", asked)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = framework.Eventually(r.ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
		st := r.status()
		if st == nil || st.Reason != policy.ReasonWaitingForDrain || len(st.WaitingForDrain) != 2 {
			return fmt.Errorf("status %+v, want reason %s naming 2 pods", st, policy.ReasonWaitingForDrain)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	r.controller.Kill()
	time.Sleep(2 * time.Second)
	if err := r.controller.Start(); err != nil {
		t.Fatal(err)
	}
	// The new process picks the requests up: no eviction, no new request.
	r.noneReplaced(8 * time.Second)
	if got := d.requested(old); !slices.Equal(got, asked) {
		t.Errorf("after the restart, pods asked = %v, want still %v", got, asked)
	}

	d.setAnswer(func(string) time.Duration { return time.Second })
	r.waitRolledOut(rev, 6)
	d.check(t, old, timeout, 2)
	for n, rec := range d.records(old) {
		if !rec.complete {
			t.Errorf("%s was deleted without its answer", n)
		}
	}
	r.checkEachOnceWithin(2, "with drains across a restart")
}
