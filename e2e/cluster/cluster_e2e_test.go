//go:build e2e

package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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

	checkAuditLog(t, c, pod.Name)
	checkControllerIdentity(ctx, t, c)

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

// checkAuditLog: the pod's deletion is in the audit log, with the admin's
// user name, the response code and the request's time; its reads are not.
func checkAuditLog(t *testing.T, c *Cluster, pod string) {
	t.Helper()
	data, err := os.ReadFile(c.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for line := range strings.Lines(string(data)) {
		var e struct {
			Verb, Stage              string
			User                     struct{ Username string }
			ObjectRef                struct{ Resource, Namespace, Name, Subresource string }
			ResponseStatus           struct{ Code int }
			RequestReceivedTimestamp time.Time
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit log line %q: %v", line, err)
		}
		if e.Verb != "delete" && e.Verb != "deletecollection" && e.Verb != "patch" && !(e.Verb == "create" && e.ObjectRef.Subresource == "eviction") {
			t.Errorf("audit log has a %s of %s: the policy logs only pod removals and patches", e.Verb, e.ObjectRef.Resource)
		}
		if e.Stage != "ResponseComplete" && e.Stage != "Panic" {
			t.Errorf("audit log has stage %s", e.Stage)
		}
		// kwok's final delete of the terminating pod is there too.
		if e.Verb == "delete" && e.ObjectRef.Name == pod && e.ObjectRef.Namespace == "default" && e.User.Username == "stsroller-e2e-admin" {
			found = true
			if e.ResponseStatus.Code != 200 || e.RequestReceivedTimestamp.IsZero() {
				t.Errorf("the pod's deletion in the audit log: %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("the pod's deletion is not in the audit log %s:\n%s", c.AuditLog, lastLines(string(data), 10))
	}
}

// checkControllerIdentity: stsroller's identity authenticates as
// ControllerUser and, bound to nothing, may do nothing.
func checkControllerIdentity(ctx context.Context, t *testing.T, c *Cluster) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.ControllerKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `"`+ControllerUser+`"`) {
		t.Errorf("listing pods as stsroller's identity: %v, want Forbidden for user %s", err, ControllerUser)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// recordedPIDs reads the pid files of a work directory.
func recordedPIDs(t *testing.T, workDir string) map[string]int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(workDir, "pids", "*.pid"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".pid")] = pid
	}
	return out
}

func waitAllDead(t *testing.T, pids map[string]int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for name, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%s (pid %d) still runs", name, pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestFailedStartStopsEverything: a Start that fails half-way (here: out of
// time while the apiserver comes up) leaves nothing running.
func TestFailedStartStopsEverything(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(context.Background(), Options{Nodes: 1, WorkDir: dir, StartTimeout: time.Second})
	if err == nil {
		t.Fatal("Start succeeded within 1s; pick a shorter timeout for this test")
	}
	t.Logf("Start failed as intended: %.200s", err)
	pids := recordedPIDs(t, dir)
	if len(pids) == 0 {
		t.Fatal("no component was started before the failure; the test proves nothing")
	}
	waitAllDead(t, pids, time.Second)
}

// TestCancelStops: cancelling the context given to Start stops the cluster.
func TestCancelStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, Options{Nodes: 1, WorkDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	pids := recordedPIDs(t, dir)
	if len(pids) != len(binaries) {
		t.Fatalf("recorded %v, want all of %v", pids, binaries)
	}
	cancel()
	waitAllDead(t, pids, 30*time.Second)
}

// TestSignals runs a cluster in a child test binary and checks what is left
// after the binary gets SIGINT (a clean stop: nothing, not even the work
// directory) or SIGKILL (the components die by Pdeathsig; the work directory
// stays until the next Start reaps it).
func TestSignals(t *testing.T) {
	if os.Getenv("STSROLLER_CLUSTER_HELPER") != "" {
		c, err := Start(context.Background(), Options{Nodes: 1})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("workdir", c.WorkDir)
		time.Sleep(5 * time.Minute) // until the parent test signals us
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			helper := exec.Command(os.Args[0], "-test.run=^TestSignals$")
			helper.Env = append(os.Environ(), "STSROLLER_CLUSTER_HELPER=1")
			helper.Stderr = os.Stderr
			out, err := helper.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := helper.Start(); err != nil {
				t.Fatal(err)
			}
			defer helper.Process.Kill()
			var workDir string
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if dir, ok := strings.CutPrefix(sc.Text(), "workdir "); ok {
					workDir = dir
					break
				}
				t.Log(sc.Text())
			}
			if workDir == "" {
				t.Fatal("helper did not start a cluster")
			}
			pids := recordedPIDs(t, workDir)
			if len(pids) != len(binaries) {
				t.Fatalf("recorded %v, want all of %v", pids, binaries)
			}
			if err := helper.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err = helper.Wait()
			t.Logf("helper: %v", err)
			if ws, ok := helper.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("helper ended with %v, want death by %v", err, sig)
			}
			waitAllDead(t, pids, 10*time.Second)

			_, err = os.Stat(workDir)
			switch sig {
			case syscall.SIGINT:
				if !os.IsNotExist(err) {
					t.Errorf("work dir %s left after SIGINT (%v)", workDir, err)
				}
			case syscall.SIGKILL:
				if err != nil {
					t.Fatalf("work dir gone after SIGKILL (%v); nothing left to reap", err)
				}
				reapStale(filepath.Dir(workDir))
				if _, err := os.Stat(workDir); !os.IsNotExist(err) {
					t.Errorf("work dir %s not reaped (%v)", workDir, err)
				}
			}
		})
	}
}

// TestReuseWorkDir: a cluster started again in the work directory of a
// stopped one starts afresh (old etcd data would bring back its nodes and
// make Start fail).
func TestReuseWorkDir(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		c, err := Start(context.Background(), Options{Nodes: 1, WorkDir: dir})
		if err != nil {
			t.Fatalf("start %d: %v", i+1, err)
		}
		c.Stop()
	}
}
