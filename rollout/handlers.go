package rollout

import (
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/policy"
)

const mergePatch = types.MergePatchType

// annotationPatch is a merge patch that sets one annotation.
func annotationPatch(key, value string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{key: value}},
	})
}

// unwrap returns the object of a delete notification, tombstone or not.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func (c *Controller) addStatefulSet(obj any) {
	if sts, ok := obj.(*appsv1.StatefulSet); ok && policy.Enabled(sts) {
		c.queue.Add(cache.MetaObjectToName(sts))
	}
}

func (c *Controller) updateStatefulSet(old, cur any) {
	o, ok1 := old.(*appsv1.StatefulSet)
	n, ok2 := cur.(*appsv1.StatefulSet)
	if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
		return
	}
	// Opting out is seen too, so the controller can drop what it holds.
	if policy.Enabled(n) || policy.Enabled(o) {
		c.queue.Add(cache.MetaObjectToName(n))
	}
	// A member leaving its group may free the others, whether or not this
	// process synced it yet.
	if g := policy.RolloutGroupOf(o); g != "" && g != policy.RolloutGroupOf(n) {
		c.wakeGroup(o.Namespace, g, o.Name)
	}
}

func (c *Controller) deleteStatefulSet(obj any) {
	if sts, ok := unwrap(obj).(*appsv1.StatefulSet); ok {
		c.queue.Add(cache.MetaObjectToName(sts))
		// The members waiting for it go on, whether or not this process
		// synced it yet.
		c.wakeGroup(sts.Namespace, policy.RolloutGroupOf(sts), sts.Name)
	}
}

// enqueuePodOwner enqueues the StatefulSet that controls the pod, if that
// StatefulSet is managed and is the one the reference names (same UID).
func (c *Controller) enqueuePodOwner(obj any) {
	pod, ok := unwrap(obj).(*corev1.Pod)
	if !ok {
		return
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.Kind != "StatefulSet" || ref.APIVersion != appsv1.SchemeGroupVersion.String() {
		return
	}
	sts, err := c.stsLister.StatefulSets(pod.Namespace).Get(ref.Name)
	if err != nil || sts.UID != ref.UID || !policy.Enabled(sts) {
		return
	}
	c.queue.Add(cache.MetaObjectToName(sts))
}

func (c *Controller) updatePod(old, cur any) {
	o, ok1 := old.(*corev1.Pod)
	n, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
		return
	}
	c.enqueuePodOwner(cur)
}

// addBudget, updateBudget and deleteBudget re-plan the managed StatefulSets
// a PodDisruptionBudget concerns: those whose pod template its selector
// matches now (or matched before an update), and those whose pods it selected
// at their last gather. The cost is the StatefulSets found, not the
// namespace's: a template label index finds the candidates.
func (c *Controller) addBudget(obj any) {
	if b, ok := obj.(*policyv1.PodDisruptionBudget); ok {
		c.enqueueBudgetUsers(b)
	}
}

func (c *Controller) updateBudget(old, cur any) {
	o, ok1 := old.(*policyv1.PodDisruptionBudget)
	n, ok2 := cur.(*policyv1.PodDisruptionBudget)
	if !ok1 || !ok2 || o.ResourceVersion == n.ResourceVersion {
		return
	}
	c.enqueueBudgetUsers(n)
	if !equality.Semantic.DeepEqual(o.Spec.Selector, n.Spec.Selector) {
		c.enqueueBudgetUsers(o)
	}
}

func (c *Controller) deleteBudget(obj any) {
	if b, ok := unwrap(obj).(*policyv1.PodDisruptionBudget); ok {
		c.selectors.Forget(b.UID)
		c.enqueueBudgetUsers(b)
	}
}

func (c *Controller) enqueueBudgetUsers(b *policyv1.PodDisruptionBudget) {
	seen := map[cache.ObjectName]bool{}
	add := func(k cache.ObjectName) {
		if !seen[k] {
			seen[k] = true
			c.queue.Add(k)
		}
	}
	for _, k := range c.budgets.get(cache.MetaObjectToName(b)) {
		add(k)
	}
	sel, err := c.selectors.Get(b)
	if err != nil || b.Spec.Selector == nil {
		return
	}
	for _, sts := range c.templateCandidates(b.Namespace, sel) {
		if policy.Enabled(sts) && sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
			add(cache.MetaObjectToName(sts))
		}
	}
}

// templateCandidates are the StatefulSets of the namespace that may have pod
// templates the selector matches: those with the label of its first equality
// requirement, else (a selector of only Exists, NotIn... or an empty one,
// which selects the whole namespace) every StatefulSet of the namespace.
func (c *Controller) templateCandidates(namespace string, sel labels.Selector) []*appsv1.StatefulSet {
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		var values []string
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			values = r.Values().List()
		default:
			continue
		}
		var out []*appsv1.StatefulSet
		for _, v := range values {
			objs, err := c.stsIndexer.ByIndex(informers.ByTemplateLabel, informers.TemplateLabelKey(namespace, r.Key(), v))
			if err != nil {
				return nil
			}
			for _, o := range objs {
				if sts, ok := o.(*appsv1.StatefulSet); ok {
					out = append(out, sts)
				}
			}
		}
		return out
	}
	all, err := c.stsLister.StatefulSets(namespace).List(labels.Everything())
	if err != nil {
		return nil
	}
	return all
}

// enqueueServiceUsers enqueues the managed StatefulSets the Service governs.
func (c *Controller) enqueueServiceUsers(obj any) {
	svc, ok := unwrap(obj).(*corev1.Service)
	if !ok {
		return
	}
	all, err := c.stsLister.StatefulSets(svc.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, sts := range all {
		if sts.Spec.ServiceName == svc.Name && policy.Enabled(sts) {
			c.queue.Add(cache.MetaObjectToName(sts))
		}
	}
}
