// Package pdb answers two questions about PodDisruptionBudgets: which budgets
// select a pod, and how many more disruptions each one allows. It fails closed:
// a budget whose status the disruption controller has not caught up with allows
// none.
package pdb

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Budget is one PodDisruptionBudget as the planner sees it.
type Budget struct {
	// Name is the budget's name; budgets live in their pods' namespace.
	Name string
	// Allowed is how many more pods it lets go now: status.disruptionsAllowed,
	// or 0 when the status is stale.
	Allowed int32
	// Stale is true when status.observedGeneration < metadata.generation: the
	// disruption controller has not yet computed the budget's current spec.
	Stale bool
}

// Headroom returns the budget's view: its disruptionsAllowed, or nothing when
// its status is stale.
func Headroom(b *policyv1.PodDisruptionBudget) Budget {
	stale := b.Status.ObservedGeneration < b.Generation
	allowed := b.Status.DisruptionsAllowed
	if stale || allowed < 0 {
		allowed = 0
	}
	return Budget{Name: b.Name, Allowed: allowed, Stale: stale}
}

// Selects reports whether the budget selects the pod, as the eviction API
// decides it: same namespace, and a selector that matches the pod's labels. A
// nil selector selects nothing; an empty one selects every pod of the namespace.
func Selects(b *policyv1.PodDisruptionBudget, pod *corev1.Pod) (bool, error) {
	if b.Namespace != pod.Namespace || b.Spec.Selector == nil {
		return false, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
	if err != nil {
		return false, fmt.Errorf("PodDisruptionBudget %s/%s: invalid selector: %w", b.Namespace, b.Name, err)
	}
	return sel.Matches(labels.Set(pod.Labels)), nil
}

// ForPods maps each pod's name to the budgets that select it. A budget whose
// selector does not parse selects nothing and is returned in the error, so the
// caller can say so; the rest of the mapping is still complete.
func ForPods(budgets []*policyv1.PodDisruptionBudget, pods []*corev1.Pod) (map[string][]Budget, error) {
	out := make(map[string][]Budget, len(pods))
	var firstErr error
	for _, b := range budgets {
		h := Headroom(b)
		for _, p := range pods {
			ok, err := Selects(b, p)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				break
			}
			if ok {
				out[p.Name] = append(out[p.Name], h)
			}
		}
	}
	return out, firstErr
}
