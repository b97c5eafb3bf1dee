package rollout

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/pdb"
	"github.com/stsroller/stsroller/policy"
)

// Source is where the planner's input is read from: the controller's
// informer caches, or the live API for `kubectl stsroller plan`.
type Source interface {
	// Pods returns the StatefulSet's pods, or a superset of them: Gather
	// keeps those that match its selector and that it controls.
	Pods(ctx context.Context, sts *appsv1.StatefulSet) ([]*corev1.Pod, error)
	Budgets(ctx context.Context, namespace string) ([]*policyv1.PodDisruptionBudget, error)
	// Service returns nil, nil when the Service does not exist.
	Service(ctx context.Context, namespace, name string) (*corev1.Service, error)
}

// Gather reads the planner's input for one StatefulSet from src: its config,
// its pods, the budgets over them, its governing Service and the previous
// status. The caller adds what only it knows: deletions awaiting observation,
// the DNS gate's view and the time.
func Gather(ctx context.Context, src Source, sts *appsv1.StatefulSet) (policy.Input, error) {
	return gather(ctx, src, sts, nil)
}

// gather is Gather with budget selectors from a cache (nil: parsed anew).
func gather(ctx context.Context, src Source, sts *appsv1.StatefulSet, selectors *pdb.Selectors) (policy.Input, error) {
	cfg, cfgErr := policy.ParseConfig(sts)
	in := policy.Input{
		StatefulSet: sts,
		Config:      cfg,
		ConfigError: cfgErr,
		Previous:    policy.ParseStatus(sts.Annotations),
	}
	pods, of, err := podsOf(ctx, src, sts)
	if err != nil {
		return in, err
	}
	in.Pods = pods
	budgets, err := src.Budgets(ctx, sts.Namespace)
	if err != nil {
		return in, err
	}
	if selectors != nil {
		in.Budgets, in.BudgetError = selectors.ForPodsOf(budgets, pods, of)
	} else {
		in.Budgets, in.BudgetError = pdb.ForPodsOf(budgets, pods, of)
	}
	if sts.Spec.ServiceName != "" {
		if in.Service, err = src.Service(ctx, sts.Namespace, sts.Spec.ServiceName); err != nil {
			return in, err
		}
	}
	return in, nil
}

// podsOf lists the pods the StatefulSet controls: its selector, and a
// controller reference with its UID. It returns the selector too: every pod
// listed matches it.
func podsOf(ctx context.Context, src Source, sts *appsv1.StatefulSet) ([]*corev1.Pod, labels.Selector, error) {
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return nil, nil, nil // the API server validates selectors; nothing matches a broken one
	}
	all, err := src.Pods(ctx, sts)
	if err != nil {
		return nil, nil, err
	}
	pods := make([]*corev1.Pod, 0, len(all))
	for _, p := range all {
		if p.Namespace == sts.Namespace && controlledBy(p, sts) && sel.Matches(labels.Set(p.Labels)) {
			pods = append(pods, p)
		}
	}
	return pods, sel, nil
}

// APISource reads the live objects through the API server.
type APISource struct {
	Client kubernetes.Interface
}

func (s APISource) Pods(ctx context.Context, sts *appsv1.StatefulSet) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return nil, nil
	}
	l, err := s.Client.CoreV1().Pods(sts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	out := make([]*corev1.Pod, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}

func (s APISource) Budgets(ctx context.Context, namespace string) ([]*policyv1.PodDisruptionBudget, error) {
	l, err := s.Client.PolicyV1().PodDisruptionBudgets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]*policyv1.PodDisruptionBudget, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}

func (s APISource) Service(ctx context.Context, namespace, name string) (*corev1.Service, error) {
	svc, err := s.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return svc, err
}
