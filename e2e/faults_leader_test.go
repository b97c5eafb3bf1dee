//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// TestFaultLeaderElection: two leader-elected stsroller instances, each a
// ServiceAccount of its own with deploy/'s ClusterRole and leader-election
// Role, each behind a fault proxy of its own (5% of requests fail, 20% in
// soak, the Lease's renewals too, so a leader may lose its Lease and exit),
// and the holder of the Lease killed now and then. The audit log must show
// every removal and drain request from the instance whose write of the Lease
// came last (invariants.Options.Lease): one holder at a time.
func TestFaultLeaderElection(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{instances: 2, faultRate: pick(0.05, 0.2)})
	n := pick[int32](12, 30)
	e.create(faultSet(e.ns, "db", n, map[string]string{policy.AnnotationMaxUnavailable: "3"}))
	e.waitReady("db", int(n))
	kills := 0
	for range pick(1, 3) {
		e.roll("db")
		for i := 0; e.check.Complete("db") != nil; i++ {
			time.Sleep(jitter(time.Second, 3*time.Second))
			e.restartExited()
			if i%2 == 0 && kills < pick(2, 8) {
				if c := e.holder(); c != nil {
					c.Kill()
					kills++
					time.Sleep(jitter(0, time.Second))
					if err := c.Start(); err != nil {
						t.Fatal(err)
					}
					e.restarts++
				}
			}
			if i > 200 {
				t.Fatalf("db did not complete: %v", e.check.Complete("db"))
			}
		}
		e.waitComplete(faultTimeout, "db")
	}
	if kills == 0 {
		t.Errorf("no holder of the Lease was killed: the test checked no handover")
	}
	if st := e.check.Stats(); st.Removals == 0 {
		t.Errorf("the checker judged no removal of stsroller's")
	}
}

// restartExited starts again the instances that exited on their own (a lost
// Lease).
func (e *faultEnv) restartExited() {
	for _, c := range e.ctrls {
		if c.Exited() {
			e.t.Logf("%s exited; starting it again", c.Name())
			if err := c.Start(); err != nil {
				e.t.Fatal(err)
			}
			e.restarts++
		}
	}
}

// holder is the instance that holds the Lease now, by the identity it logged
// on becoming leader; nil if none.
func (e *faultEnv) holder() *framework.Controller {
	l, err := e.client.CoordinationV1().Leases(e.ns).Get(e.ctx, electionLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return nil
	}
	for _, c := range e.ctrls {
		if strings.Contains(c.Log(), *l.Spec.HolderIdentity) {
			return c
		}
	}
	return nil
}

// instanceIdentities makes n ServiceAccounts in ns, each bound to deploy/'s
// ClusterRole and to a copy of its leader-election Role in ns, and returns a
// kubeconfig for each, with a token from the TokenRequest API.
func instanceIdentities(t *testing.T, client kubernetes.Interface, ns string, n int) []string {
	t.Helper()
	ctx := t.Context()
	objs, err := deploy.Objects()
	if err != nil {
		t.Fatal(err)
	}
	var clusterRole, role *rbacv1.ClusterRole
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			clusterRole = o
		case *rbacv1.Role:
			role = &rbacv1.ClusterRole{Rules: o.Rules}
		}
	}
	if clusterRole == nil || role == nil {
		t.Fatalf("deploy/ has no ClusterRole or no leader-election Role")
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, clusterRole.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "stsroller-leader-election"},
		Rules: role.Rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var subjects []rbacv1.Subject
	for i := range n {
		subjects = append(subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: fmt.Sprintf("stsroller-%c", 'a'+i)})
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "stsroller-leader-election"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "stsroller-leader-election"},
		Subjects: subjects}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := "stsroller-e2e-" + ns
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: binding},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole.Name},
		Subjects: subjects}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.RbacV1().ClusterRoleBindings().Delete(context.Background(), binding, metav1.DeleteOptions{})
	})
	var paths []string
	for _, s := range subjects {
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.Name}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		path := tokenKubeconfig(t, client, ns, s.Name)
		// The authorizer learns of the bindings through a watch: wait for it.
		asCfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		as, err := kubernetes.NewForConfig(asCfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := framework.Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
			if _, err := as.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
				return err
			}
			_, err := as.CoordinationV1().Leases(ns).Get(ctx, electionLease, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		}); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		paths = append(paths, path)
	}
	return paths
}
