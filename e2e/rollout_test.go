//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

const rolloutTimeout = 3 * time.Minute

// The stsroller binary is built once per run.
var (
	buildOnce       sync.Once
	stsrollerBinary string
	buildErr        error
)

func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stsroller-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		onExit(func() { os.RemoveAll(dir) })
		stsrollerBinary, buildErr = framework.BuildController(dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return stsrollerBinary
}

// rollout is one managed StatefulSet in its own namespace, with its own
// stsroller process and a watcher that drives and records pod health.
type rollout struct {
	t          testing.TB
	ctx        context.Context
	client     kubernetes.Interface
	ns         string
	sts        *appsv1.StatefulSet
	watch      *framework.PodWatcher
	controller *framework.Controller
}

type rolloutOptions struct {
	replicas    int32
	annotations map[string]string
	strategy    appsv1.StatefulSetUpdateStrategyType
	// noController starts no stsroller and leaves the StatefulSet unmanaged
	// (the built-in rollout is measured).
	noController bool
	// noControllerYet manages the StatefulSet but leaves starting stsroller
	// to the test.
	noControllerYet bool
}

const leaderSelector = "stsroller.io/role=leader"

func newRollout(t testing.TB, o rolloutOptions) *rollout {
	t.Helper()
	return newRolloutIn(t, framework.Client(t), o)
}

// newRolloutIn is newRollout in the cluster of client (a second control
// plane of the lock tests).
func newRolloutIn(t testing.TB, client kubernetes.Interface, o rolloutOptions) *rollout {
	t.Helper()
	ctx := t.Context()
	ns := framework.Namespace(ctx, t, client)
	r := &rollout{t: t, ctx: ctx, client: client, ns: ns}
	if o.strategy == "" {
		o.strategy = appsv1.OnDeleteStatefulSetStrategyType
	}
	ann := map[string]string{}
	if !o.noController {
		ann[policy.AnnotationEnabled] = "true"
	}
	for k, v := range o.annotations {
		ann[k] = v
	}
	sts := dbStatefulSet(ns, o.replicas, o.strategy, ann)
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: sts.Spec.Selector.MatchLabels,
			Ports: []corev1.ServicePort{{Name: "db", Port: 5432}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	created, err := client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.sts = created
	r.watch = framework.WatchPods(ctx, t, client, created, leaderSelector)
	r.waitAllReady(int(o.replicas))
	r.watch.ResetPeak() // the pods' first start is no concern of ours
	if !o.noController && !o.noControllerYet {
		r.controller = framework.StartController(t, client, framework.ControllerOptions{Binary: binary(t), Namespace: ns})
	}
	return r
}

// dbStatefulSet is the StatefulSet the e2e tests roll out: "db" in ns,
// Parallel, pods labelled app=db with VERSION=1 in their environment, Ready
// only while the test's health gate and every extra gate are True.
func dbStatefulSet(ns string, replicas int32, strategy appsv1.StatefulSetUpdateStrategyType, annotations map[string]string, extraGates ...corev1.PodReadinessGate) *appsv1.StatefulSet {
	labels := map[string]string{"app": "db"}
	gates := append([]corev1.PodReadinessGate{{ConditionType: framework.HealthGate}}, extraGates...)
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns, Annotations: annotations},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         "db",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: strategy},
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "db", Image: "registry.k8s.io/pause:3.10",
						Env: []corev1.EnvVar{{Name: "VERSION", Value: "1"}}}},
					ReadinessGates:                gates,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
				},
			},
		},
	}
}

func (r *rollout) current() *appsv1.StatefulSet {
	r.t.Helper()
	s, err := r.client.AppsV1().StatefulSets(r.ns).Get(r.ctx, r.sts.Name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

func (r *rollout) pods() []corev1.Pod {
	r.t.Helper()
	l, err := r.client.CoreV1().Pods(r.ns).List(r.ctx, metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil {
		r.t.Fatal(err)
	}
	slices.SortFunc(l.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return l.Items
}

// waitAllReady waits until n pods are Ready and none terminates.
func (r *rollout) waitAllReady(n int) {
	r.t.Helper()
	err := framework.Eventually(r.ctx, rolloutTimeout, 200*time.Millisecond, func(context.Context) error {
		ready := 0
		for _, p := range r.pods() {
			if p.DeletionTimestamp == nil && framework.PodReady(&p) {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%d of %d pods ready", ready, n)
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// patch applies a strategic merge patch to the StatefulSet.
func (r *rollout) patch(patch string) {
	r.t.Helper()
	if _, err := r.client.AppsV1().StatefulSets(r.ns).Patch(r.ctx, r.sts.Name, types.StrategicMergePatchType, []byte(patch),
		metav1.PatchOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// newRevision changes the pod template and returns the update revision the
// StatefulSet controller computes for it.
func (r *rollout) newRevision(version string) string {
	r.t.Helper()
	return r.newTemplate(version, "")
}

// newTemplate sets the template's VERSION to version, and the pod spec
// members in spec (JSON, each followed by a comma: `"nodeSelector":{...},`),
// and returns the new update revision.
func (r *rollout) newTemplate(version, spec string) string {
	r.t.Helper()
	before := r.current().Status.UpdateRevision
	r.patch(fmt.Sprintf(`{"spec":{"template":{"spec":{%s"containers":[{"name":"db","env":[{"name":"VERSION","value":%q}]}]}}}}`, spec, version))
	var rev string
	err := framework.Eventually(r.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
		s := r.current()
		if s.Status.ObservedGeneration < s.Generation || s.Status.UpdateRevision == before {
			return fmt.Errorf("update revision still %s", s.Status.UpdateRevision)
		}
		rev = s.Status.UpdateRevision
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.watch.SetUpdateRevision(rev)
	return rev
}

// counts returns how many pods are at rev and how many are not.
func (r *rollout) counts(rev string) (updated, old int) {
	for _, p := range r.pods() {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] == rev {
			updated++
		} else {
			old++
		}
	}
	return updated, old
}

// waitRolledOut waits until exactly wantUpdated pods are at rev, every pod is
// Ready, and the status says Complete.
func (r *rollout) waitRolledOut(rev string, wantUpdated int) {
	r.t.Helper()
	n := int(*r.sts.Spec.Replicas)
	err := framework.Eventually(r.ctx, rolloutTimeout, 250*time.Millisecond, func(context.Context) error {
		up, old := r.counts(rev)
		if up != wantUpdated || up+old != n {
			return fmt.Errorf("%d pods updated, %d old, want %d updated of %d", up, old, wantUpdated, n)
		}
		if st := r.status(); st == nil || st.Phase != policy.PhaseComplete {
			return fmt.Errorf("status %+v, want phase Complete", st)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("rollout did not finish: %v", err)
	}
	r.waitAllReady(n)
}

// waitDeletions waits until at least n pods were deleted.
func (r *rollout) waitDeletions(n int) {
	r.t.Helper()
	err := framework.Eventually(r.ctx, rolloutTimeout, 50*time.Millisecond, func(context.Context) error {
		if got := len(r.watch.Deletions()); got < n {
			return fmt.Errorf("%d pods deleted, want %d", got, n)
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// checkEachOnceWithin checks, after a rollout, that each pod was deleted once
// and that no more than maxUnavailable pods were unavailable at once, across
// what the test did (during).
func (r *rollout) checkEachOnceWithin(maxUnavailable int, during string) {
	r.t.Helper()
	if p := r.watch.Peak(); p > maxUnavailable {
		r.t.Errorf("peak unavailable = %d %s, want at most %d", p, during, maxUnavailable)
	}
	if k := r.watch.Immediate(); k > 0 {
		r.t.Logf("%d pods went with grace period 0 (kwok's late finalization of an old incarnation), not counted as deletions", k)
	}
	n := int(*r.sts.Spec.Replicas)
	if dels := r.watch.Deletions(); len(dels) != n {
		r.t.Errorf("%d deletions, want each of the %d pods once: %v", len(dels), n, names(dels))
	}
}

func (r *rollout) status() *policy.Status {
	return policy.ParseStatus(r.current().Annotations)
}

// events returns the messages of the StatefulSet's events with a reason.
func (r *rollout) events(reason string) []corev1.Event {
	r.t.Helper()
	l, err := r.client.CoreV1().Events(r.ns).List(r.ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=StatefulSet,involvedObject.name=db,reason=" + reason})
	if err != nil {
		r.t.Fatal(err)
	}
	return l.Items
}

func (r *rollout) waitEvent(reason, typ string) corev1.Event {
	r.t.Helper()
	var ev corev1.Event
	err := framework.Eventually(r.ctx, 30*time.Second, 200*time.Millisecond, func(context.Context) error {
		for _, e := range r.events(reason) {
			if e.Type == typ {
				ev = e
				return nil
			}
		}
		return fmt.Errorf("no %s event %s", typ, reason)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return ev
}

// noneReplaced checks, for a while, that every pod keeps its UID.
func (r *rollout) noneReplaced(d time.Duration) {
	r.t.Helper()
	uids := map[types.UID]bool{}
	for _, p := range r.pods() {
		uids[p.UID] = true
	}
	err := framework.Consistently(r.ctx, d, 250*time.Millisecond, func(context.Context) error {
		for _, p := range r.pods() {
			if !uids[p.UID] || p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s was replaced or is terminating", p.Name)
			}
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rollout) pdb(spec policyv1.PodDisruptionBudgetSpec) {
	r.t.Helper()
	spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}
	if _, err := r.client.PolicyV1().PodDisruptionBudgets(r.ns).Create(r.ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: spec}, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rollout) label(pod, key, value string) {
	r.t.Helper()
	v := "null"
	if value != "" {
		v = fmt.Sprintf("%q", value)
	}
	if _, err := r.client.CoreV1().Pods(r.ns).Patch(r.ctx, pod, types.MergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)), metav1.PatchOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func names(dels []framework.Deletion) []string {
	var out []string
	for _, d := range dels {
		out = append(out, d.Pod)
	}
	return out
}

// TestUnhealthyFirstPastAnExhaustedPDB: two pods of the old revision are
// broken, and a PDB has no headroom, which would block the built-in rollout and
// any eviction. stsroller replaces the broken pods first (they cost no
// availability), after which the PDB has headroom and the rest follow.
func TestUnhealthyFirstPastAnExhaustedPDB(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 5, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2"}})
	r.pdb(policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3))})
	old := r.current().Status.UpdateRevision
	broken := map[string]bool{"db-1": true, "db-3": true}
	r.watch.SetBroken(func(p *corev1.Pod) bool {
		return broken[p.Name] && p.Labels[appsv1.ControllerRevisionHashLabelKey] == old
	})
	rev := r.newRevision("2")
	r.waitRolledOut(rev, 5)

	dels := r.watch.Deletions()
	if len(dels) != 5 {
		t.Fatalf("deletions = %v, want each of the 5 pods once", names(dels))
	}
	first := []string{dels[0].Pod, dels[1].Pod}
	slices.Sort(first)
	if !slices.Equal(first, []string{"db-1", "db-3"}) {
		t.Errorf("first deletions = %v, want the broken db-1 and db-3", names(dels))
	}
	if err := framework.CheckDeletionOrder(dels); err != nil {
		t.Error(err)
	}
	// Two pods were broken to begin with; no healthy pod may have been taken
	// while they were down (the PDB allowed none), so the peak is 2.
	if p := r.watch.Peak(); p > 2 {
		t.Errorf("peak unavailable = %d, want at most 2", p)
	}
	if len(r.events(policy.ReasonDeletedUnhealthyPod)) == 0 {
		t.Errorf("no %s event", policy.ReasonDeletedUnhealthyPod)
	}
}

// TestPeakUnavailableIsMinOfBatchAndPDB: the number of unavailable pods reaches
// min(max-unavailable, PDB headroom) and never exceeds it.
func TestPeakUnavailableIsMinOfBatchAndPDB(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		maxUnavailable string
		pdbMaxUnavail  int32
		want           int
	}{
		{"batch-smaller", "3", 5, 3},
		{"pdb-smaller", "40%", 2, 2}, // 40% of 10 = 4
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRollout(t, rolloutOptions{replicas: 10, annotations: map[string]string{policy.AnnotationMaxUnavailable: tc.maxUnavailable}})
			r.pdb(policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(tc.pdbMaxUnavail))})
			// Replacements take a while to turn healthy, so batches overlap
			// and the peak is reached.
			r.watch.SetHealthyAfter(3 * time.Second)
			r.watch.ResetPeak()
			rev := r.newRevision("2")
			r.waitRolledOut(rev, 10)
			if p := r.watch.Peak(); p != tc.want {
				t.Errorf("peak unavailable = %d, want exactly %d", p, tc.want)
			}
		})
	}
}

// TestLeaderLast: the leader goes last, also when leadership moves to another
// outdated pod mid-rollout; each pod is replaced once.
func TestLeaderLast(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 5})
	r.label("db-4", "stsroller.io/role", "leader")
	r.watch.SetHealthyAfter(time.Second)
	rev := r.newRevision("2")
	// After the first replacement, leadership moves from db-4 to db-1, still
	// outdated.
	r.waitDeletions(1)
	r.label("db-4", "stsroller.io/role", "")
	r.label("db-1", "stsroller.io/role", "leader")
	r.waitRolledOut(rev, 5)

	dels := r.watch.Deletions()
	if got := names(dels); len(got) != 5 || dels[len(dels)-1].Pod != "db-1" {
		t.Fatalf("deletions = %v, want 5 with the new leader db-1 last", got)
	}
	if dels[0].Pod == "db-4" {
		t.Errorf("the first leader db-4 went first: %v", names(dels))
	}
	if err := framework.CheckDeletionOrder(dels); err != nil {
		t.Error(err)
	}
}

// TestPausedDeletesNothing: paused, a new revision replaces nothing; resumed,
// the rollout completes.
func TestPausedDeletesNothing(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 3, annotations: map[string]string{policy.AnnotationPaused: "true"}})
	rev := r.newRevision("2")
	r.noneReplaced(5 * time.Second)
	if st := r.status(); st == nil || st.Phase != policy.PhasePaused {
		t.Fatalf("status = %+v, want Paused", st)
	}
	r.patch(`{"metadata":{"annotations":{"stsroller.io/paused":null}}}`)
	r.waitRolledOut(rev, 3)
}

// TestInvalidAnnotationDeletesNothing: a value that does not parse stops the
// rollout with an InvalidConfig warning naming the annotation.
func TestInvalidAnnotationDeletesNothing(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 3, annotations: map[string]string{policy.AnnotationMaxUnavailable: "lots"}})
	r.newRevision("2")
	r.noneReplaced(5 * time.Second)
	ev := r.waitEvent(policy.ReasonInvalidConfig, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, policy.AnnotationMaxUnavailable) {
		t.Errorf("InvalidConfig message %q does not name %s", ev.Message, policy.AnnotationMaxUnavailable)
	}
	if st := r.status(); st == nil || st.Phase != policy.PhaseInvalid || st.Reason != policy.ReasonInvalidConfig {
		t.Errorf("status = %+v, want Invalid/InvalidConfig", st)
	}
}

// TestPartitionKeepsOldPods: partition 2 of 5 leaves exactly 2 pods old.
func TestPartitionKeepsOldPods(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 5, annotations: map[string]string{
		policy.AnnotationPartition: "2", policy.AnnotationMaxUnavailable: "2"}})
	rev := r.newRevision("2")
	r.waitRolledOut(rev, 3)
	// And it stays so.
	err := framework.Consistently(r.ctx, 3*time.Second, 250*time.Millisecond, func(context.Context) error {
		if up, old := r.counts(rev); up != 3 || old != 2 {
			return fmt.Errorf("%d updated, %d old", up, old)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRollingUpdateGetsNotOnDelete: an opted-in StatefulSet that is not
// OnDelete is left to the built-in controller, with a warning.
func TestRollingUpdateGetsNotOnDelete(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 2, strategy: appsv1.RollingUpdateStatefulSetStrategyType})
	ev := r.waitEvent(policy.ReasonNotOnDelete, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, "OnDelete") {
		t.Errorf("NotOnDelete message %q does not say what to set", ev.Message)
	}
	if st := r.status(); st == nil || st.Phase != policy.PhaseInvalid {
		t.Errorf("status = %+v, want Invalid", st)
	}
}

// TestControllerRestartMidRollout: killing stsroller mid-rollout and starting
// it again completes the rollout without exceeding max-unavailable: it plans
// from what the cluster shows, not from memory.
func TestControllerRestartMidRollout(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 8, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2"}})
	r.watch.SetHealthyAfter(2 * time.Second)
	r.watch.ResetPeak()
	rev := r.newRevision("2")
	r.waitDeletions(3)
	r.controller.Kill()
	time.Sleep(2 * time.Second)
	if err := r.controller.Start(); err != nil {
		t.Fatal(err)
	}
	r.waitRolledOut(rev, 8)
	r.checkEachOnceWithin(2, "across the restart")
}

// TestBrokenRevisionStallsAndRollbackRepairs: a new revision whose pods never
// turn healthy stops itself (no more than max-unavailable pods are replaced),
// the status turns Stalled with a ProgressDeadlineExceeded warning, and
// reverting the template repairs the broken pods first with no manual deletes
// (kubernetes#67250).
func TestBrokenRevisionStallsAndRollbackRepairs(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 6, annotations: map[string]string{
		policy.AnnotationMaxUnavailable: "2", policy.AnnotationProgressDeadlineSeconds: "5"}})
	good := r.current().Status.UpdateRevision
	// Pods of any other revision never turn healthy.
	r.watch.SetBroken(func(p *corev1.Pod) bool { return p.Labels[appsv1.ControllerRevisionHashLabelKey] != good })
	bad := r.newRevision("broken")

	ev := r.waitEvent(policy.ReasonProgressDeadlineExceeded, corev1.EventTypeWarning)
	if st := r.status(); st == nil || st.Phase != policy.PhaseStalled {
		t.Fatalf("status = %+v, want Stalled (event: %s)", st, ev.Message)
	}
	if n := len(r.watch.Deletions()); n != 2 {
		t.Fatalf("%d pods replaced by a revision whose pods never turn healthy, want exactly max-unavailable (2): %v",
			n, names(r.watch.Deletions()))
	}

	// Roll back: the template as it was. The two broken pods are now the
	// outdated ones, and unhealthy: they go, and nothing else.
	rev := r.newRevision("1")
	if rev != good {
		t.Fatalf("reverting the template gave revision %s, want the old %s", rev, good)
	}
	r.waitRolledOut(rev, 6)
	dels := r.watch.Deletions()
	if len(dels) != 4 {
		t.Fatalf("deletions = %v, want the 2 of the rollout and the 2 broken pods of the rollback", names(dels))
	}
	for _, d := range dels[2:] {
		if d.Revision != bad || d.Ready {
			t.Errorf("the rollback deleted %s (revision %s, ready %v), want only broken pods of %s", d.Pod, d.Revision, d.Ready, bad)
		}
	}
}

// TestTwoPDBsOverAPodBlock: with two PodDisruptionBudgets selecting the same
// pods, the Eviction API refuses them and stsroller will not guess which
// budget wins: nothing is deleted, a MultiplePDBs warning says why.
func TestTwoPDBsOverAPodBlock(t *testing.T) {
	t.Parallel()
	r := newRollout(t, rolloutOptions{replicas: 3, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2"}})
	for _, name := range []string{"db-a", "db-b"} {
		if _, err := r.client.PolicyV1().PodDisruptionBudgets(r.ns).Create(r.ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(3)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r.newRevision("2")
	ev := r.waitEvent(policy.ReasonMultiplePDBs, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, "db-a") || !strings.Contains(ev.Message, "db-b") {
		t.Errorf("MultiplePDBs message %q does not name both budgets", ev.Message)
	}
	r.noneReplaced(3 * time.Second)
	if st := r.status(); st == nil || st.Phase != policy.PhaseBlocked || st.Reason != policy.ReasonMultiplePDBs {
		t.Errorf("status = %+v, want Blocked/MultiplePDBs", st)
	}
}
