package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/e2e/proc"
)

// EnvController says where stsroller runs: "process" (the default: each test
// starts its own stsroller process, scoped to its namespace) or "deployed"
// (stsroller runs in the cluster from deploy/, as `make e2e-kind` sets up; a
// test's "kill" deletes the controller's pods).
const EnvController = "STSROLLER_E2E_CONTROLLER"

// EnvBinary names a prebuilt stsroller binary; without it, BuildController
// builds one.
const EnvBinary = "STSROLLER_BINARY"

// Deployed reports whether the tests use an stsroller deployed in the cluster.
func Deployed() bool { return os.Getenv(EnvController) == "deployed" }

// ModuleRoot finds the directory of the project's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the stsroller module")
	}
	return filepath.Dir(mod), nil
}

// BuildController builds cmd/stsroller into dir and returns the binary's path,
// or returns $STSROLLER_BINARY when set.
func BuildController(dir string) (string, error) {
	if b := os.Getenv(EnvBinary); b != "" {
		return b, nil
	}
	return Build(dir, "./cmd/stsroller")
}

// Build builds a command of the module (./cmd/NAME) into dir and returns the
// binary's path.
func Build(dir, pkg string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", pkg, err, out)
	}
	return bin, nil
}

// ControllerOptions start one stsroller process.
type ControllerOptions struct {
	// Binary is the stsroller binary (see BuildController).
	Binary string
	// Kubeconfig is the identity it runs as; default $KUBECONFIG.
	Kubeconfig string
	// Namespace scopes it; tests give their own namespace.
	Namespace string
	// Args are extra flags.
	Args []string
	// Name tells processes of one test apart in the logs.
	Name string
}

// Controller is a running stsroller process, or, with Deployed, a handle on
// the one in the cluster.
type Controller struct {
	t      testing.TB
	opts   ControllerOptions
	client kubernetes.Interface

	mu   sync.Mutex
	proc *proc.Process // nil when stopped
	log  *syncBuffer
}

// StartController starts stsroller for t and stops it when t ends. With
// Deployed it starts nothing.
func StartController(t testing.TB, client kubernetes.Interface, opts ControllerOptions) *Controller {
	t.Helper()
	if opts.Kubeconfig == "" {
		opts.Kubeconfig = os.Getenv("KUBECONFIG")
	}
	if opts.Name == "" {
		opts.Name = "stsroller"
	}
	c := &Controller{t: t, opts: opts, client: client, log: &syncBuffer{}}
	if Deployed() {
		return c
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", c.opts.Name, proc.Tail(c.log.String(), 60))
		}
	})
	return c
}

// Start starts the process (again).
func (c *Controller) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if Deployed() {
		return nil
	}
	if c.proc != nil {
		select {
		case <-c.proc.Done(): // it exited on its own: start it again
			fmt.Fprintf(c.log, "=== exited\n")
			c.proc = nil
		default:
			return fmt.Errorf("%s already runs", c.opts.Name)
		}
	}
	args := []string{
		"--kubeconfig=" + c.opts.Kubeconfig,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=0",
		"--leader-elect=false",
		"-v=4",
	}
	if c.opts.Namespace != "" {
		args = append(args, "--namespace="+c.opts.Namespace)
	}
	args = append(args, c.opts.Args...)
	cmd := exec.Command(c.opts.Binary, args...)
	fmt.Fprintf(c.log, "=== start %s %s\n", c.opts.Binary, strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = c.log, c.log
	p, err := proc.Spawn(c.opts.Name, cmd)
	if err != nil {
		return err
	}
	c.proc = p
	return nil
}

// Kill kills the process at once (SIGKILL), as a node failure would. With
// Deployed, it SIGKILLs the containers of every controller pod where it can
// reach them (ContainerPID: the kubelet restarts them), else force-deletes
// the controller's pods.
func (c *Controller) Kill() {
	if Deployed() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if ContainerPID != nil {
			killed, err := KillControllerContainers(ctx, c.client)
			if err != nil {
				c.t.Errorf("killing the controller containers: %v", err)
			}
			c.t.Logf("SIGKILLed the controller containers: %s", strings.Join(killed, ", "))
			return
		}
		err := c.client.CoreV1().Pods("stsroller-system").DeleteCollection(ctx,
			metav1.DeleteOptions{GracePeriodSeconds: new(int64)},
			metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=stsroller"})
		if err != nil {
			c.t.Errorf("deleting the controller pods: %v", err)
		}
		return
	}
	c.stop(0)
}

// Stop stops the process gracefully (SIGTERM), then kills it after 15s.
func (c *Controller) Stop() {
	if Deployed() {
		return
	}
	c.stop(15 * time.Second)
}

// Exited says whether the process was started and has exited on its own
// since (stsroller exits when it loses its Lease).
func (c *Controller) Exited() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return false
	}
	select {
	case <-c.proc.Done():
		return true
	default:
		return false
	}
}

// Name is ControllerOptions.Name.
func (c *Controller) Name() string { return c.opts.Name }

// Log returns what the process wrote so far.
func (c *Controller) Log() string { return c.log.String() }

// stop sends SIGTERM and, once grace has passed, SIGKILL; with no grace,
// SIGKILL at once. It returns once the process has been reaped, however long
// that takes: a Start that follows must not find the old process running.
func (c *Controller) stop(grace time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return
	}
	_ = c.proc.Stop(grace)
	<-c.proc.Done()
	sig := syscall.SIGKILL
	if grace > 0 {
		sig = syscall.SIGTERM
	}
	fmt.Fprintf(c.log, "=== stopped by %s\n", sig)
	c.proc = nil
}

// KillControllerContainers SIGKILLs the stsroller container of every
// deployed controller pod (needs ContainerPID).
func KillControllerContainers(ctx context.Context, client kubernetes.Interface) (killed []string, _ error) {
	pods, err := ControllerPods(ctx, client)
	if err != nil {
		return nil, err
	}
	for _, p := range pods {
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Running == nil {
				continue
			}
			pid, err := ContainerPID(s.ContainerID)
			if err != nil {
				return killed, fmt.Errorf("pod %s: %w", p.Name, err)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return killed, fmt.Errorf("pod %s: kill %d: %w", p.Name, pid, err)
			}
			killed = append(killed, fmt.Sprintf("%s (pid %d)", p.Name, pid))
		}
	}
	return killed, nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
