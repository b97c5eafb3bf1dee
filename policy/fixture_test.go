package policy

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/pdb"
)

// t0 is the planner's "now" in the table tests.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	oldRev = "web-old"
	newRev = "web-new"
)

// newSet is an opted-in, Parallel, OnDelete StatefulSet "web" whose update
// revision is newRev and whose status is current.
func newSet(replicas int32, annotations map[string]string) *appsv1.StatefulSet {
	a := map[string]string{AnnotationEnabled: "true"}
	for k, v := range annotations {
		a[k] = v
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Generation: 1, Annotations: a},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         "web",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		},
		Status: appsv1.StatefulSetStatus{
			ObservedGeneration: 1,
			CurrentRevision:    oldRev,
			UpdateRevision:     newRev,
		},
	}
}

type podOpt func(*corev1.Pod)

// newPod is pod web-<ordinal> at the revision, Running and Ready since an hour
// before t0.
func newPod(ordinal int, rev string, opts ...podOpt) *corev1.Pod {
	name := "web-" + strconv.Itoa(ordinal)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: "ns",
			UID:       types.UID(name + "-" + rev),
			Labels:    map[string]string{"app": "web", appsv1.ControllerRevisionHashLabelKey: rev},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: fmt.Sprintf("10.0.0.%d", ordinal+1),
			Conditions: []corev1.PodCondition{{
				Type:               corev1.PodReady,
				Status:             corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(t0.Add(-time.Hour)),
			}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func notReady(p *corev1.Pod) {
	p.Status.Conditions[0].Status = corev1.ConditionFalse
}

func crashLooping(p *corev1.Pod) {
	notReady(p)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name:  "app",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
	}}
}

func pending(p *corev1.Pod) {
	p.Status.Phase = corev1.PodPending
	p.Status.PodIP = ""
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}
}

func terminating(p *corev1.Pod) {
	p.DeletionTimestamp = ptr.To(metav1.NewTime(t0.Add(-time.Second)))
}

func leader(p *corev1.Pod) {
	p.Labels["stsroller.io/role"] = "leader"
}

func readyFor(d time.Duration) podOpt {
	return func(p *corev1.Pod) { p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(t0.Add(-d)) }
}

// pods builds a StatefulSet's pods from a compact description: specs[i]
// describes the pod of ordinal i.
//
//	"o" outdated and ready, "O" outdated and not ready,
//	"n" updated and ready,  "N" updated and not ready,
//	"-" missing.
func pods(specs ...string) []*corev1.Pod {
	var out []*corev1.Pod
	for i, s := range specs {
		switch s {
		case "o":
			out = append(out, newPod(i, oldRev))
		case "O":
			out = append(out, newPod(i, oldRev, notReady))
		case "n":
			out = append(out, newPod(i, newRev))
		case "N":
			out = append(out, newPod(i, newRev, notReady))
		case "-":
		default:
			panic("unknown pod spec " + s)
		}
	}
	return out
}

// input gathers a planner input as the controller would: the config parsed
// from the StatefulSet's annotations, at t0.
func input(t testing.TB, sts *appsv1.StatefulSet, ps []*corev1.Pod) Input {
	t.Helper()
	cfg, err := ParseConfig(sts)
	return Input{
		StatefulSet: sts,
		Config:      cfg,
		ConfigError: err,
		Pods:        ps,
		Budgets:     map[string][]pdb.Budget{},
		Now:         t0,
	}
}

// budgetOver puts one budget over every pod.
func budgetOver(ps []*corev1.Pod, b pdb.Budget) map[string][]pdb.Budget {
	m := map[string][]pdb.Budget{}
	for _, p := range ps {
		m[p.Name] = append(m[p.Name], b)
	}
	return m
}

// deletion is what the tests compare of a Deletion.
type deletion struct {
	Pod    string
	Method Method
}

func deletionsOf(p Plan) []deletion {
	var out []deletion
	for _, d := range p.Deletions {
		out = append(out, deletion{d.Pod.Name, d.Method})
	}
	return out
}

func del(name string) deletion   { return deletion{name, MethodDelete} }
func evict(name string) deletion { return deletion{name, MethodEvict} }
