//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/framework"
)

// The tests of this file check stsroller as deploy/ installs it; they run
// only in the deployed mode (make e2e-deployed, make e2e-kind). They do not
// run in parallel: they delete and kill the controller's pods, which the
// parallel tests, run after them, then rely on again.

func skipUnlessDeployed(t *testing.T) kubernetes.Interface {
	t.Helper()
	if !framework.Deployed() {
		t.Skipf("needs %s=deployed", framework.EnvController)
	}
	client := framework.Client(t)
	if err := framework.WaitControllerAvailable(t.Context(), client, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	return client
}

func controllerPods(t *testing.T, client kubernetes.Interface) []corev1.Pod {
	t.Helper()
	pods, err := framework.ControllerPods(t.Context(), client)
	if err != nil {
		t.Fatal(err)
	}
	var live []corev1.Pod
	for _, p := range pods {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// TestDeployedControllerPods: both replicas run and are ready, as 65532 with
// a read-only root filesystem and no capabilities; on the local cluster this
// is read from the container processes themselves, not only from the spec.
func TestDeployedControllerPods(t *testing.T) {
	client := skipUnlessDeployed(t)
	if out, err := exec.Command(framework.Kubectl(), "--kubeconfig="+os.Getenv("KUBECONFIG"),
		"-n", deploy.Namespace, "get", "pods", "-o", "wide").CombinedOutput(); err == nil {
		t.Logf("kubectl -n %s get pods -o wide:\n%s", deploy.Namespace, out)
	}
	pods := controllerPods(t, client)
	if len(pods) != 2 {
		t.Fatalf("%d controller pods, want 2", len(pods))
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || !framework.PodReady(&p) {
			t.Errorf("pod %s is %s, ready %v", p.Name, p.Status.Phase, framework.PodReady(&p))
		}
		if len(p.Spec.Containers) != 1 || len(p.Status.ContainerStatuses) != 1 {
			t.Fatalf("pod %s has %d containers", p.Name, len(p.Status.ContainerStatuses))
		}
		sc := p.Spec.Containers[0].SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("pod %s: container security context %+v, want runAsUser 65532 and a read-only root filesystem", p.Name, sc)
		}
		if framework.ContainerPID == nil {
			continue
		}
		pid, err := framework.ContainerPID(p.Status.ContainerStatuses[0].ContainerID)
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for field, want := range map[string]string{
			"Uid:":    "65532 65532 65532 65532",
			"Gid:":    "65532 65532 65532 65532",
			"CapEff:": "0000000000000000",
		} {
			if got := procField(string(status), field); got != want {
				t.Errorf("pod %s: process %d has %s %q, want %q", p.Name, pid, field, got, want)
			}
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.HasPrefix(string(cmdline), "/stsroller\x00") {
			t.Errorf("pod %s: process %d runs %q, want /stsroller", p.Name, pid, cmdline)
		}
		mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			t.Fatal(err)
		}
		if opts, ok := rootMountOptions(string(mounts)); !ok || !strings.Contains(","+opts+",", ",ro,") {
			t.Errorf("pod %s: root filesystem of process %d is mounted %q, want ro", p.Name, pid, opts)
		}
	}
}

func procField(status, field string) string {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			return strings.Join(strings.Fields(rest), " ")
		}
	}
	return ""
}

// rootMountOptions returns the per-mount options of "/" in a mountinfo.
func rootMountOptions(mountinfo string) (string, bool) {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			return f[5], true
		}
	}
	return "", false
}

// leaseHolder returns the pod that holds the controller's Lease (its
// identity is <hostname>_<uuid>, the hostname being the pod's name) and the
// lease's duration.
func leaseHolder(ctx context.Context, client kubernetes.Interface) (string, time.Duration, error) {
	l, err := client.CoordinationV1().Leases(deploy.Namespace).Get(ctx, "stsroller", metav1.GetOptions{})
	if err != nil {
		return "", 0, err
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return "", 0, errors.New("the Lease has no holder")
	}
	var d time.Duration
	if l.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	pod, _, _ := strings.Cut(*l.Spec.HolderIdentity, "_")
	return pod, d, nil
}

// TestDeployedLeaderHandover: one replica holds the Lease in the
// controller's namespace; deleting its pod hands the Lease to another
// replica (the standby, or the pod that replaces the deleted one) within
// the lease duration (the leader releases it on SIGTERM).
func TestDeployedLeaderHandover(t *testing.T) {
	client := skipUnlessDeployed(t)
	ctx := t.Context()
	var leader string
	var duration time.Duration
	err := framework.Eventually(ctx, time.Minute, 500*time.Millisecond, func(ctx context.Context) error {
		var err error
		leader, duration, err = leaseHolder(ctx, client)
		if err != nil {
			return err
		}
		for _, p := range controllerPods(t, client) {
			if p.Name == leader {
				return nil
			}
		}
		return fmt.Errorf("the Lease is held by %q, not by a controller pod", leader)
	})
	if err != nil {
		t.Fatal(err)
	}
	var standby string
	for _, p := range controllerPods(t, client) {
		if p.Name != leader {
			standby = p.Name
		}
	}
	t.Logf("leader %s, standby %s, lease duration %s", leader, standby, duration)
	if standby == "" || duration == 0 {
		t.Fatalf("no standby (%q) or no lease duration (%s)", standby, duration)
	}

	deleted := time.Now()
	if err := client.CoreV1().Pods(deploy.Namespace).Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Within the lease, with slack for a loaded machine: the standby retries
	// every 2s and takes a released lease at once. The Deployment's
	// replacement for the deleted pod asks as soon as it starts, and on a
	// fast node it may ask first: either is a handover, as long as the
	// holder is a live controller pod other than the deleted leader.
	var holder string
	err = framework.Eventually(ctx, duration+15*time.Second, 200*time.Millisecond, func(ctx context.Context) error {
		var err error
		holder, _, err = leaseHolder(ctx, client)
		if err != nil {
			return err
		}
		if holder == leader || holder == "" {
			return fmt.Errorf("the Lease is held by %q", holder)
		}
		for _, p := range controllerPods(t, client) {
			if p.Name == holder {
				return nil
			}
		}
		return fmt.Errorf("the Lease is held by %q, not by a live controller pod", holder)
	})
	if err != nil {
		t.Fatalf("after deleting leader %s: %v", leader, err)
	}
	who := "standby"
	if holder != standby {
		who = "replacement"
	}
	t.Logf("%s %s took the Lease %s after the leader's pod was deleted", who, holder, time.Since(deleted).Round(100*time.Millisecond))
	if err := framework.WaitControllerAvailable(ctx, client, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestDeployedMetricsThroughService: /metrics answers through the metrics
// Service (the API server's service proxy), and on each pod.
func TestDeployedMetricsThroughService(t *testing.T) {
	client := skipUnlessDeployed(t)
	ctx := t.Context()
	get := func(what string, req func() ([]byte, error)) string {
		var body []byte
		err := framework.Eventually(ctx, time.Minute, time.Second, func(context.Context) error {
			var err error
			body, err = req()
			return err
		})
		if err != nil {
			t.Fatalf("GET %s: %v", what, err)
		}
		return string(body)
	}
	svc := get("service stsroller-metrics:metrics /metrics", func() ([]byte, error) {
		return client.CoreV1().Services(deploy.Namespace).ProxyGet("http", "stsroller-metrics", "metrics", "/metrics", nil).DoRaw(ctx)
	})
	for _, name := range []string{"stsroller_leader", "process_resident_memory_bytes", "go_goroutines"} {
		if !strings.Contains(svc, "\n"+name) && !strings.HasPrefix(svc, name) {
			t.Errorf("/metrics through the Service has no %s:\n%s", name, firstLines(svc, 30))
		}
	}
	leaders := 0
	for _, p := range controllerPods(t, client) {
		body := get("pod "+p.Name+" /metrics", func() ([]byte, error) {
			return client.CoreV1().Pods(deploy.Namespace).ProxyGet("http", p.Name, "8080", "/metrics", nil).DoRaw(ctx)
		})
		if strings.Contains(body, "\nstsroller_leader 1") {
			leaders++
			if !strings.Contains(body, "\nstsroller_workqueue_depth") {
				t.Errorf("the leader %s reports no workqueue metrics:\n%s", p.Name, firstLines(body, 30))
			}
		}
	}
	if leaders != 1 {
		t.Errorf("%d pods report stsroller_leader 1, want 1", leaders)
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}
