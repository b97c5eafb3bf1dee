// Package informers builds the shared informers stsroller watches with: the
// StatefulSets, Pods, PodDisruptionBudgets and Services of the namespaces in
// scope, with a transform that drops what stsroller never reads, so a large
// cluster costs little memory.
package informers

import (
	"slices"
	"strings"
	"time"
	"unique"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// trimPod keeps the spec fields the DNS gate and the planner read; of the
// conditions, Ready and stsroller's own; of the container statuses, only why
// a container waits. What is kept fits its slice: a decoded slice grows by
// doubling (eight places for a running pod's five conditions).
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
	conds := slices.DeleteFunc(p.Status.Conditions, func(c corev1.PodCondition) bool { return !kept(c.Type) })
	p.Status.Conditions = nil
	if len(conds) > 0 {
		p.Status.Conditions = slices.Clone(conds)
	}
	p.Status.HostIP, p.Status.HostIPs, p.Status.QOSClass = "", nil, ""
	share(&p.ObjectMeta)
	p.Status.ContainerStatuses = trim(p.Status.ContainerStatuses)
	p.Status.InitContainerStatuses = trim(p.Status.InitContainerStatuses)
	p.Status.EphemeralContainerStatuses = nil
}

// kept says whether the cache keeps a pod condition: Ready (the planner's
// available) and stsroller's own (the DNS gate's stsroller.io/dns-propagated).
func kept(t corev1.PodConditionType) bool {
	return t == corev1.PodReady || strings.HasPrefix(string(t), "stsroller.io/")
}

// share makes the strings that many pods hold alike (the namespace, the
// label keys and most label values, the owner reference) point to one copy:
// a decoded object has its own copy of each. A pod's name and ordinal
// labels are its own and stay as they are.
func share(m *metav1.ObjectMeta) {
	m.Namespace = unique.Make(m.Namespace).Value()
	if len(m.Labels) > 0 {
		l := make(map[string]string, len(m.Labels))
		for k, v := range m.Labels {
			if k != appsv1.StatefulSetPodNameLabel && k != appsv1.PodIndexLabel {
				v = unique.Make(v).Value()
			}
			l[unique.Make(k).Value()] = v
		}
		m.Labels = l
	}
	for i := range m.OwnerReferences {
		r := &m.OwnerReferences[i]
		r.APIVersion, r.Kind = unique.Make(r.APIVersion).Value(), unique.Make(r.Kind).Value()
		r.Name, r.UID = unique.Make(r.Name).Value(), types.UID(unique.Make(string(r.UID)).Value())
	}
}
