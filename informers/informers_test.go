package informers

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

func TestTrimPodKeepsWhatThePlannerReads(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "db-0", Namespace: "ns", UID: "u", ResourceVersion: "9",
			Labels:          map[string]string{"app": "db", "controller-revision-hash": "r1", "stsroller.io/role": "leader"},
			Annotations:     map[string]string{lastApplied: "{...huge...}", "keep": "me"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "db", UID: "s", Controller: new(bool)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		},
		Spec: corev1.PodSpec{
			NodeName:       "n1",
			Containers:     []corev1.Container{{Name: "db", Image: "db:1", Env: []corev1.EnvVar{{Name: "A", Value: "B"}}}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "stsroller.io/dns-propagated"}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			HostIP: "172.18.0.2", HostIPs: []corev1.HostIP{{IP: "172.18.0.2"}}, QOSClass: corev1.PodQOSBestEffort,
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
				{Type: "stsroller.io/dns-propagated", Status: corev1.ConditionFalse, Reason: "NotPropagated"},
				{Type: "example.com/gate", Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "db", Ready: false, RestartCount: 3, Image: "db:1", ImageID: "sha",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "long"}}}},
		},
	}
	want := pod.DeepCopy()
	want.ManagedFields = nil
	want.Annotations = map[string]string{"keep": "me"}
	want.Spec = corev1.PodSpec{NodeName: "n1", ReadinessGates: pod.Spec.ReadinessGates}
	want.Status.HostIP, want.Status.HostIPs, want.Status.QOSClass = "", nil, ""
	want.Status.Conditions = []corev1.PodCondition{pod.Status.Conditions[1], pod.Status.Conditions[3]}
	want.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "db", RestartCount: 3,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}

	got, err := Trim(pod)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Trim (-want +got):\n%s", diff)
	}
	if c := got.(*corev1.Pod).Status.Conditions; cap(c) != len(c) {
		t.Errorf("Trim kept %d conditions in a slice of %d", len(c), cap(c))
	}
}

func TestTrimStatefulSetKeepsTemplate(t *testing.T) {
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}},
		Spec: appsv1.StatefulSetSpec{
			Template:             corev1.PodTemplateSpec{Spec: corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "g"}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}},
		},
	}
	got, _ := Trim(sts)
	s := got.(*appsv1.StatefulSet)
	if s.ManagedFields != nil || s.Spec.VolumeClaimTemplates != nil {
		t.Errorf("managedFields or volumeClaimTemplates kept: %+v", s)
	}
	if len(s.Spec.Template.Spec.ReadinessGates) != 1 {
		t.Errorf("template readiness gates dropped")
	}
}

func TestTrimPassesTombstones(t *testing.T) {
	tomb := cache.DeletedFinalStateUnknown{Key: "ns/db-0", Obj: &corev1.Pod{}}
	got, err := Trim(tomb)
	if err != nil || got != any(tomb) {
		t.Errorf("Trim(tombstone) = %v, %v; want it unchanged", got, err)
	}
}

// TestFactoryTrimsCachedObjects: the factory's caches hold trimmed objects.
func TestFactoryTrimsCachedObjects(t *testing.T) {
	client := fake.NewClientset([]runtime.Object{&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "x"}}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}}...)
	f := NewFactory(client, "ns", 0)
	inf := f.Core().V1().Pods().Informer()
	stop := make(chan struct{})
	defer close(stop)
	f.Start(stop)
	f.WaitForCacheSync(stop)
	obj, ok, err := inf.GetStore().GetByKey("ns/p")
	if err != nil || !ok {
		t.Fatalf("pod not cached: %v", err)
	}
	p := obj.(*corev1.Pod)
	if p.ManagedFields != nil || len(p.Spec.Containers) != 0 {
		t.Errorf("cached pod not trimmed: managedFields %v, containers %v", p.ManagedFields, p.Spec.Containers)
	}
}

// TestPodFactoryCachesOnlyStatefulSetPods: pods that no StatefulSet owns (no
// statefulset.kubernetes.io/pod-name label) never reach the informer's store,
// and the list and watch ask the API server for StatefulSet pods only.
func TestPodFactoryCachesOnlyStatefulSetPods(t *testing.T) {
	owned := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "ns", UID: "p1",
		Labels:          map[string]string{StatefulSetPodLabel: "db-0"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "sts-uid", Controller: ptrTrue()}}}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "ns", UID: "p2",
		Labels: map[string]string{"app": "web"}}}
	client := fake.NewClientset(owned, other)
	f := NewPodFactory(client, "ns", 0)
	inf := f.Core().V1().Pods().Informer()
	if err := AddPodIndexers(inf); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	f.Start(stop)
	f.WaitForCacheSync(stop)
	if _, ok, _ := inf.GetStore().GetByKey("ns/web-abc"); ok {
		t.Errorf("a pod no StatefulSet owns reached the store")
	}
	if _, ok, _ := inf.GetStore().GetByKey("ns/db-0"); !ok {
		t.Errorf("the StatefulSet's pod is not cached")
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "list" && a.GetVerb() != "watch" {
			continue
		}
		var sel string
		switch a := a.(type) {
		case interface {
			GetListRestrictions() k8stesting.ListRestrictions
		}:
			sel = a.GetListRestrictions().Labels.String()
		case interface {
			GetWatchRestrictions() k8stesting.WatchRestrictions
		}:
			sel = a.GetWatchRestrictions().Labels.String()
		}
		if sel != StatefulSetPodLabel {
			t.Errorf("%s pods with label selector %q, want %q", a.GetVerb(), sel, StatefulSetPodLabel)
		}
	}
	pods, err := PodsControlledBy(inf.GetIndexer(), "sts-uid")
	if err != nil || len(pods) != 1 || pods[0].Name != "db-0" {
		t.Errorf("PodsControlledBy(sts-uid) = %v, %v; want [db-0]", pods, err)
	}
}

func ptrTrue() *bool { b := true; return &b }
