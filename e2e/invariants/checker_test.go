package invariants

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

// stream is a synthetic watch: a StatefulSet "db" of n pods at revision
// "old", Ready, with max-unavailable maxU, whose update revision is "new".
type stream struct {
	t   *testing.T
	clk *clocktesting.FakeClock
	c   *Checker
	sts *appsv1.StatefulSet
	uid int
}

func newStream(t *testing.T, n int32, maxU string) *stream {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := &stream{t: t, clk: clk, c: New(clk)}
	s.sts = &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", UID: "sts-uid", Generation: 2, Annotations: map[string]string{
			policy.AnnotationEnabled: "true", policy.AnnotationMaxUnavailable: maxU}},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(n),
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdateRevision: "new"},
	}
	s.c.OnStatefulSet(s.sts)
	for i := range n {
		s.c.OnPod(s.pod(fmt.Sprintf("db-%d", i), "old", true))
	}
	return s
}

func (s *stream) pod(name, rev string, isReady bool) *corev1.Pod {
	s.uid++
	st := corev1.ConditionFalse
	if isReady {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(fmt.Sprintf("%s-%d", name, s.uid)),
			Labels: map[string]string{"app": "db", appsv1.ControllerRevisionHashLabelKey: rev},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db",
				UID: "sts-uid", Controller: ptr.To(true)}}},
		Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// terminate sets the deletion timestamp of the current pod of that name.
func (s *stream) terminate(name string) {
	p := s.c.pods[name].DeepCopy()
	p.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now()))
	s.c.OnPod(p)
	s.c.OnPodDeleted(p)
	s.clk.Step(100 * time.Millisecond)
}

// replace terminates the pod and adds its replacement at rev.
func (s *stream) replace(name, rev string, isReady bool) {
	s.terminate(name)
	s.c.OnPod(s.pod(name, rev, isReady))
	s.clk.Step(100 * time.Millisecond)
}

func (s *stream) violations() []string {
	s.clk.Step(Grace)
	s.c.Resolve(true)
	return s.c.Violations()
}

func (s *stream) want(substr string) {
	s.t.Helper()
	v := s.violations()
	if len(v) != 1 || !strings.Contains(v[0], substr) {
		s.t.Fatalf("violations %q, want one saying %q", v, substr)
	}
	if st := s.c.Stats(); st.Checks == 0 || st.Violations != 1 {
		s.t.Errorf("stats %+v", st)
	}
}

func TestCleanRolloutHasNoViolation(t *testing.T) {
	s := newStream(t, 5, "2")
	// Two at a time, each batch Ready before the next.
	for _, batch := range [][]string{{"db-4", "db-3"}, {"db-2", "db-1"}, {"db-0"}} {
		for _, n := range batch {
			s.replace(n, "new", false)
		}
		for _, n := range batch {
			p := s.c.pods[n].DeepCopy()
			p.Status.Conditions[0].Status = corev1.ConditionTrue
			s.c.OnPod(p)
		}
	}
	if v := s.violations(); len(v) != 0 {
		t.Fatalf("violations %q in a clean rollout", v)
	}
	if err := s.c.Complete("db"); err == nil || !strings.Contains(err.Error(), "status") {
		t.Errorf("Complete = %v, want it to wait for the status", err)
	}
	sts := s.sts.DeepCopy()
	sts.Annotations[policy.AnnotationStatus] = `{"phase":"Complete","updateRevision":"new"}`
	s.c.OnStatefulSet(sts)
	if err := s.c.Complete("db"); err != nil {
		t.Errorf("Complete = %v", err)
	}
	if st := s.c.Stats(); st.Deletions != 5 || st.Checks < 5*4 {
		t.Errorf("stats %+v, want 5 deletions and at least 4 checks each", st)
	}
}

func TestTooManyUnavailable(t *testing.T) {
	s := newStream(t, 5, "2")
	s.replace("db-4", "new", false)
	s.replace("db-3", "new", false)
	s.replace("db-2", "new", false) // a third while two are in flight
	v := s.violations()
	if len(v) != 2 || !strings.Contains(v[0], "with 2 other replacements in flight (db-3,db-4), max-unavailable is 2") ||
		!strings.Contains(v[1], "leaving 3 of 5 unavailable") {
		t.Fatalf("violations %q, want db-2's deletion flagged twice", v)
	}
}

// TestMissingOrdinalCounts: a pod that is not there is unavailable.
func TestMissingOrdinalCounts(t *testing.T) {
	s := newStream(t, 4, "1")
	sts := s.sts.DeepCopy()
	sts.Spec.Replicas = ptr.To[int32](5) // db-4 does not exist yet
	s.c.OnStatefulSet(sts)
	s.clk.Step(2 * Grace)
	s.replace("db-0", "new", false)
	s.want("leaving 2 of 5 unavailable")
}

// TestUnreadyPodsCount: a pod that is already not Ready counts, so deleting
// a Ready one exceeds max-unavailable.
func TestUnreadyPodsCount(t *testing.T) {
	s := newStream(t, 4, "1")
	s.c.OnPod(func() *corev1.Pod {
		p := s.c.pods["db-1"].DeepCopy()
		p.Status.Conditions[0].Status = corev1.ConditionFalse
		return p
	}())
	s.replace("db-3", "new", true)
	s.want("leaving 2 of 4 unavailable")
}

func TestUpdatedPodDeleted(t *testing.T) {
	s := newStream(t, 3, "1")
	s.replace("db-2", "new", true)
	s.replace("db-2", "new", true)
	v := s.violations()
	if len(v) != 2 || !strings.Contains(v[0], "which is the update revision") || !strings.Contains(v[1], "2 times") {
		t.Fatalf("violations %q, want the update revision deleted and twice", v)
	}
}

func TestOtherOwnerDeleted(t *testing.T) {
	s := newStream(t, 3, "1")
	other := s.pod("db-9", "old", true)
	other.OwnerReferences = nil
	s.c.OnPod(other)
	s.terminate("db-9")
	s.want("of another owner (no controller) was deleted")
}

func TestOtherOwnerGetsCondition(t *testing.T) {
	s := newStream(t, 3, "1")
	other := s.pod("web-0", "old", true)
	other.OwnerReferences[0].Name, other.OwnerReferences[0].UID = "web", "web-uid"
	s.c.OnPod(other)
	other = other.DeepCopy()
	other.Status.Conditions = append(other.Status.Conditions, corev1.PodCondition{Type: policy.ConditionDNSPropagated, Status: corev1.ConditionTrue})
	s.c.OnPod(other)
	s.want("another owner got condition")
}

func TestPDBExceeded(t *testing.T) {
	s := newStream(t, 4, "2")
	s.c.OnPDB(&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromString("75%")),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}})
	// A drain takes one (allowed: 3 of 4 stay), then stsroller another.
	s.c.External(s.c.pods["db-0"].UID)
	s.terminate("db-0")
	s.replace("db-3", "new", false)
	v := s.violations()
	if len(v) != 1 || !strings.Contains(v[0], "PDB db: deleting Ready pod db-3 left 2 healthy, the budget wants 3") {
		t.Fatalf("violations %q, want the budget exceeded by db-3 only", v)
	}
}

func TestDeletingStatefulSetIsLeftAlone(t *testing.T) {
	s := newStream(t, 3, "1")
	sts := s.sts.DeepCopy()
	sts.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now()))
	s.c.OnStatefulSet(sts)
	s.clk.Step(time.Second)
	s.replace("db-2", "new", true)
	s.want("while the StatefulSet was being deleted")
}

// TestScaleDownIsNotOurs: the StatefulSet controller removes ordinals at or
// above the new replicas; that is no violation.
func TestScaleDownIsNotOurs(t *testing.T) {
	s := newStream(t, 5, "1")
	sts := s.sts.DeepCopy()
	sts.Spec.Replicas = ptr.To[int32](2)
	s.c.OnStatefulSet(sts)
	for _, n := range []string{"db-4", "db-3", "db-2"} {
		s.terminate(n)
	}
	if v := s.violations(); len(v) != 0 {
		t.Fatalf("violations %q for a scale-down", v)
	}
}

// TestLateRevision: the pod's deletion arrives before the StatefulSet's new
// update revision (another watch); within the grace that is no violation.
func TestLateRevision(t *testing.T) {
	s := newStream(t, 3, "1")
	s.replace("db-2", "new", true) // outdated against "newer"
	sts := s.sts.DeepCopy()
	sts.Status.UpdateRevision = "newer"
	s.c.OnStatefulSet(sts)
	if v := s.violations(); len(v) != 0 {
		t.Fatalf("violations %q", v)
	}
}

// TestImmediateDeleteIsNotOurs: a current pod that a watch reports DELETED
// without ever showing a deletion timestamp went with grace period 0 (kwok's
// finalizing delete by name hitting the replacement), which stsroller never
// does: it is not counted as stsroller's. A pod whose own grace period is 0
// could have gone that way by anyone's hand, and is.
func TestImmediateDeleteIsNotOurs(t *testing.T) {
	s := newStream(t, 3, "1")
	s.replace("db-2", "new", true)
	s.c.OnPodDeletedAtOnce(s.c.pods["db-2"].DeepCopy())
	if v := s.violations(); len(v) != 0 {
		t.Fatalf("violations %q for a grace-0 delete of a pod with a grace period", v)
	}

	s = newStream(t, 3, "1")
	s.replace("db-2", "new", true)
	p := s.c.pods["db-2"].DeepCopy()
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
	s.c.OnPod(p)
	s.c.OnPodDeletedAtOnce(p)
	if v := s.violations(); len(v) != 2 || !strings.Contains(v[0], "which is the update revision") {
		t.Fatalf("violations %q, want the current pod's deletion counted", v)
	}

	// Seen terminating with a deletion grace period of 0, on a node: forced.
	for _, grace := range []int64{0, 1} {
		s = newStream(t, 3, "1")
		s.replace("db-2", "new", true)
		p = s.c.pods["db-2"].DeepCopy()
		p.Spec.NodeName = "node-0"
		s.c.OnPod(p.DeepCopy())
		p.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now()))
		p.DeletionGracePeriodSeconds = ptr.To(grace)
		s.c.OnPod(p)
		v := s.violations()
		if grace == 0 && len(v) != 0 {
			t.Errorf("violations %q for a forced delete seen terminating", v)
		}
		if grace == 1 && (len(v) != 2 || !strings.Contains(v[0], "which is the update revision")) {
			t.Errorf("violations %q for a graceful delete of an updated pod, want it counted", v)
		}
	}
}
