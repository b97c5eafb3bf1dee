package pdb

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

func mustParse(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func TestWithin(t *testing.T) {
	tests := []struct {
		budget, of string
		want       scope
	}{
		{"app=db", "app=db", selectsAll},
		{"app=db", "app=db,tier=data", selectsAll},
		{"", "app=db", selectsAll}, // an empty selector: every pod of the namespace
		{"app=web", "app=db", selectsNone},
		{"app in (db,web)", "app=db", selectsAll},
		{"app in (web,cache)", "app=db", selectsNone},
		{"app notin (web)", "app=db", selectsAll},
		{"app notin (db,web)", "app=db", selectsNone},
		{"app", "app=db", selectsAll},
		{"!app", "app=db", selectsNone},
		{"app=db", "app", selectsSome},
		{"app=db,tier=data", "app=db", selectsSome},     // tier: each pod decides
		{"app=web,tier=data", "app=db", selectsNone},    // one contradiction is enough
		{"tier=data", "app=db", selectsSome},            // a key the StatefulSet does not fix
		{"app!=web", "app!=web,app!=cache", selectsAll}, // absent or not web
		{"app notin (web)", "app notin (web,cache)", selectsAll},
		{"app notin (web,cache)", "app notin (web)", selectsSome},
		{"!app", "!app", selectsAll},
		{"app!=db", "!app", selectsAll},
		{"app=db", "!app", selectsNone},
		{"app", "!app", selectsNone},
		{"n>1", "n=2", selectsSome}, // numbers are not compared
		{"n>1", "n>1", selectsAll},
		{"!n", "n>1", selectsNone},
		{"n", "n<5", selectsAll},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s within %s", tc.budget, tc.of), func(t *testing.T) {
			if got := within(mustParse(t, tc.budget), mustParse(t, tc.of)); got != tc.want {
				t.Errorf("within = %v, want %v", got, tc.want)
			}
		})
	}
	if got := within(labels.Nothing(), mustParse(t, "app=db")); got != selectsNone {
		t.Errorf("labels.Nothing within app=db = %v, want selectsNone", got)
	}
	if got := within(mustParse(t, "app=db"), labels.Nothing()); got != selectsSome {
		t.Errorf("app=db within labels.Nothing = %v, want selectsSome", got)
	}
}

// Every label set over keys a, b, c, each absent or one of 1, 2, 3.
func everyLabelSet() []labels.Set {
	sets := []labels.Set{{}}
	for _, k := range []string{"a", "b", "c"} {
		var next []labels.Set
		for _, s := range sets {
			next = append(next, s)
			for _, v := range []string{"1", "2", "3"} {
				n := labels.Set{k: v}
				for kk, vv := range s {
					n[kk] = vv
				}
				next = append(next, n)
			}
		}
		sets = next
	}
	return sets
}

var operators = []selection.Operator{selection.In, selection.Equals, selection.DoubleEquals, selection.NotIn,
	selection.NotEquals, selection.Exists, selection.DoesNotExist, selection.GreaterThan, selection.LessThan}

// What a metav1.LabelSelector can say (the selectors of StatefulSets and
// budgets).
var labelSelectorOperators = []selection.Operator{selection.In, selection.Equals, selection.NotIn,
	selection.Exists, selection.DoesNotExist}

func randomSelector(t *testing.T, r *rand.Rand, ops []selection.Operator) labels.Selector {
	sel := labels.NewSelector()
	for range r.IntN(3) {
		key := string(rune('a' + r.IntN(3)))
		op := ops[r.IntN(len(ops))]
		var values []string
		switch op {
		case selection.In, selection.NotIn:
			for v := 1; v <= 3; v++ {
				if r.IntN(2) == 0 {
					values = append(values, strconv.Itoa(v))
				}
			}
			if len(values) == 0 {
				values = []string{"2"}
			}
		case selection.Equals, selection.DoubleEquals, selection.NotEquals, selection.GreaterThan, selection.LessThan:
			values = []string{strconv.Itoa(1 + r.IntN(3))}
		}
		req, err := labels.NewRequirement(key, op, values)
		if err != nil {
			t.Fatal(err)
		}
		sel = sel.Add(*req)
	}
	return sel
}

// TestWithinAgreesWithMatches: for random pairs of selectors, what within
// decides holds for every label set the second matches; and it decides often
// enough to be worth having.
func TestWithinAgreesWithMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all := everyLabelSet()
	var decided [3]int
	for range 20000 {
		budget, of := randomSelector(t, r, operators), randomSelector(t, r, operators)
		got := within(budget, of)
		decided[got]++
		for _, ls := range all {
			if !of.Matches(ls) {
				continue
			}
			m := budget.Matches(ls)
			if got == selectsAll && !m || got == selectsNone && m {
				t.Fatalf("within(%q, %q) = %v, but labels %v: budget matches %v", budget, of, got, ls, m)
			}
		}
	}
	if decided[selectsAll] < 1000 || decided[selectsNone] < 1000 {
		t.Errorf("decided all %d, none %d times of 20000: the test no longer exercises within", decided[selectsAll], decided[selectsNone])
	}
}

// TestForPodsOfAgreesWithForPods: the shortcut gives the same mapping as
// matching each pod.
func TestForPodsOfAgreesWithForPods(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	all := everyLabelSet()
	for i := range 2000 {
		of := randomSelector(t, r, labelSelectorOperators)
		var pods []*corev1.Pod
		for j, ls := range all {
			if of.Matches(ls) {
				pods = append(pods, pod("ns", fmt.Sprintf("p%d", j), ls))
			}
		}
		var budgets []*policyv1.PodDisruptionBudget
		for k := range 3 {
			ls, err := metav1.ParseToLabelSelector(randomSelector(t, r, labelSelectorOperators).String())
			if err != nil {
				t.Fatal(err)
			}
			b := budget(fmt.Sprintf("b%d", k), 1, 1, int32(k), ls)
			if k == 2 && i%2 == 0 {
				b.Namespace = "other"
			}
			budgets = append(budgets, b)
		}
		want, wantErr := ForPods(budgets, pods)
		got, gotErr := ForPodsOf(budgets, pods, of)
		if diff := cmp.Diff(want, got); diff != "" || (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("pods of %q: ForPodsOf differs from ForPods (-want +got):\n%s\nerrors %v, %v", of, diff, wantErr, gotErr)
		}
	}
}
