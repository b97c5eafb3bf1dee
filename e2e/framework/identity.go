package framework

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/invariants"
)

// The local cluster's audit log and stsroller's own identity, which TestMain
// passes to the tests through the environment.
const (
	// EnvAuditLog is the kube-apiserver's audit log (invariants.EnvAuditLog).
	EnvAuditLog = invariants.EnvAuditLog
	// EnvControllerKubeconfig is the kubeconfig of stsroller's own identity
	// (cluster.Cluster.ControllerKubeconfig), and EnvControllerUser its
	// user name.
	EnvControllerKubeconfig = "STSROLLER_E2E_CONTROLLER_KUBECONFIG"
	EnvControllerUser       = "STSROLLER_E2E_CONTROLLER_USER"
)

// controllerBinding binds the controller's user to deploy/'s ClusterRole.
const controllerBinding = "stsroller-e2e-controller"

var (
	identityOnce sync.Once
	identityErr  error
)

// ControllerIdentity returns the kubeconfig of stsroller's own identity, a
// user bound to deploy/'s ClusterRole and nothing else, and the identity the
// invariants checker knows its requests by (that user and cmd/stsroller's
// user agent). The first call creates the ClusterRole, if missing, and the
// binding. ok is false when the cluster has no such identity (not the local
// cluster of e2e/cluster): run as $KUBECONFIG then, known by the user agent.
func ControllerIdentity(ctx context.Context, client kubernetes.Interface) (kubeconfig string, id invariants.Identity, ok bool, err error) {
	kubeconfig, user := os.Getenv(EnvControllerKubeconfig), os.Getenv(EnvControllerUser)
	if kubeconfig == "" || user == "" {
		return "", invariants.DefaultIdentity, false, nil
	}
	identityOnce.Do(func() { identityErr = bindController(ctx, client, kubeconfig, user) })
	if identityErr != nil {
		return "", invariants.Identity{}, false, identityErr
	}
	return kubeconfig, invariants.Identity{Username: user, UserAgent: invariants.DefaultIdentity.UserAgent}, true, nil
}

func bindController(ctx context.Context, client kubernetes.Interface, kubeconfig, user string) error {
	objs, err := deploy.Objects()
	if err != nil {
		return err
	}
	var role *rbacv1.ClusterRole
	for _, o := range objs {
		if r, isRole := o.(*rbacv1.ClusterRole); isRole {
			role = r
		}
	}
	if role == nil {
		return fmt.Errorf("deploy/ has no ClusterRole")
	}
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, role.DeepCopy(), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating deploy/'s ClusterRole: %w", err)
	}
	b := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: controllerBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("binding %s to ClusterRole %s: %w", user, role.Name, err)
	}
	// The authorizer learns of the binding through a watch: wait for it.
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	as, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return Eventually(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) error {
		_, err := as.CoreV1().Pods(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{Limit: 1})
		return err
	})
}
