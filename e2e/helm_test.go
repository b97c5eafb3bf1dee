//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	psapi "k8s.io/pod-security-admission/api"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/framework"
)

// helmBinary is the pinned helm of hack/tools.sh ($STSROLLER_BIN_DIR/helm),
// or $STSROLLER_HELM.
func helmBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("STSROLLER_HELM"); b != "" {
		return b
	}
	if d := os.Getenv("STSROLLER_BIN_DIR"); d != "" {
		if st, err := os.Stat(filepath.Join(d, "helm")); err == nil && !st.IsDir() {
			return filepath.Join(d, "helm")
		}
	}
	t.Skip("no helm in $STSROLLER_BIN_DIR (make test-e2e builds it: hack/tools.sh build helm), nor $STSROLLER_HELM")
	return ""
}

// TestHelmInstall installs the chart with helm into a namespace that
// enforces the restricted Pod Security Standard, and checks that what the
// API server holds is what the chart renders (RBAC, Deployment, Service,
// PDB), that the ReplicaSet's pods were admitted, and that helm uninstall
// removes the cluster-wide objects. The pods run on kwok nodes here, so no
// controller process starts; the deployed mode runs them on a real node.
func TestHelmInstall(t *testing.T) {
	t.Parallel()
	helm := helmBinary(t)
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)
	if _, err := client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(fmt.Sprintf(
		`{"metadata":{"labels":{%q:"restricted",%q:"latest"}}}`, psapi.EnforceLevelLabel, psapi.EnforceVersionLabel)),
		metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	root, err := framework.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	// A release name of its own: cluster-scoped names ("<release>-stsroller")
	// do not collide with deploy/'s "stsroller".
	const release = "helm-e2e"
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", os.Getenv("KUBECONFIG"), "--namespace", ns)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
	// watchNamespace keeps the release to its own namespace: where the pods
	// really run (the deployed mode's real node) they must not act on the
	// other tests' StatefulSets. The ClusterRole variant is checked by
	// deploy/helm_test.go against deploy/.
	run("install", release, "deploy/helm/stsroller", "--set", "image.tag=e2e", "--set", "logFormat=json",
		"--set", "watchNamespace="+ns, "--timeout", "2m")
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			cmd := exec.Command(helm, "uninstall", release, "--kubeconfig", os.Getenv("KUBECONFIG"), "--namespace", ns)
			cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
			_ = cmd.Run()
		}
	})

	manifest := run("get", "manifest", release)
	objs, err := deploy.Decode(manifest)
	if err != nil {
		t.Fatalf("decoding helm get manifest: %v\n%s", err, manifest)
	}
	kinds := map[string]int{}
	var dep *appsv1.Deployment
	for _, o := range objs {
		kinds[fmt.Sprintf("%T", o)]++
		if err := compareLive(ctx, t, o); err != nil {
			t.Error(err)
		}
		switch o := o.(type) {
		case *appsv1.Deployment:
			dep = o
		}
	}
	// The controller's Role and RoleBinding, and leader election's.
	// And the admission policy that confines the release's ServiceAccount.
	want := map[string]int{"*v1.ServiceAccount": 1, "*v1.Role": 2, "*v1.RoleBinding": 2, "*v1.Deployment": 1,
		"*v1.Service": 1, "*v1.PodDisruptionBudget": 1,
		"*v1.ValidatingAdmissionPolicy": 1, "*v1.ValidatingAdmissionPolicyBinding": 1}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("objects of the release (-want +got):\n%s", diff)
	}
	if dep == nil {
		t.FailNow()
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != "stsroller:e2e" || !slices.Contains(c.Args, "--namespace="+ns) || !slices.Contains(c.Args, "--logging-format=json") {
		t.Errorf("image %q args %v, want stsroller:e2e, --namespace=%s, --logging-format=json (the --set values)", c.Image, c.Args, ns)
	}

	// The ReplicaSet's pods pass the namespace's restricted admission.
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	err = framework.Eventually(ctx, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) error {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return err
		}
		if len(l.Items) != int(*dep.Spec.Replicas) {
			d, _ := client.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
			var conds []string
			if d != nil {
				for _, c := range d.Status.Conditions {
					conds = append(conds, fmt.Sprintf("%s=%s (%s: %s)", c.Type, c.Status, c.Reason, c.Message))
				}
			}
			return fmt.Errorf("%d pods, want %d; Deployment conditions %v", len(l.Items), *dep.Spec.Replicas, conds)
		}
		pods = l.Items
		return nil
	})
	if err != nil {
		t.Fatalf("the Deployment's pods were not created: %v", err)
	}
	for _, p := range pods {
		c := p.Spec.Containers[0]
		if diff := cmp.Diff(dep.Spec.Template.Spec.Containers[0].Args, c.Args); diff != "" {
			t.Errorf("pod %s args (-chart +pod):\n%s", p.Name, diff)
		}
		if sc := c.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("pod %s securityContext %+v, want user 65532 and a read-only root filesystem", p.Name, sc)
		}
		t.Logf("pod %s on node %q: phase %s", p.Name, p.Spec.NodeName, p.Status.Phase)
	}

	run("uninstall", release, "--wait", "--timeout", "2m")
	uninstalled = true
	err = framework.Eventually(ctx, 2*time.Minute, 500*time.Millisecond, func(ctx context.Context) error {
		if _, err := client.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("Deployment %s after helm uninstall: %v", dep.Name, err)
		}
		if l, err := client.RbacV1().RoleBindings(ns).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) > 0 {
			return fmt.Errorf("RoleBindings after helm uninstall: %d, %v", len(l.Items), err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// envOf and probeOf leave out what the API server defaults (a fieldRef's
// apiVersion, an HTTP probe's scheme).
func envOf(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			out[e.Name] = "fieldRef:" + e.ValueFrom.FieldRef.FieldPath
		}
	}
	return out
}

func probeOf(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return "none"
	}
	return fmt.Sprintf("GET %s on %s, delay %ds, every %ds", p.HTTPGet.Path, p.HTTPGet.Port.String(), p.InitialDelaySeconds, p.PeriodSeconds)
}

var quantity = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

// compareLive reads o back from the API server and compares the fields that
// matter with what helm rendered.
func compareLive(ctx context.Context, t *testing.T, o runtime.Object) error {
	client := framework.Client(t)
	m := o.(metav1.Object)
	name, ns := m.GetName(), m.GetNamespace()
	var want, got any
	var err error
	switch o := o.(type) {
	case *corev1.ServiceAccount:
		var live *corev1.ServiceAccount
		live, err = client.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = o.Labels, live.Labels
		}
	case *rbacv1.ClusterRole:
		var live *rbacv1.ClusterRole
		live, err = client.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = o.Rules, live.Rules
		}
	case *rbacv1.ClusterRoleBinding:
		var live *rbacv1.ClusterRoleBinding
		live, err = client.RbacV1().ClusterRoleBindings().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.RoleRef, o.Subjects}, []any{live.RoleRef, live.Subjects}
		}
	case *rbacv1.Role:
		var live *rbacv1.Role
		live, err = client.RbacV1().Roles(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = o.Rules, live.Rules
		}
	case *rbacv1.RoleBinding:
		var live *rbacv1.RoleBinding
		live, err = client.RbacV1().RoleBindings(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.RoleRef, o.Subjects}, []any{live.RoleRef, live.Subjects}
		}
	case *appsv1.Deployment:
		var live *appsv1.Deployment
		live, err = client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			// The API server defaults more fields; compare what the chart sets.
			w, g := o.Spec.Template.Spec, live.Spec.Template.Spec
			wc, gc := w.Containers[0], g.Containers[0]
			want = []any{*o.Spec.Replicas, o.Spec.Selector, w.ServiceAccountName, w.SecurityContext, w.Affinity,
				wc.Image, wc.Args, envOf(wc), wc.Resources, wc.SecurityContext, probeOf(wc.LivenessProbe), probeOf(wc.ReadinessProbe)}
			got = []any{*live.Spec.Replicas, live.Spec.Selector, g.ServiceAccountName, g.SecurityContext, g.Affinity,
				gc.Image, gc.Args, envOf(gc), gc.Resources, gc.SecurityContext, probeOf(gc.LivenessProbe), probeOf(gc.ReadinessProbe)}
		}
	case *corev1.Service:
		var live *corev1.Service
		live, err = client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.Spec.Selector, o.Spec.Ports}, []any{live.Spec.Selector, live.Spec.Ports}
		}
	case *policyv1.PodDisruptionBudget:
		var live *policyv1.PodDisruptionBudget
		live, err = client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.Spec.MaxUnavailable, o.Spec.Selector}, []any{live.Spec.MaxUnavailable, live.Spec.Selector}
		}
	case *admissionregistrationv1.ValidatingAdmissionPolicy:
		var live *admissionregistrationv1.ValidatingAdmissionPolicy
		live, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.Spec.MatchConditions, o.Spec.Variables, o.Spec.Validations}, []any{live.Spec.MatchConditions, live.Spec.Variables, live.Spec.Validations}
		}
	case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
		var live *admissionregistrationv1.ValidatingAdmissionPolicyBinding
		live, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			want, got = []any{o.Spec.PolicyName, o.Spec.ValidationActions}, []any{live.Spec.PolicyName, live.Spec.ValidationActions}
		}
	case *unstructured.Unstructured:
		return fmt.Errorf("the default release holds a %s, which this cluster has no CRD for", o.GetKind())
	default:
		return fmt.Errorf("unexpected %T %s in the release", o, name)
	}
	if err != nil {
		return fmt.Errorf("%T %s/%s: %v", o, ns, name, err)
	}
	if diff := cmp.Diff(want, got, quantity); diff != "" {
		return fmt.Errorf("%T %s/%s on the API server differs from the chart (-chart +live):\n%s", o, ns, name, diff)
	}
	return nil
}
