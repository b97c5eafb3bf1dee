package rollout

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/stsroller/stsroller/policy"
)

// TestExpectationsLapse: outstanding says when the first expectation lapses
// unmet (a hold's end, else expectationsTimeout after the removal), and drops
// each at that moment, not later.
func TestExpectationsLapse(t *testing.T) {
	clk := clocktesting.NewFakeClock(now)
	e := newExpectations(clk)
	k := cache.ObjectName{Namespace: "ns", Name: "web"}
	pods := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Name: "web-0", UID: "a"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-1", UID: "b"}},
	}
	if out, next := e.outstanding(k, pods); out != nil || !next.IsZero() {
		t.Fatalf("nothing expected: got %v, %v", out, next)
	}
	e.expect(k, "a", policy.MethodEvict)
	clk.Step(time.Second)
	e.hold(k, "b", policy.MethodEvict, lostResponseHold)
	for _, step := range []struct {
		after time.Duration
		want  int
		next  time.Time
	}{
		{0, 2, now.Add(time.Second + lostResponseHold)},
		{lostResponseHold - time.Nanosecond, 2, now.Add(time.Second + lostResponseHold)},
		{time.Nanosecond, 1, now.Add(expectationsTimeout)},
		{expectationsTimeout - lostResponseHold - time.Second, 0, time.Time{}},
	} {
		clk.Step(step.after)
		out, next := e.outstanding(k, pods)
		if len(out) != step.want || !next.Equal(step.next) {
			t.Errorf("at %s: %d outstanding, next lapse %v; want %d, %v",
				clk.Now().Sub(now), len(out), next, step.want, step.next)
		}
	}
}
