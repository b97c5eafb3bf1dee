// Package framework holds the few helpers the e2e tests share: a client for
// the cluster named by KUBECONFIG, a namespace per test, polling with a
// timeout, and setting a pod condition the way a readiness-gate owner does.
//
// Checks return errors instead of failing the test, so that a test can also
// show that a check fails when its premise is broken.
package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// TestLabel is set on every namespace a test creates, to the test's name.
const TestLabel = "e2e.stsroller.io/test"

// Config loads the client config of the cluster named by $KUBECONFIG (or
// ~/.kube/config).
func Config() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// Client returns a clientset for the cluster named by $KUBECONFIG, or fails t.
func Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	cfg, err := Config()
	if err != nil {
		t.Fatalf("loading kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("creating client: %v", err)
	}
	return client
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9-]+`)

// Namespace creates a namespace for t, named after the test, and deletes it
// when t ends unless the test failed and $E2E_KEEP_NAMESPACES is set.
func Namespace(ctx context.Context, t testing.TB, client kubernetes.Interface) string {
	t.Helper()
	base := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 40 {
		base = strings.TrimRight(base[:40], "-")
	}
	label := base
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: base + "-",
			Labels:       map[string]string{TestLabel: label},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	name := ns.Name
	t.Cleanup(func() {
		if t.Failed() && envSet("E2E_KEEP_NAMESPACES") {
			t.Logf("keeping namespace %s of a failed test", name)
			return
		}
		// The test's context may be done by now.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		policy := metav1.DeletePropagationBackground
		err := client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	// Pods cannot be created before the namespace's default ServiceAccount
	// exists; the controller manager adds it a moment after the namespace.
	err = Eventually(ctx, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) error {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("namespace %s: no default ServiceAccount: %v", name, err)
	}
	return name
}

// Eventually calls check every interval until it returns nil, and fails with
// the last error of check if that does not happen within timeout.
func Eventually(ctx context.Context, timeout, interval time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not true after %s: %w", time.Since(start).Round(time.Millisecond), err)
		case <-time.After(interval):
		}
	}
}

// Consistently calls check every interval for the whole duration, and fails
// with the first error check returns.
func Consistently(ctx context.Context, duration, interval time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(duration)
	for {
		if err := check(ctx); err != nil {
			return fmt.Errorf("not true for %s: %w", duration, err)
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(interval, time.Until(deadline))):
		}
	}
}

// SetPodCondition sets a condition of a pod through the status subresource,
// as the owner of a readiness gate does. Other conditions are kept: pod
// conditions merge by type.
func SetPodCondition(ctx context.Context, client kubernetes.Interface, namespace, name string, condType corev1.PodConditionType, status corev1.ConditionStatus, reason string) error {
	patch, err := json.Marshal(map[string]any{
		"status": map[string]any{
			"conditions": []corev1.PodCondition{{
				Type:               condType,
				Status:             status,
				Reason:             reason,
				LastTransitionTime: metav1.Now(),
			}},
		},
	})
	if err != nil {
		return err
	}
	_, err = client.CoreV1().Pods(namespace).Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("setting condition %s=%s on pod %s/%s: %w", condType, status, namespace, name, err)
	}
	return nil
}

// PodConditionStatus returns the status of a pod's condition, or "" if the
// pod does not have it.
func PodConditionStatus(pod *corev1.Pod, condType corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == condType {
			return c.Status
		}
	}
	return ""
}

// PodReady reports whether a pod's Ready condition is True.
func PodReady(pod *corev1.Pod) bool {
	return PodConditionStatus(pod, corev1.PodReady) == corev1.ConditionTrue
}

func envSet(name string) bool {
	v := os.Getenv(name)
	return v != "" && v != "0" && v != "false"
}
