// Package pdb answers two questions about PodDisruptionBudgets: which budgets
// select a pod, and how many more disruptions each one allows. It fails closed:
// a budget whose status the disruption controller has not caught up with allows
// none.
package pdb

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
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
	// Disrupted names the pods the status counts as disrupted
	// (status.disruptedPods): evicted, their deletion not yet seen by the
	// disruption controller. Allowed already counts them.
	Disrupted map[string]bool
}

// Headroom returns the budget's view: its disruptionsAllowed, or nothing when
// its status is stale.
func Headroom(b *policyv1.PodDisruptionBudget) Budget {
	stale := b.Status.ObservedGeneration < b.Generation
	allowed := b.Status.DisruptionsAllowed
	if stale || allowed < 0 {
		allowed = 0
	}
	var disrupted map[string]bool
	if len(b.Status.DisruptedPods) > 0 {
		disrupted = make(map[string]bool, len(b.Status.DisruptedPods))
		for name := range b.Status.DisruptedPods {
			disrupted[name] = true
		}
	}
	return Budget{Name: b.Name, Allowed: allowed, Stale: stale, Disrupted: disrupted}
}

// parseSelector is metav1.LabelSelectorAsSelector; a variable so a test can
// count the parses.
var parseSelector = metav1.LabelSelectorAsSelector

// Selector is the budget's selector, parsed. A nil selector selects nothing
// (labels.Nothing); an empty one selects every pod of the namespace.
func Selector(b *policyv1.PodDisruptionBudget) (labels.Selector, error) {
	if b.Spec.Selector == nil {
		return labels.Nothing(), nil
	}
	sel, err := parseSelector(b.Spec.Selector)
	if err != nil {
		return labels.Nothing(), fmt.Errorf("PodDisruptionBudget %s/%s: invalid selector: %w", b.Namespace, b.Name, err)
	}
	return sel, nil
}

// Selects reports whether the budget selects the pod, as the eviction API
// decides it: same namespace, and a selector that matches the pod's labels. A
// nil selector selects nothing; an empty one selects every pod of the namespace.
func Selects(b *policyv1.PodDisruptionBudget, pod *corev1.Pod) (bool, error) {
	if b.Namespace != pod.Namespace || b.Spec.Selector == nil {
		return false, nil
	}
	sel, err := Selector(b)
	if err != nil {
		return false, err
	}
	return sel.Matches(labels.Set(pod.Labels)), nil
}

// ForPods maps each pod's name to the budgets that select it. A budget whose
// selector does not parse selects nothing and is returned in the error, so the
// caller can say so; the rest of the mapping is still complete. Each budget's
// selector is parsed once.
func ForPods(budgets []*policyv1.PodDisruptionBudget, pods []*corev1.Pod) (map[string][]Budget, error) {
	return forPods(budgets, pods, nil, Selector)
}

// ForPodsOf is ForPods for pods of one namespace that all match the selector
// of: one StatefulSet's pods, kept by its selector. A budget whose selector
// plainly selects all of them, or none, by the two selectors' requirements
// (app=db within app=db, app=web against app=db), is not matched pod by pod:
// a namespace of many StatefulSets, each with its budget, costs each sync
// the budgets, not the budgets times the pods.
func ForPodsOf(budgets []*policyv1.PodDisruptionBudget, pods []*corev1.Pod, of labels.Selector) (map[string][]Budget, error) {
	return forPods(budgets, pods, of, Selector)
}

// ForPodsOf is the package's ForPodsOf with the selectors taken from the
// cache; with of nil, the package's ForPods.
func (s *Selectors) ForPodsOf(budgets []*policyv1.PodDisruptionBudget, pods []*corev1.Pod, of labels.Selector) (map[string][]Budget, error) {
	return forPods(budgets, pods, of, s.Get)
}

// forPods matches budgets to pods; of, when not nil, is a selector every pod
// matches, and the pods share one namespace.
func forPods(budgets []*policyv1.PodDisruptionBudget, pods []*corev1.Pod, of labels.Selector, selector func(*policyv1.PodDisruptionBudget) (labels.Selector, error)) (map[string][]Budget, error) {
	var out map[string][]Budget
	if len(budgets) > 0 {
		out = make(map[string][]Budget, len(pods))
	} else {
		out = map[string][]Budget{}
	}
	var firstErr error
	for _, b := range budgets {
		if b.Spec.Selector == nil {
			continue
		}
		sel, err := selector(b)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sc := selectsSome
		if of != nil && len(pods) > 0 {
			sc = within(sel, of)
			if pods[0].Namespace != b.Namespace {
				sc = selectsNone
			}
		}
		if sc == selectsNone {
			continue
		}
		// One element with no spare capacity, shared by every pod it
		// selects: a pod that a second budget selects gets a copy on append.
		var h []Budget
		for _, p := range pods {
			if sc == selectsAll || p.Namespace == b.Namespace && sel.Matches(labels.Set(p.Labels)) {
				if h == nil {
					h = []Budget{Headroom(b)}
				}
				if cur := out[p.Name]; cur == nil {
					out[p.Name] = h
				} else {
					out[p.Name] = append(cur, h[0])
				}
			}
		}
	}
	return out, firstErr
}

// Selectors caches parsed budget selectors by budget UID, so a selector is
// parsed once per version of its budget rather than once per sync. Objects
// from an informer cache are never changed in place, so the selector's address
// identifies the version: a new object parses anew. Safe for concurrent use.
type Selectors struct {
	mu sync.Mutex
	m  map[types.UID]parsed
}

type parsed struct {
	from *metav1.LabelSelector
	sel  labels.Selector
	err  error
}

// Get returns the budget's parsed selector, as Selector does.
func (s *Selectors) Get(b *policyv1.PodDisruptionBudget) (labels.Selector, error) {
	if b.UID == "" || b.Spec.Selector == nil {
		return Selector(b)
	}
	s.mu.Lock()
	p, ok := s.m[b.UID]
	s.mu.Unlock()
	if ok && p.from == b.Spec.Selector {
		return p.sel, p.err
	}
	sel, err := Selector(b)
	s.mu.Lock()
	if s.m == nil {
		s.m = map[types.UID]parsed{}
	}
	s.m[b.UID] = parsed{from: b.Spec.Selector, sel: sel, err: err}
	s.mu.Unlock()
	return sel, err
}

// Forget drops a deleted budget's selector.
func (s *Selectors) Forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, uid)
}

// Len is how many selectors the cache holds.
func (s *Selectors) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
