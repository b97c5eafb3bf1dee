//go:build e2e

package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestRealNode starts a cluster with a real node, runs a pod of the pause
// image on it as a real container (sent there by its namespace's
// annotations), checks that kwok nodes still take the other pods, and that
// Stop leaves no process, cgroup, link or work directory behind.
func TestRealNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a real node needs root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Nodes: 1, Log: testWriter{t}, RealNode: &RealNodeOptions{}, StartTimeout: 6 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if t.Failed() {
				t.Log(c.LogTails(40))
			}
			c.Stop()
		}
	}()
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: "on-real-node", Annotations: RealNodeNamespaceAnnotations()}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waitDefaultSA(ctx, client, ns.Name); err != nil {
		t.Fatal(err)
	}
	pod := func(ns string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "pause", Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "pause", Image: PauseImage,
				ImagePullPolicy: corev1.PullNever}}},
		}
	}
	if _, err := client.CoreV1().Pods(ns.Name).Create(ctx, pod(ns.Name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, pod("default"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var real *corev1.Pod
	if err := c.poll(ctx, func() error {
		real, err = client.CoreV1().Pods(ns.Name).Get(ctx, "pause", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if real.Status.Phase != corev1.PodRunning || len(real.Status.ContainerStatuses) == 0 || !real.Status.ContainerStatuses[0].Ready {
			return fmt.Errorf("pod %s/pause is %s: %+v", ns.Name, real.Status.Phase, real.Status.ContainerStatuses)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if real.Spec.NodeName != RealNodeName {
		t.Errorf("pod of the annotated namespace runs on %s, want %s", real.Spec.NodeName, RealNodeName)
	}
	if ip := net.ParseIP(real.Status.PodIP); ip == nil || !c.node.podCIDR.Contains(ip) {
		t.Errorf("pod IP %q is not in the node's pod subnet %s", real.Status.PodIP, c.node.podCIDR)
	}
	pid, err := c.ContainerPID(real.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.HasPrefix(string(cmdline), "/pause") {
		t.Errorf("container process %d runs %q (%v), want /pause", pid, cmdline, err)
	}
	other, err := client.CoreV1().Pods("default").Get(ctx, "pause", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.poll(ctx, func() error {
		other, err = client.CoreV1().Pods("default").Get(ctx, "pause", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if other.Spec.NodeName == "" {
			return errors.New("default/pause is not scheduled")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if other.Spec.NodeName == RealNodeName {
		t.Errorf("a pod that does not tolerate %s runs on the real node", RealNodeTaint)
	}

	work, veth, cg := c.WorkDir, c.node.veth, c.node.cgroup
	c.Stop()
	stopped = true
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("work dir %s left behind (%v)", work, err)
	}
	if _, err := net.InterfaceByName(veth); err == nil {
		t.Errorf("link %s left behind", veth)
	}
	// A killed process lingers in /proc until it is reaped (a zombie, once
	// its shim is gone, waits for init): it must be dead, and soon gone.
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Errorf("container process %d survives Stop", pid)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mounts, _ := cgroupMounts()
	for _, m := range mounts {
		if _, err := os.Stat(filepath.Join(m, cg)); err == nil {
			t.Errorf("cgroup %s left behind", filepath.Join(m, cg))
		}
	}
}

func waitDefaultSA(ctx context.Context, client kubernetes.Interface, ns string) error {
	for {
		_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no default ServiceAccount in %s: %w", ns, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// processAlive reports whether pid exists and is neither a zombie nor dead.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return true
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}
