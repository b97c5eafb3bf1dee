// Package informers builds the shared informers stsroller watches with: the
// StatefulSets, Pods, PodDisruptionBudgets and Services of the namespaces in
// scope, with a transform that drops what stsroller never reads, so a large
// cluster costs little memory.
package informers

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
)

// lastApplied is kubectl's copy of the whole object, often the largest
// annotation of all.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// NewFactory returns a shared informer factory over one namespace, or all
// namespaces when namespace is empty, whose caches hold trimmed objects.
func NewFactory(client kubernetes.Interface, namespace string, resync time.Duration) kinformers.SharedInformerFactory {
	return kinformers.NewSharedInformerFactoryWithOptions(client, resync,
		kinformers.WithNamespace(namespace),
		kinformers.WithTransform(Trim))
}

// Trim drops the fields stsroller never reads. It runs on objects fresh from
// the watch, before they enter the cache, so changing them in place is safe.
// Objects of other types, and tombstones, pass unchanged.
func Trim(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[lastApplied]; ok {
				delete(a, lastApplied)
				m.SetAnnotations(a)
			}
		}
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		trimPod(o)
	case *appsv1.StatefulSet:
		// The template is read (readiness gates); the claim templates are not.
		o.Spec.VolumeClaimTemplates = nil
	case *policyv1.PodDisruptionBudget:
		// Only the selector and the status are read; status.disruptedPods
		// (pods evicted in the last moments, a short list) tells whether the
		// status counts an eviction of ours yet.
	}
	return obj, nil
}

// trimPod keeps the spec fields the DNS gate and the planner read and, of the
// container statuses, only why a container waits.
func trimPod(p *corev1.Pod) {
	p.Spec = corev1.PodSpec{
		NodeName:       p.Spec.NodeName,
		Hostname:       p.Spec.Hostname,
		Subdomain:      p.Spec.Subdomain,
		ReadinessGates: p.Spec.ReadinessGates,
	}
	trim := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		if in == nil {
			return nil
		}
		out := make([]corev1.ContainerStatus, len(in))
		for i, cs := range in {
			out[i] = corev1.ContainerStatus{
				Name:         cs.Name,
				Ready:        cs.Ready,
				RestartCount: cs.RestartCount,
			}
			if w := cs.State.Waiting; w != nil {
				out[i].State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason}
			}
		}
		return out
	}
	p.Status.ContainerStatuses = trim(p.Status.ContainerStatuses)
	p.Status.InitContainerStatuses = trim(p.Status.InitContainerStatuses)
	p.Status.EphemeralContainerStatuses = nil
}
