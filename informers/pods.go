package informers

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// StatefulSetPodLabel is set by the StatefulSet controller on every pod it
// creates (the pod's name). The pod informer watches only pods that carry it.
const StatefulSetPodLabel = appsv1.StatefulSetPodNameLabel

// ByControllerUID indexes pods by the UID of the StatefulSet their controller
// reference names.
const ByControllerUID = "stsroller.io/by-controller-uid"

// ByTemplateLabel indexes StatefulSets by each label of their pod template,
// as "<namespace>/<key>=<value>".
const ByTemplateLabel = "stsroller.io/by-template-label"

// NewPodFactory returns a shared informer factory for the pods stsroller
// watches: only StatefulSet pods (those with the StatefulSetPodLabel), so a
// cluster full of other pods costs no memory. Use its Core().V1().Pods() and
// nothing else of it.
func NewPodFactory(client kubernetes.Interface, namespace string, resync time.Duration) kinformers.SharedInformerFactory {
	return kinformers.NewSharedInformerFactoryWithOptions(client, resync,
		kinformers.WithNamespace(namespace),
		kinformers.WithTransform(Trim),
		kinformers.WithTweakListOptions(StatefulSetPodsOnly))
}

// StatefulSetPodsOnly restricts a list or watch to pods with the
// StatefulSetPodLabel (the label exists, whatever its value).
func StatefulSetPodsOnly(o *metav1.ListOptions) {
	o.LabelSelector = StatefulSetPodLabel
}

// AddPodIndexers adds the ByControllerUID index to a pod informer (before it
// starts). A second call is a no-op.
func AddPodIndexers(inf cache.SharedIndexInformer) error {
	if _, ok := inf.GetIndexer().GetIndexers()[ByControllerUID]; ok {
		return nil
	}
	return inf.AddIndexers(cache.Indexers{ByControllerUID: podControllerUID})
}

func podControllerUID(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != "StatefulSet" {
		return nil, nil
	}
	return []string{string(ref.UID)}, nil
}

// PodsControlledBy returns the pods whose controller reference names uid.
func PodsControlledBy(idx cache.Indexer, uid types.UID) ([]*corev1.Pod, error) {
	objs, err := idx.ByIndex(ByControllerUID, string(uid))
	if err != nil {
		return nil, err
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// AddStatefulSetIndexers adds the ByTemplateLabel index to a StatefulSet
// informer (before it starts). A second call is a no-op.
func AddStatefulSetIndexers(inf cache.SharedIndexInformer) error {
	if _, ok := inf.GetIndexer().GetIndexers()[ByTemplateLabel]; ok {
		return nil
	}
	return inf.AddIndexers(cache.Indexers{ByTemplateLabel: templateLabels})
}

func templateLabels(obj any) ([]string, error) {
	sts, ok := obj.(*appsv1.StatefulSet)
	if !ok {
		return nil, nil
	}
	out := make([]string, 0, len(sts.Spec.Template.Labels))
	for k, v := range sts.Spec.Template.Labels {
		out = append(out, TemplateLabelKey(sts.Namespace, k, v))
	}
	return out, nil
}

// TemplateLabelKey is the ByTemplateLabel index key of one label.
func TemplateLabelKey(namespace, key, value string) string {
	return fmt.Sprintf("%s/%s=%s", namespace, key, value)
}
