package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The chart, relative to this package.
const chartDir = "helm/stsroller"

// helmBinary finds helm: $STSROLLER_HELM, else $STSROLLER_BIN_DIR/helm (what
// `make test` sets after `hack/tools.sh build helm`), else helm on $PATH.
func helmBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("STSROLLER_HELM"); b != "" {
		return b
	}
	if d := os.Getenv("STSROLLER_BIN_DIR"); d != "" {
		if b := filepath.Join(d, "helm"); isExecutable(b) {
			return b
		}
	}
	if b, err := exec.LookPath("helm"); err == nil {
		return b
	}
	t.Skip("no helm binary: run `make test-unit` (it builds helm with hack/tools.sh), or set STSROLLER_HELM or STSROLLER_BIN_DIR")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// helmTemplate runs `helm template <release> helm/stsroller -n <ns> -f values`.
func helmTemplate(t *testing.T, release, namespace, values string) ([]byte, error) {
	t.Helper()
	helm := helmBinary(t)
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helm, "template", release, chartDir, "--namespace", namespace, "--values", f)
	// No repositories, no plugins, no state of the user's.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm template: %v\n%s", err, stderr.String())
	}
	return out, nil
}

// chart renders the chart with values and sorts the objects by type.
func chart(t *testing.T, release, namespace, values string) *rendered {
	t.Helper()
	out, err := helmTemplate(t, release, namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatalf("decoding helm template's output: %v\n%s", err, out)
	}
	return classify(t, objs)
}

// surface is what must not drift between deploy/ and the chart: what the
// controller may call, how it runs, its flags and its ports.
type surface struct {
	ClusterRole, LeaderRole       []rule
	ClusterRoleName               string
	Bindings                      map[string][]rbacv1.Subject // kind/name: subjects
	Namespace, ServiceAccountName string
	Replicas                      *int32
	TerminationGrace              *int64
	PodSecurity                   *corev1.PodSecurityContext
	Image                         string
	Args                          []string
	Env                           []corev1.EnvVar
	Ports                         []corev1.ContainerPort
	Liveness, Readiness           *corev1.Probe
	Resources                     corev1.ResourceRequirements
	Security                      *corev1.SecurityContext
	ServiceName                   string
	ServicePorts                  []corev1.ServicePort
	PDBMaxUnavailable             *intstr.IntOrString
	AdmissionPolicyName           string
	AdmissionPolicy               *admissionregistrationv1.ValidatingAdmissionPolicySpec
	AdmissionPolicyBinding        *admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec
}

func surfaceOf(t *testing.T, r *rendered) surface {
	t.Helper()
	if len(r.clusterRoles) != 1 || len(r.roles) != 1 || len(r.deployments) != 1 || len(r.services) != 1 || len(r.budgets) != 1 {
		t.Fatalf("want one ClusterRole, Role, Deployment, Service and PodDisruptionBudget, got %s", r.counts())
	}
	d := r.deployments[0]
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	s := surface{
		ClusterRole:        flatten(r.clusterRoles[0].Rules),
		LeaderRole:         flatten(r.roles[0].Rules),
		ClusterRoleName:    r.clusterRoles[0].Name,
		Bindings:           map[string][]rbacv1.Subject{},
		Namespace:          d.Namespace,
		ServiceAccountName: d.Spec.Template.Spec.ServiceAccountName,
		Replicas:           d.Spec.Replicas,
		TerminationGrace:   d.Spec.Template.Spec.TerminationGracePeriodSeconds,
		PodSecurity:        d.Spec.Template.Spec.SecurityContext,
		Image:              c.Image,
		Args:               c.Args,
		Env:                c.Env,
		Ports:              c.Ports,
		Liveness:           c.LivenessProbe,
		Readiness:          c.ReadinessProbe,
		Resources:          c.Resources,
		Security:           c.SecurityContext,
		ServiceName:        r.services[0].Name,
		ServicePorts:       r.services[0].Spec.Ports,
		PDBMaxUnavailable:  r.budgets[0].Spec.MaxUnavailable,
	}
	if len(r.policies) == 1 && len(r.policyBindings) == 1 {
		s.AdmissionPolicyName = r.policies[0].Name
		s.AdmissionPolicy = &r.policies[0].Spec
		s.AdmissionPolicyBinding = &r.policyBindings[0].Spec
	}
	for _, b := range r.clusterRoleBindings {
		s.Bindings["ClusterRoleBinding/"+b.Name+"->"+b.RoleRef.Kind+"/"+b.RoleRef.Name] = b.Subjects
	}
	for _, b := range r.roleBindings {
		s.Bindings["RoleBinding/"+b.Name+"->"+b.RoleRef.Kind+"/"+b.RoleRef.Name] = b.Subjects
	}
	return s
}

var quantities = cmp.Comparer(func(a, b resource.Quantity) bool { return a.Cmp(b) == 0 })

func TestChartRendersWhatDeployRenders(t *testing.T) {
	want := surfaceOf(t, render(t, Options{}))
	h := chart(t, "stsroller", Namespace, "")
	got := surfaceOf(t, h)
	if diff := cmp.Diff(want, got, quantities); diff != "" {
		t.Errorf("helm template with the default values drifts from deploy/ (-deploy +chart):\n%s", diff)
	}
	// And both hold what the code calls (deploy_test.go's table).
	if diff := cmp.Diff(wantClusterRole, got.ClusterRole); diff != "" {
		t.Errorf("chart ClusterRole rules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantLeaderRole, got.LeaderRole); diff != "" {
		t.Errorf("chart leader-election Role rules (-want +got):\n%s", diff)
	}
	if len(h.namespaces) != 0 || len(h.other) != 0 {
		t.Errorf("the chart renders objects beyond deploy/'s (Helm creates the namespace): %s", h.counts())
	}
	checkSelects(t, h)
	checkAdmissionPolicy(t, h, AdmissionPolicy)
}

// checkSelects: the ServiceAccount exists where the pods run; the selectors
// of the Deployment, Service, PDB and anti-affinity select the pods.
func checkSelects(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployments[0]
	pods := labels.Set(d.Spec.Template.Labels)
	if len(r.serviceAccounts) != 1 || r.serviceAccounts[0].Name != d.Spec.Template.Spec.ServiceAccountName ||
		r.serviceAccounts[0].Namespace != d.Namespace {
		t.Errorf("the Deployment runs as %s/%s; ServiceAccounts: %v", d.Namespace, d.Spec.Template.Spec.ServiceAccountName, r.serviceAccounts)
	}
	sel := func(what string, ls *metav1.LabelSelector) {
		s, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil || s.Empty() || !s.Matches(pods) {
			t.Errorf("%s selector %v does not select the pods %v", what, ls, pods)
		}
	}
	sel("Deployment", d.Spec.Selector)
	sel("Service", &metav1.LabelSelector{MatchLabels: r.services[0].Spec.Selector})
	for _, b := range r.budgets {
		sel("PodDisruptionBudget", b.Spec.Selector)
	}
	if a := d.Spec.Template.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			sel("anti-affinity", term.PodAffinityTerm.LabelSelector)
		}
	}
	// Other releases' pods must not be selected: the instance label.
	if pods["app.kubernetes.io/instance"] == "" || r.services[0].Spec.Selector["app.kubernetes.io/instance"] == "" {
		t.Errorf("the pods and the Service must carry app.kubernetes.io/instance, got %v and %v", pods, r.services[0].Spec.Selector)
	}
}

func container(t *testing.T, r *rendered) corev1.Container {
	t.Helper()
	if len(r.deployments) != 1 || len(r.deployments[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one Deployment with one container, got %s", r.counts())
	}
	return r.deployments[0].Spec.Template.Spec.Containers[0]
}

func TestChartValues(t *testing.T) {
	defaultArgs := []string{"--leader-elect=true", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081"}
	for _, tc := range []struct {
		name, release, values string
		check                 func(t *testing.T, r *rendered)
	}{{
		name:   "image tag",
		values: "image: {repository: registry.example.com:5000/team/stsroller, tag: v0.1.0}",
		check: func(t *testing.T, r *rendered) {
			if got := container(t, r).Image; got != "registry.example.com:5000/team/stsroller:v0.1.0" {
				t.Errorf("image %q", got)
			}
		},
	}, {
		name:   "image digest wins over tag",
		values: "image: {repository: stsroller, tag: v1, digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}",
		check: func(t *testing.T, r *rendered) {
			if got := container(t, r).Image; got != "stsroller@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" {
				t.Errorf("image %q", got)
			}
		},
	}, {
		name:   "replicas",
		values: "replicas: 3",
		check: func(t *testing.T, r *rendered) {
			if got := r.deployments[0].Spec.Replicas; got == nil || *got != 3 {
				t.Errorf("replicas %v, want 3", got)
			}
		},
	}, {
		name:   "resources",
		values: "resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: '1', memory: 512Mi}}",
		check: func(t *testing.T, r *rendered) {
			want := corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("512Mi")},
			}
			if diff := cmp.Diff(want, container(t, r).Resources, quantities); diff != "" {
				t.Errorf("resources (-want +got):\n%s", diff)
			}
		},
	}, {
		name:   "one namespace: a Role there instead of the ClusterRole",
		values: "watchNamespace: databases",
		check: func(t *testing.T, r *rendered) {
			if len(r.clusterRoles)+len(r.clusterRoleBindings) != 0 {
				t.Errorf("watching one namespace needs no cluster-wide RBAC, got %s", r.counts())
			}
			if got := container(t, r).Args; !slices.Contains(got, "--namespace=databases") {
				t.Errorf("args %v lack --namespace=databases", got)
			}
			var scoped *rbacv1.Role
			for _, ro := range r.roles {
				if ro.Namespace == "databases" {
					scoped = ro
				} else if ro.Namespace != Namespace || ro.Name != "stsroller-leader-election" {
					t.Errorf("unexpected Role %s/%s", ro.Namespace, ro.Name)
				}
			}
			if scoped == nil {
				t.Fatalf("no Role in namespace databases: %s", r.counts())
			}
			if diff := cmp.Diff(wantClusterRole, flatten(scoped.Rules)); diff != "" {
				t.Errorf("the namespace's Role (-want the ClusterRole's rules +got):\n%s", diff)
			}
			var bound bool
			for _, b := range r.roleBindings {
				if b.Namespace == "databases" {
					bound = b.RoleRef == (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: scoped.Name}) &&
						cmp.Equal(b.Subjects, []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: ServiceAccount, Namespace: Namespace}})
				}
			}
			if !bound {
				t.Errorf("no RoleBinding in databases binds Role %s to %s/%s", scoped.Name, Namespace, ServiceAccount)
			}
		},
	}, {
		name:   "DNS servers",
		values: "dnsServers: ['10.0.0.53:53', 'ns2.example.com:53']",
		check: func(t *testing.T, r *rendered) {
			want := append(slices.Clone(defaultArgs), "--dns-servers=10.0.0.53:53,ns2.example.com:53")
			if diff := cmp.Diff(want, container(t, r).Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		},
	}, {
		name:   "JSON logs and extra args",
		values: "logFormat: json\nextraArgs: ['-v=2', '--workers=8']",
		check: func(t *testing.T, r *rendered) {
			want := append(slices.Clone(defaultArgs), "--logging-format=json", "-v=2", "--workers=8")
			if diff := cmp.Diff(want, container(t, r).Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		},
	}, {
		name:   "lease name: the flag and the Role agree",
		values: "leaderElection: {leaseName: db-roller}",
		check: func(t *testing.T, r *rendered) {
			if got := container(t, r).Args; !slices.Contains(got, "--leader-elect-name=db-roller") {
				t.Errorf("args %v lack --leader-elect-name=db-roller", got)
			}
			want := []rule{
				{Group: "coordination.k8s.io", Resource: "leases", Verbs: "create"},
				{Group: "coordination.k8s.io", Resource: "leases", Verbs: "get,update"}, // rollout locks
				{Group: "coordination.k8s.io", Resource: "leases", Names: "db-roller", Verbs: "get,update"},
			}
			if diff := cmp.Diff(want, flatten(r.roles[0].Rules)); diff != "" {
				t.Errorf("leader-election Role (-want +got):\n%s", diff)
			}
		},
	}, {
		name:   "no leader election",
		values: "replicas: 1\nleaderElection: {enabled: false}",
		check: func(t *testing.T, r *rendered) {
			if got := container(t, r).Args; !slices.Contains(got, "--leader-elect=false") {
				t.Errorf("args %v lack --leader-elect=false", got)
			}
			if len(r.roles)+len(r.roleBindings) != 0 {
				t.Errorf("without leader election no Lease Role is needed, got %s", r.counts())
			}
		},
	}, {
		name:   "no PodDisruptionBudget",
		values: "podDisruptionBudget: {enabled: false}",
		check: func(t *testing.T, r *rendered) {
			if len(r.budgets) != 0 {
				t.Errorf("got %d PodDisruptionBudgets", len(r.budgets))
			}
		},
	}, {
		name:   "no admission policy",
		values: "admissionPolicy: {enabled: false}",
		check: func(t *testing.T, r *rendered) {
			if len(r.policies)+len(r.policyBindings) != 0 {
				t.Errorf("admissionPolicy.enabled false, got %s", r.counts())
			}
		},
	}, {
		name:   "one namespace: the admission policy confines the release's ServiceAccount",
		values: "watchNamespace: databases",
		check: func(t *testing.T, r *rendered) {
			checkAdmissionPolicy(t, r, AdmissionPolicy)
		},
	}, {
		name:    "another release name and namespace",
		release: "prod",
		values:  "",
		check: func(t *testing.T, r *rendered) {
			checkSelects(t, r)
			if got := r.deployments[0].Name; got != "prod-stsroller" {
				t.Errorf("Deployment %q, want prod-stsroller", got)
			}
			crb := r.clusterRoleBindings[0]
			want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prod-stsroller", Namespace: "ops"}}
			if diff := cmp.Diff(want, crb.Subjects); diff != "" || crb.RoleRef.Name != r.clusterRoles[0].Name {
				t.Errorf("ClusterRoleBinding %s -> %s, subjects (-want +got):\n%s", crb.Name, crb.RoleRef.Name, diff)
			}
			// The policy matches prod-stsroller in ops (the Deployment's).
			checkAdmissionPolicy(t, r, "prod-stsroller-own-fields")
			for _, o := range []metav1.Object{r.deployments[0], r.services[0], r.roles[0], r.roleBindings[0], r.serviceAccounts[0], r.budgets[0]} {
				if o.GetNamespace() != "ops" {
					t.Errorf("%s in namespace %q, want the release's, ops", o.GetName(), o.GetNamespace())
				}
			}
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			release, ns := "stsroller", Namespace
			if tc.release != "" {
				release, ns = tc.release, "ops"
			}
			tc.check(t, chart(t, release, ns, tc.values))
		})
	}
}

func TestChartServiceMonitor(t *testing.T) {
	off := chart(t, "stsroller", Namespace, "")
	if len(off.other) != 0 {
		t.Errorf("the ServiceMonitor must be off by default, got %d unknown objects", len(off.other))
	}
	r := chart(t, "stsroller", Namespace, "serviceMonitor: {enabled: true, interval: 15s, labels: {release: kube-prometheus}}")
	if len(r.other) != 1 || r.other[0].GetKind() != "ServiceMonitor" || r.other[0].GetAPIVersion() != "monitoring.coreos.com/v1" {
		t.Fatalf("want one monitoring.coreos.com/v1 ServiceMonitor, got %v", r.other)
	}
	sm := r.other[0]
	if sm.GetNamespace() != Namespace || sm.GetLabels()["release"] != "kube-prometheus" {
		t.Errorf("ServiceMonitor %s/%s labels %v", sm.GetNamespace(), sm.GetName(), sm.GetLabels())
	}
	matchLabels, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(matchLabels) == 0 || !labels.SelectorFromSet(matchLabels).Matches(labels.Set(r.services[0].Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", matchLabels, r.services[0].Labels)
	}
	// The endpoint is deploy/overlays/servicemonitor's, with the interval set.
	k := render(t, Options{ServiceMonitor: true})
	want, _, _ := unstructured.NestedSlice(k.other[0].Object, "spec", "endpoints")
	want[0].(map[string]any)["interval"] = "15s"
	got, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ServiceMonitor endpoints (-deploy/ with interval 15s +chart):\n%s", diff)
	}
}

func TestChartRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ values, want string }{
		{"logFormat: xml", "logFormat"},
		{"replicas: 2\nleaderElection: {enabled: false}", "leaderElection.enabled"},
		{"image: {digest: latest}", "digest"},
		{"rolloutLock: {kubeconfigSecret: coordination}", "rolloutLock.clusterName"},
		{"rolloutLock: {ttl: ten}", "ttl"},
	} {
		if _, err := helmTemplate(t, "stsroller", Namespace, tc.values); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: want an error about %s, got %v", tc.values, tc.want, err)
		}
	}
}

func TestChartLints(t *testing.T) {
	cmd := exec.Command(helmBinary(t), "lint", "--strict", chartDir)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("helm lint --strict: %v\n%s", err, out)
	}
}

// TestChartRolloutLock: rolloutLock mounts the user's Secret where
// deploy/overlays/rollout-lock does, with the same flags (the values in
// place of the overlay's ConfigMap), and is off by default.
func TestChartRolloutLock(t *testing.T) {
	off := chart(t, "stsroller", Namespace, "")
	if c := container(t, off); len(c.VolumeMounts) != 0 || len(off.deployments[0].Spec.Template.Spec.Volumes) != 0 || strings.Contains(strings.Join(c.Args, " "), "lock") {
		t.Errorf("rolloutLock must be off by default: args %q, mounts %v", c.Args, c.VolumeMounts)
	}
	r := chart(t, "stsroller", Namespace, "rolloutLock: {kubeconfigSecret: coordination, clusterName: eu-west, namespace: team-locks, ttl: 2m}")
	k := render(t, Options{RolloutLock: true})
	got, want := r.deployments[0].Spec.Template.Spec, k.deployments[0].Spec.Template.Spec
	want.Volumes[0].Secret.SecretName = "coordination"
	if diff := cmp.Diff(want.Volumes, got.Volumes); diff != "" {
		t.Errorf("volumes (-overlay +chart):\n%s", diff)
	}
	if diff := cmp.Diff(want.Containers[0].VolumeMounts, got.Containers[0].VolumeMounts); diff != "" {
		t.Errorf("mounts (-overlay +chart):\n%s", diff)
	}
	var lockArgs []string
	for _, a := range got.Containers[0].Args {
		if strings.HasPrefix(a, "--lock-") || strings.HasPrefix(a, "--cluster-name") {
			lockArgs = append(lockArgs, a)
		}
	}
	wantArgs := []string{"--lock-kubeconfig=/etc/stsroller/lock/kubeconfig", "--cluster-name=eu-west", "--lock-namespace=team-locks", "--lock-ttl=2m"}
	if diff := cmp.Diff(wantArgs, lockArgs); diff != "" {
		t.Errorf("lock flags (-want +chart):\n%s", diff)
	}
}
