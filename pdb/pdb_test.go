package pdb

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func budget(name string, generation, observed int64, allowed int32, sel *metav1.LabelSelector) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: generation},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: sel},
		Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: observed, DisruptionsAllowed: allowed},
	}
}

func pod(namespace, name string, lbls map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: lbls}}
}

func matchApp(app string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
}

func TestHeadroom(t *testing.T) {
	tests := []struct {
		name   string
		budget *policyv1.PodDisruptionBudget
		want   Budget
	}{
		{"current", budget("b", 2, 2, 3, nil), Budget{Name: "b", Allowed: 3}},
		{"observed ahead", budget("b", 2, 3, 1, nil), Budget{Name: "b", Allowed: 1}},
		{"none allowed", budget("b", 1, 1, 0, nil), Budget{Name: "b", Allowed: 0}},
		{"stale", budget("b", 3, 2, 5, nil), Budget{Name: "b", Allowed: 0, Stale: true}},
		{"never observed", budget("b", 1, 0, 0, nil), Budget{Name: "b", Allowed: 0, Stale: true}},
		{"negative", budget("b", 1, 1, -2, nil), Budget{Name: "b", Allowed: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Headroom(tc.budget)); diff != "" {
				t.Errorf("Headroom (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSelects(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "db"}
	tests := []struct {
		name string
		sel  *metav1.LabelSelector
		pod  *corev1.Pod
		want bool
	}{
		{"nil selector selects nothing", nil, pod("ns", "web-0", web), false},
		{"empty selector selects every pod of the namespace", &metav1.LabelSelector{}, pod("ns", "web-0", web), true},
		{"empty selector, pod without labels", &metav1.LabelSelector{}, pod("ns", "web-0", nil), true},
		{"empty selector, other namespace", &metav1.LabelSelector{}, pod("other", "web-0", web), false},
		{"matching labels, other namespace", matchApp("web"), pod("other", "web-0", web), false},
		{"matching labels", matchApp("web"), pod("ns", "web-0", web), true},
		{"other labels", matchApp("api"), pod("ns", "web-0", web), false},
		{"matchExpressions In", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"db", "cache"}},
		}}, pod("ns", "web-0", web), true},
		{"matchExpressions NotIn", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"db"}},
		}}, pod("ns", "web-0", web), false},
		{"matchExpressions DoesNotExist", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "canary", Operator: metav1.LabelSelectorOpDoesNotExist},
		}}, pod("ns", "web-0", web), true},
		{"matchLabels and matchExpressions both needed", &metav1.LabelSelector{
			MatchLabels: map[string]string{"app": "web"},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "canary", Operator: metav1.LabelSelectorOpExists},
			}}, pod("ns", "web-0", web), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Selects(budget("b", 1, 1, 1, tc.sel), tc.pod)
			if err != nil {
				t.Fatalf("Selects: %v", err)
			}
			if got != tc.want {
				t.Errorf("Selects = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSelectsInvalidSelector(t *testing.T) {
	bad := budget("bad", 1, 1, 1, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "tier", Operator: "Near", Values: []string{"db"}},
	}})
	got, err := Selects(bad, pod("ns", "web-0", map[string]string{"tier": "db"}))
	if err == nil || got {
		t.Fatalf("Selects = %v, %v; want false and an error", got, err)
	}
	if !strings.Contains(err.Error(), "ns/bad") {
		t.Errorf("error %q does not name the budget ns/bad", err)
	}
}

func TestForPods(t *testing.T) {
	pods := []*corev1.Pod{
		pod("ns", "web-0", map[string]string{"app": "web", "role": "leader"}),
		pod("ns", "web-1", map[string]string{"app": "web"}),
		pod("ns", "api-0", map[string]string{"app": "api"}),
	}
	invalid := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		{Key: "app", Operator: metav1.LabelSelectorOpIn}, // In needs values
	}}
	tests := []struct {
		name    string
		budgets []*policyv1.PodDisruptionBudget
		want    map[string][]Budget
		wantErr string
	}{
		{
			name:    "no budgets",
			budgets: nil,
			want:    map[string][]Budget{},
		},
		{
			name:    "one budget per app",
			budgets: []*policyv1.PodDisruptionBudget{budget("web", 1, 1, 1, matchApp("web")), budget("api", 1, 1, 0, matchApp("api"))},
			want: map[string][]Budget{
				"web-0": {{Name: "web", Allowed: 1}},
				"web-1": {{Name: "web", Allowed: 1}},
				"api-0": {{Name: "api", Allowed: 0}},
			},
		},
		{
			name: "two budgets over one pod",
			budgets: []*policyv1.PodDisruptionBudget{
				budget("web", 1, 1, 2, matchApp("web")),
				budget("leader", 2, 1, 1, &metav1.LabelSelector{MatchLabels: map[string]string{"role": "leader"}}),
			},
			want: map[string][]Budget{
				"web-0": {{Name: "web", Allowed: 2}, {Name: "leader", Allowed: 0, Stale: true}},
				"web-1": {{Name: "web", Allowed: 2}},
			},
		},
		{
			name: "invalid selector selects nothing, the rest is complete",
			budgets: []*policyv1.PodDisruptionBudget{
				budget("broken", 1, 1, 5, invalid),
				budget("web", 1, 1, 1, matchApp("web")),
			},
			want: map[string][]Budget{
				"web-0": {{Name: "web", Allowed: 1}},
				"web-1": {{Name: "web", Allowed: 1}},
			},
			wantErr: "ns/broken",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ForPods(tc.budgets, pods)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("ForPods error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("ForPods error = %v, want one naming %s", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("ForPods (-want +got):\n%s", diff)
			}
		})
	}
}
