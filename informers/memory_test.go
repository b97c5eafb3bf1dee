package informers

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// runningPod is a StatefulSet's pod as the API server sends it once it runs:
// a database container with probes, resources, a volume from its claim, the
// five conditions and the statuses a kubelet writes.
func runningPod(i int) *corev1.Pod {
	t := metav1.NewTime(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC))
	name := fmt.Sprintf("db-%d", i)
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(5432)}},
		PeriodSeconds: 5}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, GenerateName: "db-", Namespace: "prod", UID: types.UID(fmt.Sprintf("7c6f9a3e-1b2d-4c5e-8f90-%012d", i)),
			ResourceVersion: fmt.Sprint(1000000 + i), CreationTimestamp: t,
			Labels: map[string]string{"app": "db", "controller-revision-hash": "db-7d4b9c8f5",
				"statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": fmt.Sprint(i)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db",
				UID: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "v1", Time: &t, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: make([]byte, 1500)}}},
		},
		Spec: corev1.PodSpec{
			Hostname: name, Subdomain: "db", NodeName: fmt.Sprintf("node-%d", i%15),
			Containers: []corev1.Container{{Name: "db", Image: "postgres:17.2",
				Ports:          []corev1.ContainerPort{{Name: "pg", ContainerPort: 5432, Protocol: corev1.ProtocolTCP}},
				Env:            []corev1.EnvVar{{Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"}},
				Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
				VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql/data"}},
				ReadinessProbe: probe, LivenessProbe: probe}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-" + name}}}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, QOSClass: corev1.PodQOSBurstable, StartTime: &t,
			HostIP: "172.18.0.3", HostIPs: []corev1.HostIP{{IP: "172.18.0.3"}},
			PodIP: fmt.Sprintf("10.244.%d.%d", i/250, i%250), PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.244.%d.%d", i/250, i%250)}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "db", Ready: true, Started: ptr.To(true), Image: "postgres:17.2",
				ImageID:     "docker.io/library/postgres@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				ContainerID: "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}}}},
		},
	}
}

// BenchmarkCachedPodMemory: the heap one cached pod keeps, decoded from
// protobuf (as stsroller's watch receives it) and trimmed. b.N is ignored
// past the first round: the figure is per pod over 10,000 pods.
//
//	go test -run XXX -bench CachedPodMemory ./informers/
func BenchmarkCachedPodMemory(b *testing.B) {
	const n = 10000
	wire := make([][]byte, n)
	for i := range wire {
		data, err := runningPod(i).Marshal()
		if err != nil {
			b.Fatal(err)
		}
		wire[i] = data
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		kept := make([]*corev1.Pod, n)
		for i, data := range wire {
			p := &corev1.Pod{}
			if err := p.Unmarshal(data); err != nil {
				b.Fatal(err)
			}
			if _, err := Trim(p); err != nil {
				b.Fatal(err)
			}
			kept[i] = p
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/pod")
		runtime.KeepAlive(kept)
	}
}
