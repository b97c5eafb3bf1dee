package rollout

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/klog/v2/ktesting"
)

// The pods stsroller removes go with their own grace period: neither a
// delete nor an eviction ever shortens it (a grace period of 0 would skip the
// database's shutdown), and each is made only against the pod as planned.
func TestAPIRemoverKeepsTheGracePeriod(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "ns", UID: "u-0", ResourceVersion: "7"}}
	client := fake.NewClientset(pod.DeepCopy())
	var opts []*metav1.DeleteOptions
	client.PrependReactor("delete", "pods", func(a core.Action) (bool, runtime.Object, error) {
		o := a.(core.DeleteActionImpl).GetDeleteOptions()
		opts = append(opts, &o)
		return true, nil, nil
	})
	client.PrependReactor("create", "pods", func(a core.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "eviction" {
			opts = append(opts, a.(core.CreateAction).GetObject().(*policyv1.Eviction).DeleteOptions)
		}
		return true, nil, nil
	})
	r := &APIRemover{Client: client}
	if err := r.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if err := r.Evict(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(opts) != 2 {
		t.Fatalf("%d removals seen, want a delete and an eviction", len(opts))
	}
	for i, o := range opts {
		switch {
		case o == nil || o.Preconditions == nil || o.Preconditions.UID == nil || *o.Preconditions.UID != pod.UID:
			t.Errorf("removal %d: options %+v lack the pod's UID precondition", i, o)
		case o.GracePeriodSeconds != nil:
			t.Errorf("removal %d: grace period %d set, want the pod's own", i, *o.GracePeriodSeconds)
		}
	}
	if rv := opts[0].Preconditions.ResourceVersion; rv == nil || *rv != pod.ResourceVersion {
		t.Errorf("delete without the pod's resourceVersion precondition")
	}
}
