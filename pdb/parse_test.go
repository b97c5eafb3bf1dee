package pdb

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// countParses counts the selector parses while the test runs.
func countParses(t *testing.T) *int {
	t.Helper()
	n := 0
	orig := parseSelector
	parseSelector = func(s *metav1.LabelSelector) (labels.Selector, error) {
		n++
		return orig(s)
	}
	t.Cleanup(func() { parseSelector = orig })
	return &n
}

func manyPods(n int, app string) []*corev1.Pod {
	pods := make([]*corev1.Pod, n)
	for i := range pods {
		pods[i] = pod("ns", fmt.Sprintf("%s-%d", app, i), map[string]string{"app": app, "controller-revision-hash": "r1"})
	}
	return pods
}

// TestForPodsParsesEachSelectorOnce: the selector of a budget is parsed once,
// not once per pod (issue 8: 23% of the controller's CPU).
func TestForPodsParsesEachSelectorOnce(t *testing.T) {
	n := countParses(t)
	budgets := []*policyv1.PodDisruptionBudget{budget("web", 1, 1, 1, matchApp("web")), budget("api", 1, 1, 1, matchApp("api"))}
	got, err := ForPods(budgets, manyPods(100, "web"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 {
		t.Fatalf("%d pods selected, want 100", len(got))
	}
	if *n != len(budgets) {
		t.Errorf("%d selector parses for %d budgets and 100 pods, want %d", *n, len(budgets), len(budgets))
	}
}

// TestSelectorsParseOncePerVersion: the cache parses a budget's selector once
// per object, again when the budget changes, and forgets deleted budgets.
func TestSelectorsParseOncePerVersion(t *testing.T) {
	n := countParses(t)
	var s Selectors
	b := budget("web", 1, 1, 1, matchApp("web"))
	b.UID = types.UID("web-uid")
	pods := manyPods(10, "web")
	for range 5 {
		got, err := s.ForPodsOf([]*policyv1.PodDisruptionBudget{b}, pods, nil)
		if err != nil || len(got) != 10 {
			t.Fatalf("ForPods = %d pods, %v; want 10, nil", len(got), err)
		}
	}
	if *n != 1 {
		t.Errorf("%d parses over five syncs of one budget, want 1", *n)
	}
	// A new version (as an informer delivers it): parsed anew, and it counts.
	b2 := b.DeepCopy()
	b2.Spec.Selector = matchApp("api")
	if got, _ := s.ForPodsOf([]*policyv1.PodDisruptionBudget{b2}, pods, nil); len(got) != 0 {
		t.Errorf("the changed selector still selects %d pods", len(got))
	}
	if *n != 2 {
		t.Errorf("%d parses after a change, want 2", *n)
	}
	s.Forget(b.UID)
	if s.Len() != 0 {
		t.Errorf("Forget left %d selectors", s.Len())
	}
}
