package framework

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/deploy"
)

// EnvImage names the controller image to install from deploy/ before the
// tests, in the deployed mode: `make e2e-deployed` and `make e2e-kind` set it
// to the image they built. Without it, the tests expect stsroller to be
// installed already.
const EnvImage = "STSROLLER_E2E_IMAGE"

// EnvImageTar names the OCI tarball of that image, which the local cluster
// imports into its real node (`make image-tar` writes it).
const EnvImageTar = "STSROLLER_E2E_IMAGE_TAR"

// ControllerSelector selects the deployed controller's pods.
const ControllerSelector = "app.kubernetes.io/name=stsroller,app.kubernetes.io/component=controller"

// ContainerPID, when set, returns the host PID of a container of the cluster
// (from a pod status's containerID): TestMain sets it for the local cluster's
// real node, where tests can look at the deployed controller's processes and
// kill them. Elsewhere (kind) it is nil.
var ContainerPID func(containerID string) (int, error)

// DeployOptions install stsroller from deploy/.
type DeployOptions struct {
	// Kubeconfig of the cluster.
	Kubeconfig string
	// Image replaces deploy/'s image reference; nothing else is changed.
	Image string
	// NamespaceAnnotations, if any, are set on deploy/'s namespace before
	// the apply: the cluster admin's settings, such as a node selector for
	// all its pods (see cluster.RealNodeNamespaceAnnotations).
	NamespaceAnnotations map[string]string
	// Args are appended to the controller's arguments: the site's settings
	// (the local cluster's DNS servers), as an admin's overlay would.
	Args []string
	// Timeout for the Deployment to be Available. Default 5 minutes.
	Timeout time.Duration
}

// Kubectl returns the kubectl to use: the one of $STSROLLER_BIN_DIR (built
// with the control plane), else the one on PATH.
func Kubectl() string {
	if dir := os.Getenv("STSROLLER_BIN_DIR"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "kubectl")); err == nil {
			return filepath.Join(dir, "kubectl")
		}
	}
	return "kubectl"
}

// DeployController installs stsroller as cluster admins do: deploy/ rendered
// the way `kubectl apply -k deploy/` renders it, with only the image
// replaced and o.Args added, piped to `kubectl apply`; then it waits for the Deployment to be
// Available.
func DeployController(ctx context.Context, client kubernetes.Interface, o DeployOptions) error {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	if len(o.NamespaceAnnotations) > 0 {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: deploy.Namespace, Annotations: o.NamespaceAnnotations}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating namespace %s: %w", deploy.Namespace, err)
		}
	}
	manifests, err := deploy.BuildWith(deploy.Options{Image: o.Image, Args: o.Args})
	if err != nil {
		return err
	}
	apply := exec.CommandContext(ctx, Kubectl(), "--kubeconfig="+o.Kubeconfig, "apply", "-f", "-")
	apply.Stdin = bytes.NewReader(manifests)
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply of deploy/ with image %s: %v\n%s", o.Image, err, out)
	}
	return WaitControllerAvailable(ctx, client, o.Timeout)
}

// WaitControllerAvailable waits until the deployed Deployment is Available
// with all its replicas updated and ready.
func WaitControllerAvailable(ctx context.Context, client kubernetes.Interface, timeout time.Duration) error {
	err := Eventually(ctx, timeout, time.Second, func(ctx context.Context) error {
		d, err := client.AppsV1().Deployments(deploy.Namespace).Get(ctx, "stsroller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != want ||
			d.Status.ReadyReplicas != want || d.Status.Replicas != want {
			return fmt.Errorf("deployment %s/stsroller: %d replicas, %d updated, %d ready, want %d",
				deploy.Namespace, d.Status.Replicas, d.Status.UpdatedReplicas, d.Status.ReadyReplicas, want)
		}
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("deployment %s/stsroller is not Available", deploy.Namespace)
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, describeControllerPods(ctx, client))
	}
	return nil
}

// describeControllerPods says where each controller pod stands, for an error.
func describeControllerPods(ctx context.Context, client kubernetes.Interface) string {
	pods, err := client.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ControllerSelector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %q: %s", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue {
				fmt.Fprintf(&b, " %s=%s(%s)", c.Type, c.Status, c.Message)
			}
		}
		for _, s := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " restarts=%d", s.RestartCount)
			if s.State.Waiting != nil {
				fmt.Fprintf(&b, " waiting=%s(%s)", s.State.Waiting.Reason, s.State.Waiting.Message)
			}
			if t := s.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(&b, " last=%s(exit %d)", t.Reason, t.ExitCode)
			}
		}
		b.WriteString("\n")
	}
	events, err := client.CoreV1().Events(deploy.Namespace).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// ControllerPods lists the deployed controller's pods.
func ControllerPods(ctx context.Context, client kubernetes.Interface) ([]corev1.Pod, error) {
	pods, err := client.CoreV1().Pods(deploy.Namespace).List(ctx, metav1.ListOptions{LabelSelector: ControllerSelector})
	if err != nil {
		return nil, err
	}
	return pods.Items, nil
}
