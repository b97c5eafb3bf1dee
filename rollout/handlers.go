package rollout

import (
	"encoding/json"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

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
}

func (c *Controller) deleteStatefulSet(obj any) {
	if sts, ok := unwrap(obj).(*appsv1.StatefulSet); ok {
		c.queue.Add(cache.MetaObjectToName(sts))
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

// enqueueNamespaceOf enqueues every managed StatefulSet in the object's
// namespace: a PodDisruptionBudget may select any of their pods.
func (c *Controller) enqueueNamespaceOf(obj any) {
	m, ok := unwrap(obj).(metav1.Object)
	if !ok {
		return
	}
	all, err := c.stsLister.StatefulSets(m.GetNamespace()).List(labels.Everything())
	if err != nil {
		return
	}
	for _, sts := range all {
		if policy.Enabled(sts) {
			c.queue.Add(cache.MetaObjectToName(sts))
		}
	}
}

func (c *Controller) updateNamespaced(old, cur any) {
	o, ok1 := old.(metav1.Object)
	n, ok2 := cur.(metav1.Object)
	if !ok1 || !ok2 || o.GetResourceVersion() == n.GetResourceVersion() {
		return
	}
	c.enqueueNamespaceOf(cur)
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
