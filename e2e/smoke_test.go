//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
)

// These smoke tests check the cluster itself: the behaviour of StatefulSets,
// PDBs and readiness gates that stsroller builds on. They hold on any
// conformant cluster, and on the local one only if its kwok stages are right.

const (
	// healthyGate is a readiness gate the tests own and flip through pods/status.
	healthyGate corev1.PodConditionType = "e2e.stsroller.io/healthy"
	// pollInterval and readyTimeout bound the waits; generous for kind.
	pollInterval = 200 * time.Millisecond
	readyTimeout = 2 * time.Minute
)

// TestOnDeleteRollout: a template change replaces nothing by itself; a
// deleted pod comes back at the update revision.
func TestOnDeleteRollout(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)

	sts := createStatefulSet(ctx, t, client, ns, "web", 3, nil)
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, statefulSetReady(client, ns, sts.Name, 3)); err != nil {
		t.Fatal(err)
	}
	before, err := snapshot(ctx, client, sts)
	if err != nil {
		t.Fatal(err)
	}
	oldRevision := currentStatefulSet(ctx, t, client, sts).Status.UpdateRevision

	newRevision := updateTemplate(ctx, t, client, sts, oldRevision)
	// OnDelete: however long we wait, no pod is replaced.
	if err := framework.Consistently(ctx, 5*time.Second, 500*time.Millisecond, func(ctx context.Context) error {
		after, err := snapshot(ctx, client, sts)
		if err != nil {
			return err
		}
		return nothingReplaced(before, after, oldRevision)
	}); err != nil {
		t.Fatalf("with updateStrategy OnDelete: %v", err)
	}

	deleted := before["web-1"]
	if err := client.CoreV1().Pods(ns).Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = framework.Eventually(ctx, readyTimeout, pollInterval, func(ctx context.Context) error {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		switch {
		case string(pod.UID) == deleted.uid:
			return errors.New("web-1 not replaced yet")
		case !framework.PodReady(pod) || pod.Status.PodIP == "":
			return fmt.Errorf("new web-1 not Ready with an IP yet (phase %s)", pod.Status.Phase)
		}
		if got := pod.Labels[appsv1.ControllerRevisionHashLabelKey]; got != newRevision {
			return fmt.Errorf("new web-1 has revision %s, want the update revision %s", got, newRevision)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The others still run the old revision.
	after, err := snapshot(ctx, client, sts)
	if err != nil {
		t.Fatal(err)
	}
	delete(before, "web-1")
	delete(after, "web-1")
	if err := nothingReplaced(before, after, oldRevision); err != nil {
		t.Fatalf("after deleting web-1 only: %v", err)
	}
}

// TestNothingReplacedSeesAReplacement shows that the check used above can
// fail: once a pod has been deleted and recreated at the new revision, it
// says so. Without this, TestOnDeleteRollout could pass on a check that never
// looks.
func TestNothingReplacedSeesAReplacement(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)

	sts := createStatefulSet(ctx, t, client, ns, "db", 2, nil)
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, statefulSetReady(client, ns, sts.Name, 2)); err != nil {
		t.Fatal(err)
	}
	before, err := snapshot(ctx, client, sts)
	if err != nil {
		t.Fatal(err)
	}
	oldRevision := currentStatefulSet(ctx, t, client, sts).Status.UpdateRevision
	updateTemplate(ctx, t, client, sts, oldRevision)
	if err := client.CoreV1().Pods(ns).Delete(ctx, "db-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait for the replacement, by the same snapshot the check reads.
	err = framework.Eventually(ctx, readyTimeout, pollInterval, func(ctx context.Context) error {
		after, err := snapshot(ctx, client, sts)
		if err != nil {
			return err
		}
		if p, ok := after["db-0"]; !ok || p.uid == before["db-0"].uid {
			return errors.New("db-0 not recreated yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	after, err := snapshot(ctx, client, sts)
	if err != nil {
		t.Fatal(err)
	}
	err = nothingReplaced(before, after, oldRevision)
	if err == nil {
		t.Fatal("nothingReplaced found nothing, but db-0 was deleted and recreated")
	}
	if !strings.Contains(err.Error(), "db-0") || strings.Contains(err.Error(), "db-1") {
		t.Errorf("nothingReplaced should blame db-0 and only db-0: %v", err)
	}
	// And through Consistently, as TestOnDeleteRollout uses it.
	err = framework.Consistently(ctx, time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		after, err := snapshot(ctx, client, sts)
		if err != nil {
			return err
		}
		return nothingReplaced(before, after, oldRevision)
	})
	if err == nil {
		t.Fatal("Consistently(nothingReplaced) passed, but db-0 was replaced")
	}
}

// TestEvictionBlockedByPDB: with no headroom in the PDB, the Eviction API
// answers 429; with headroom, the same eviction goes through. The second half
// shows that the 429 comes from the PDB and not from a broken request.
func TestEvictionBlockedByPDB(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)

	sts := createStatefulSet(ctx, t, client, ns, "kv", 3, nil)
	pdb, err := client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "kv"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(3)),
			Selector:     sts.Spec.Selector,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, statefulSetReady(client, ns, sts.Name, 3)); err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, pdbSettled(client, ns, pdb.Name, 3, 0)); err != nil {
		t.Fatal(err)
	}

	err = evict(ctx, client, ns, "kv-0")
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("evicting kv-0 with minAvailable=3 of 3: got %v, want 429 Too Many Requests", err)
	}
	pod, err := client.CoreV1().Pods(ns).Get(ctx, "kv-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.DeletionTimestamp != nil {
		t.Fatal("kv-0 is being deleted although its eviction was refused")
	}

	pdb, err = client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, pdb.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pdb.Spec.MinAvailable = ptr.To(intstr.FromInt32(2))
	if _, err := client.PolicyV1().PodDisruptionBudgets(ns).Update(ctx, pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, pdbSettled(client, ns, pdb.Name, 3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := evict(ctx, client, ns, "kv-0"); err != nil {
		t.Fatalf("evicting kv-0 with minAvailable=2 of 3: %v", err)
	}
}

// TestReadinessGate: a pod with a readiness gate is Ready only while the gate
// is True, and the StatefulSet counts it accordingly.
func TestReadinessGate(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)

	sts := createStatefulSet(ctx, t, client, ns, "gated", 2, []corev1.PodReadinessGate{{ConditionType: healthyGate}})
	// Running with IPs, but not Ready: nobody set the gate yet.
	err := framework.Eventually(ctx, readyTimeout, pollInterval, func(ctx context.Context) error {
		for _, name := range []string{"gated-0", "gated-1"} {
			pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if pod.Status.PodIP == "" || framework.PodConditionStatus(pod, corev1.ContainersReady) != corev1.ConditionTrue {
				return fmt.Errorf("%s: containers not ready with an IP yet", name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.Consistently(ctx, 2*time.Second, 250*time.Millisecond, readyPods(client, ns, map[string]bool{"gated-0": false, "gated-1": false})); err != nil {
		t.Fatalf("without the gate condition: %v", err)
	}

	for _, name := range []string{"gated-0", "gated-1"} {
		if err := framework.SetPodCondition(ctx, client, ns, name, healthyGate, corev1.ConditionTrue, "Test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, statefulSetReady(client, ns, sts.Name, 2)); err != nil {
		t.Fatal(err)
	}

	if err := framework.SetPodCondition(ctx, client, ns, "gated-1", healthyGate, corev1.ConditionFalse, "Test"); err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, readyPods(client, ns, map[string]bool{"gated-0": true, "gated-1": false})); err != nil {
		t.Fatalf("after the gate of gated-1 turned False: %v", err)
	}
	err = framework.Eventually(ctx, readyTimeout, pollInterval, func(ctx context.Context) error {
		s, err := client.AppsV1().StatefulSets(ns).Get(ctx, sts.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Status.ReadyReplicas != 1 {
			return fmt.Errorf("readyReplicas %d, want 1", s.Status.ReadyReplicas)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := framework.SetPodCondition(ctx, client, ns, "gated-1", healthyGate, corev1.ConditionTrue, "Test"); err != nil {
		t.Fatal(err)
	}
	if err := framework.Eventually(ctx, readyTimeout, pollInterval, statefulSetReady(client, ns, sts.Name, 2)); err != nil {
		t.Fatalf("after the gate of gated-1 turned True again: %v", err)
	}
}

// createStatefulSet creates a headless Service and an OnDelete StatefulSet
// with Parallel pod management.
func createStatefulSet(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string, replicas int32, gates []corev1.PodReadinessGate) *appsv1.StatefulSet {
	t.Helper()
	podLabels := map[string]string{"app": name}
	_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone,
			Selector:  podLabels,
			Ports:     []corev1.ServicePort{{Name: "app", Port: 80}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sts, err := client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Selector:            &metav1.LabelSelector{MatchLabels: podLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					// Runs on kind; under kwok the image does not matter.
					Containers:                    []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
					ReadinessGates:                gates,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return sts
}

func currentStatefulSet(ctx context.Context, t *testing.T, client kubernetes.Interface, sts *appsv1.StatefulSet) *appsv1.StatefulSet {
	t.Helper()
	s, err := client.AppsV1().StatefulSets(sts.Namespace).Get(ctx, sts.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// updateTemplate changes the pod template and returns the new update
// revision, once the StatefulSet controller has observed the change.
func updateTemplate(ctx context.Context, t *testing.T, client kubernetes.Interface, sts *appsv1.StatefulSet, oldRevision string) string {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"e2e.stsroller.io/changed":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	updated, err := client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var newRevision string
	err = framework.Eventually(ctx, readyTimeout, pollInterval, func(ctx context.Context) error {
		s, err := client.AppsV1().StatefulSets(sts.Namespace).Get(ctx, sts.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Status.ObservedGeneration < updated.Generation {
			return fmt.Errorf("observedGeneration %d < generation %d", s.Status.ObservedGeneration, updated.Generation)
		}
		if s.Status.UpdateRevision == oldRevision {
			return fmt.Errorf("updateRevision still %s", oldRevision)
		}
		newRevision = s.Status.UpdateRevision
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return newRevision
}

// statefulSetReady checks that the StatefulSet has observed its spec and has
// n Ready replicas, each with an IP.
func statefulSetReady(client kubernetes.Interface, ns, name string, n int32) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s.Status.ObservedGeneration < s.Generation {
			return fmt.Errorf("statefulset %s: observedGeneration %d < generation %d", name, s.Status.ObservedGeneration, s.Generation)
		}
		if s.Status.ReadyReplicas != n {
			return fmt.Errorf("statefulset %s: %d of %d replicas ready", name, s.Status.ReadyReplicas, n)
		}
		pods, err := podsOf(ctx, client, s)
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods {
			if p.DeletionTimestamp == nil && framework.PodReady(&p) && p.Status.PodIP != "" {
				ready++
			}
		}
		if ready != int(n) {
			return fmt.Errorf("statefulset %s: %d pods Ready with an IP, want %d", name, ready, n)
		}
		return nil
	}
}

// readyPods checks that each named pod's readiness is as given.
func readyPods(client kubernetes.Interface, ns string, want map[string]bool) func(context.Context) error {
	return func(ctx context.Context) error {
		for name, ready := range want {
			pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if framework.PodReady(pod) != ready {
				return fmt.Errorf("pod %s: Ready is %q, want ready=%t", name, framework.PodConditionStatus(pod, corev1.PodReady), ready)
			}
		}
		return nil
	}
}

// pdbSettled checks that the PDB's status is current (observedGeneration has
// caught up, so the disruption controller has counted under the latest spec)
// and shows the given healthy pods and allowed disruptions.
func pdbSettled(client kubernetes.Interface, ns, name string, healthy, allowed int32) func(context.Context) error {
	return func(ctx context.Context) error {
		pdb, err := client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		st := pdb.Status
		if st.ObservedGeneration < pdb.Generation {
			return fmt.Errorf("pdb %s: observedGeneration %d < generation %d", name, st.ObservedGeneration, pdb.Generation)
		}
		if st.CurrentHealthy != healthy || st.DisruptionsAllowed != allowed {
			return fmt.Errorf("pdb %s: currentHealthy %d, disruptionsAllowed %d; want %d and %d", name, st.CurrentHealthy, st.DisruptionsAllowed, healthy, allowed)
		}
		return nil
	}
}

func evict(ctx context.Context, client kubernetes.Interface, ns, pod string) error {
	return client.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
	})
}

func podsOf(ctx context.Context, client kubernetes.Interface, sts *appsv1.StatefulSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil {
		return nil, err
	}
	list, err := client.CoreV1().Pods(sts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// podState is what tells one incarnation of a pod from the next.
type podState struct {
	uid      string
	revision string
}

// snapshot maps the StatefulSet's pods by name.
func snapshot(ctx context.Context, client kubernetes.Interface, sts *appsv1.StatefulSet) (map[string]podState, error) {
	pods, err := podsOf(ctx, client, sts)
	if err != nil {
		return nil, err
	}
	out := map[string]podState{}
	for _, p := range pods {
		out[p.Name] = podState{uid: string(p.UID), revision: p.Labels[appsv1.ControllerRevisionHashLabelKey]}
	}
	return out, nil
}

// nothingReplaced checks that every pod of before is still there, as the same
// object (same UID), still at revision, and that no other pod appeared.
func nothingReplaced(before, after map[string]podState, revision string) error {
	var problems []string
	for name, b := range before {
		a, ok := after[name]
		switch {
		case !ok:
			problems = append(problems, name+" is gone")
		case a.uid != b.uid:
			problems = append(problems, fmt.Sprintf("%s was replaced (uid %s, then %s)", name, b.uid, a.uid))
		case a.revision != revision:
			problems = append(problems, fmt.Sprintf("%s is at revision %s, not %s", name, a.revision, revision))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			problems = append(problems, name+" appeared")
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
