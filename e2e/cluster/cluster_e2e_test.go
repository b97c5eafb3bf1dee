//go:build e2e

package cluster

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// TestStartStop starts a cluster, runs a pod with a readiness gate through
// its life on a kwok node, and checks that Stop leaves no process and no work
// directory behind.
func TestStartStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 2, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if t.Failed() {
				t.Log(c.LogTails(30))
			}
			c.Stop()
		}
	}()
	for _, u := range c.Usage() {
		t.Logf("%s: pid %d, RSS %d MiB", u.Name, u.PID, u.RSSKiB/1024)
	}

	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	const gate = "e2e.stsroller.io/healthy"
	pod, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "gated"},
		Spec: corev1.PodSpec{
			Containers:     []corev1.Container{{Name: "app", Image: "app:1"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: gate}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPod := func(what string, ok func(*corev1.Pod) bool) *corev1.Pod {
		t.Helper()
		var last *corev1.Pod
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			last, err = client.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ok(last) {
				return last
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("pod never %s; status: %+v", what, last.Status)
		return nil
	}
	cond := func(p *corev1.Pod, typ corev1.PodConditionType) corev1.ConditionStatus {
		for _, c := range p.Status.Conditions {
			if c.Type == typ {
				return c.Status
			}
		}
		return ""
	}
	running := waitPod("running with an IP and ready containers", func(p *corev1.Pod) bool {
		return p.Status.PodIP != "" && cond(p, corev1.ContainersReady) == corev1.ConditionTrue
	})
	t.Logf("pod on %s has IP %s", running.Spec.NodeName, running.Status.PodIP)
	// The gate is missing: the pod must stay unready.
	time.Sleep(2 * time.Second)
	if p := waitPod("read", func(*corev1.Pod) bool { return true }); cond(p, corev1.PodReady) != corev1.ConditionFalse {
		t.Fatalf("Ready is %q with the readiness gate missing", cond(p, corev1.PodReady))
	}
	setGate := func(s corev1.ConditionStatus) {
		t.Helper()
		patch := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"status":%q}]}}`, gate, s)
		if _, err := client.CoreV1().Pods("default").Patch(ctx, pod.Name, "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
	}
	setGate(corev1.ConditionTrue)
	waitPod("Ready once the gate is True", func(p *corev1.Pod) bool { return cond(p, corev1.PodReady) == corev1.ConditionTrue })
	setGate(corev1.ConditionFalse)
	waitPod("unready once the gate is False", func(p *corev1.Pod) bool { return cond(p, corev1.PodReady) == corev1.ConditionFalse })
	setGate(corev1.ConditionTrue)
	waitPod("Ready again", func(p *corev1.Pod) bool { return cond(p, corev1.PodReady) == corev1.ConditionTrue })

	if err := client.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](30)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := client.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted pod (grace period 30s) not removed within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	pids := c.Usage()
	workDir := c.WorkDir
	c.Stop()
	stopped = true
	for _, u := range pids {
		if err := syscall.Kill(u.PID, 0); err == nil {
			t.Errorf("%s (pid %d) still runs after Stop", u.Name, u.PID)
		}
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there after Stop (%v)", workDir, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
