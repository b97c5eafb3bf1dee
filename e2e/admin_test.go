//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

var (
	deployOnce sync.Once
	deployObjs []runtime.Object
	deployErr  error
)

// applyDeployRBAC applies the Namespace, ServiceAccount, ClusterRole and
// ClusterRoleBinding of deploy/ itself, once per run. With a deployed
// stsroller (kind) they are there already.
func applyDeployRBAC(t testing.TB, client kubernetes.Interface) []runtime.Object {
	t.Helper()
	deployOnce.Do(func() {
		deployObjs, deployErr = deploy.Objects()
		if deployErr != nil || framework.Deployed() {
			return
		}
		ctx := context.Background()
		for _, o := range deployObjs {
			switch o.(type) {
			case *rbacv1.Role, *rbacv1.RoleBinding:
				continue // leaderElectionRBAC copies them into a test's namespace
			}
			if _, err := createObject(ctx, client, o); err != nil {
				deployErr = err
				return
			}
		}
	})
	if deployErr != nil {
		t.Fatalf("applying deploy/: %v", deployErr)
	}
	return deployObjs
}

// createObject creates a namespace, ServiceAccount or RBAC object of deploy/
// (or deploy/coordination); one that exists already is no error. ok is false
// for the kinds it does not create.
func createObject(ctx context.Context, c kubernetes.Interface, o runtime.Object) (ok bool, err error) {
	switch o := o.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRole:
		_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		return false, nil
	}
	if apierrors.IsAlreadyExists(err) {
		err = nil
	}
	return true, err
}

// leaderElectionRBAC copies deploy/'s leader-election Role and RoleBinding into
// ns, so a test's controllers hold their Lease in their own namespace with
// exactly the rights the deployed one has in stsroller-system.
func leaderElectionRBAC(t testing.TB, client kubernetes.Interface, objs []runtime.Object, ns string) {
	t.Helper()
	ctx := t.Context()
	n := 0
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.Role:
			r := o.DeepCopy()
			r.Namespace, r.ResourceVersion = ns, ""
			if _, err := client.RbacV1().Roles(ns).Create(ctx, r, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			n++
		case *rbacv1.RoleBinding:
			b := o.DeepCopy()
			b.Namespace, b.ResourceVersion = ns, ""
			if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, b, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n != 2 {
		t.Fatalf("deploy/ has %d leader-election Role and RoleBinding objects, want 2", n)
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as deploy/'s
// ServiceAccount, with a token from the TokenRequest API.
func serviceAccountKubeconfig(t testing.TB, client kubernetes.Interface) string {
	return tokenKubeconfig(t, client, deploy.Namespace, deploy.ServiceAccount)
}

// tokenKubeconfig writes a kubeconfig that authenticates as ServiceAccount
// ns/name, with a token from the TokenRequest API.
func tokenKubeconfig(t testing.TB, client kubernetes.Interface, ns, name string) string {
	t.Helper()
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", ns, name, err)
	}
	admin, err := framework.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthorityData: admin.CAData,
		CertificateAuthority: admin.CAFile, InsecureSkipTLSVerify: admin.Insecure}
	cfg.AuthInfos["stsroller"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["stsroller"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "stsroller"}
	cfg.CurrentContext = "stsroller"
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRolloutAsDeployServiceAccount runs stsroller with deploy/'s identity and
// RBAC, leader election on, through a rollout that makes every kind of
// request: a broken pod deleted, healthy pods asked to drain (a pod patch;
// nobody answers, so each is evicted at the 2 s timeout), events, status.
// The rollout completes, so the ClusterRole grants enough. And the identity
// cannot read Secrets or delete StatefulSets.
func TestRolloutAsDeployServiceAccount(t *testing.T) {
	t.Parallel()
	if framework.Deployed() {
		t.Skip("the deployed stsroller already runs as deploy/'s ServiceAccount; the other tests cover it")
	}
	r := newRollout(t, rolloutOptions{replicas: 5, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2",
		policy.AnnotationDrainTimeoutSeconds: "2"},
		noControllerYet: true})
	objs := applyDeployRBAC(t, r.client)
	leaderElectionRBAC(t, r.client, objs, r.ns)
	kc := serviceAccountKubeconfig(t, r.client)
	old := r.current().Status.UpdateRevision
	r.watch.SetBroken(func(p *corev1.Pod) bool {
		return p.Name == "db-1" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == old
	})
	r.controller = framework.StartController(t, r.client, framework.ControllerOptions{
		Binary: binary(t), Namespace: r.ns, Kubeconfig: kc,
		Args: []string{"--leader-elect=true", "--leader-elect-namespace=" + r.ns},
	})
	rev := r.newRevision("2")
	r.waitRolledOut(rev, 5)
	if !strings.Contains(r.controller.Log(), "Became leader") {
		t.Errorf("the controller never took the lease")
	}
	if n := len(r.events(policy.ReasonDrainRequested)); n == 0 {
		t.Errorf("no %s event: the drain handshake was not exercised", policy.ReasonDrainRequested)
	}

	// What the identity must not do.
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.CoreV1().Secrets(r.ns).List(r.ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing Secrets as the ServiceAccount: err = %v, want Forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(deploy.Namespace).Get(r.ctx, "any", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("getting a Secret as the ServiceAccount: err = %v, want Forbidden", err)
	}
	if err := sa.AppsV1().StatefulSets(r.ns).Delete(r.ctx, "db", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("deleting the StatefulSet as the ServiceAccount: err = %v, want Forbidden", err)
	}
	if _, err := r.client.AppsV1().StatefulSets(r.ns).Get(r.ctx, "db", metav1.GetOptions{}); err != nil {
		t.Errorf("the StatefulSet is gone: %v", err)
	}
}

// TestLeaderElectionFailover runs two stsroller processes as deploy/'s
// ServiceAccount: only the leader deletes; kill -9 of the leader mid-rollout
// hands over within the lease duration, and the rollout completes without
// exceeding max-unavailable.
func TestLeaderElectionFailover(t *testing.T) {
	t.Parallel()
	if framework.Deployed() {
		t.Skip("needs two controller processes of its own")
	}
	r := newRollout(t, rolloutOptions{replicas: 8, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2"},
		noControllerYet: true})
	objs := applyDeployRBAC(t, r.client)
	leaderElectionRBAC(t, r.client, objs, r.ns)
	kc := serviceAccountKubeconfig(t, r.client)
	const lease = 4 * time.Second
	args := []string{"--leader-elect=true", "--leader-elect-namespace=" + r.ns,
		"--leader-elect-lease-duration=" + lease.String(), "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms"}
	a := framework.StartController(t, r.client, framework.ControllerOptions{Binary: binary(t), Namespace: r.ns, Kubeconfig: kc, Args: args, Name: "stsroller-a"})
	b := framework.StartController(t, r.client, framework.ControllerOptions{Binary: binary(t), Namespace: r.ns, Kubeconfig: kc, Args: args, Name: "stsroller-b"})
	var leader, standby *framework.Controller
	err := framework.Eventually(r.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
		la, lb := strings.Contains(a.Log(), "Became leader"), strings.Contains(b.Log(), "Became leader")
		switch {
		case la && lb:
			return fmt.Errorf("both processes lead")
		case la:
			leader, standby = a, b
		case lb:
			leader, standby = b, a
		default:
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.watch.SetHealthyAfter(2 * time.Second)
	r.watch.ResetPeak()
	rev := r.newRevision("2")
	r.waitDeletions(3)
	if strings.Contains(standby.Log(), "Removed pod") {
		t.Fatalf("the standby removed pods while the other process led")
	}
	killed := time.Now()
	leader.Kill()
	err = framework.Eventually(r.ctx, 3*lease, 100*time.Millisecond, func(context.Context) error {
		if !strings.Contains(standby.Log(), "Became leader") {
			return fmt.Errorf("the standby has not taken the lease")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the standby took over %s after the leader was killed", time.Since(killed).Round(100*time.Millisecond))
	r.waitRolledOut(rev, 8)
	r.checkEachOnceWithin(2, "across the failover")
}

// TestDeployAdmittedByRestrictedNamespace applies deploy/'s Deployment into its
// namespace, which enforces the restricted Pod Security Standard: its pods are
// admitted (kwok runs them; the image never executes here). A privileged pod in
// the same namespace is refused, so the check is live.
func TestDeployAdmittedByRestrictedNamespace(t *testing.T) {
	t.Parallel()
	client := framework.Client(t)
	objs := applyDeployRBAC(t, client)
	ctx := t.Context()
	ns, err := client.CoreV1().Namespaces().Get(ctx, deploy.Namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Fatalf("namespace %s enforces %q, want restricted", deploy.Namespace, got)
	}
	if !framework.Deployed() {
		for _, o := range objs {
			if d, ok := o.(*appsv1.Deployment); ok {
				if _, err := client.AppsV1().Deployments(d.Namespace).Create(ctx, d, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					_ = client.AppsV1().Deployments(d.Namespace).Delete(context.Background(), d.Name, metav1.DeleteOptions{})
				})
			}
		}
	}
	err = framework.Eventually(ctx, time.Minute, 250*time.Millisecond, func(ctx context.Context) error {
		d, err := client.AppsV1().Deployments(deploy.Namespace).Get(ctx, "stsroller", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.Replicas != *d.Spec.Replicas {
			return fmt.Errorf("%d of %d pods created (the namespace's policy may refuse them: kubectl -n %s get events)",
				d.Status.Replicas, *d.Spec.Replicas, deploy.Namespace)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "privileged-", Namespace: deploy.Namespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10",
			SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)}}}},
	}
	_, err = client.CoreV1().Pods(deploy.Namespace).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) {
		t.Errorf("a privileged pod in %s: err = %v, want Forbidden by the restricted policy", deploy.Namespace, err)
	}
}

var (
	pluginOnce sync.Once
	pluginBin  string
	pluginErr  error
)

func plugin(t testing.TB, args ...string) string {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stsroller-e2e-plugin-")
		if err != nil {
			pluginErr = err
			return
		}
		onExit(func() { os.RemoveAll(dir) })
		pluginBin, pluginErr = framework.Build(dir, "./cmd/kubectl-stsroller")
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	out, err := exec.Command(pluginBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl-stsroller %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPluginPlanNamesWhatTheControllerDeletes: pause with the plugin, roll a
// new revision (nothing happens), ask `plan`, resume with the plugin; the
// controller's first batch is exactly the pods plan named.
func TestPluginPlanNamesWhatTheControllerDeletes(t *testing.T) {
	t.Parallel()
	if framework.Deployed() {
		t.Skip("holds its own controller process while plan looks")
	}
	r := newRollout(t, rolloutOptions{replicas: 6, annotations: map[string]string{policy.AnnotationMaxUnavailable: "2"}})
	r.label("db-5", "stsroller.io/role", "leader")
	old := r.current().Status.UpdateRevision
	r.watch.SetBroken(func(p *corev1.Pod) bool {
		return p.Name == "db-2" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == old
	})
	r.watch.SetHealthyAfter(5 * time.Second) // the first batch stays the only one for a while
	plugin(t, "pause", "db", "-n", r.ns)
	if v := r.current().Annotations[policy.AnnotationPaused]; v != "true" {
		t.Fatalf("after kubectl stsroller pause, %s = %q", policy.AnnotationPaused, v)
	}
	rev := r.newRevision("2")
	r.noneReplaced(3 * time.Second)

	var plan struct {
		Deletions []struct{ Pod, Method string } `json:"deletions"`
	}
	// Plan as if resumed, with the controller held while plan looks.
	r.controller.Stop()
	r.patch(`{"metadata":{"annotations":{"stsroller.io/paused":"false"}}}`)
	out := plugin(t, "plan", "db", "-n", r.ns, "-o", "json")
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	var planned []string
	for _, d := range plan.Deletions {
		planned = append(planned, d.Pod+"/"+d.Method)
	}
	want := []string{"db-2/Delete", "db-4/Evict"}
	if !slices.Equal(planned, want) {
		t.Fatalf("plan = %v, want %v (unhealthy first, then the highest non-leader, max-unavailable 2)\n%s", planned, want, out)
	}
	if err := r.controller.Start(); err != nil {
		t.Fatal(err)
	}
	plugin(t, "resume", "db", "-n", r.ns)
	if _, ok := r.current().Annotations[policy.AnnotationPaused]; ok {
		t.Fatalf("after kubectl stsroller resume, %s is still set", policy.AnnotationPaused)
	}
	r.waitDeletions(2)
	first := names(r.watch.Deletions()[:2])
	slices.Sort(first)
	if !slices.Equal(first, []string{"db-2", "db-4"}) {
		t.Errorf("the controller's first batch = %v, plan said db-2, db-4", names(r.watch.Deletions()))
	}
	r.waitRolledOut(rev, 6)
	status := plugin(t, "status", "db", "-n", r.ns)
	if !strings.Contains(status, string(policy.PhaseComplete)) {
		t.Errorf("kubectl stsroller status does not say Complete:\n%s", status)
	}
}
