package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	psapi "k8s.io/pod-security-admission/api"
	pspolicy "k8s.io/pod-security-admission/policy"
)

// rule is one (apiGroup, resource) of a role with its verbs, sorted.
type rule struct {
	Group, Resource string
	Names           string // resourceNames, comma-separated
	Verbs           string // sorted, comma-separated
}

// wantClusterRole is every API call stsroller makes outside its own namespace;
// rbac.yaml names the code behind each.
var wantClusterRole = []rule{
	{Group: "", Resource: "events", Verbs: "create,patch"},
	{Group: "", Resource: "pods", Verbs: "delete,get,list,patch,watch"},
	{Group: "", Resource: "pods/eviction", Verbs: "create"},
	{Group: "", Resource: "pods/status", Verbs: "patch"},
	{Group: "", Resource: "services", Verbs: "list,watch"},
	{Group: "apps", Resource: "statefulsets", Verbs: "get,list,patch,watch"},
	{Group: "policy", Resource: "poddisruptionbudgets", Verbs: "list,watch"},
}

// wantLeaderRole is resourcelock.LeaseLock's Get, Create and Update.
var wantLeaderRole = []rule{
	{Group: "coordination.k8s.io", Resource: "leases", Verbs: "create"},
	// The rollout locks' Leases, stsroller-lock-<name> (rollout/lock.go).
	{Group: "coordination.k8s.io", Resource: "leases", Verbs: "get,update"},
	{Group: "coordination.k8s.io", Resource: "leases", Names: "stsroller", Verbs: "get,update"},
}

// flatten lists a role's rules one (group, resource) at a time, sorted.
func flatten(rules []rbacv1.PolicyRule) []rule {
	var out []rule
	for _, r := range rules {
		verbs := slices.Clone(r.Verbs)
		slices.Sort(verbs)
		names := slices.Clone(r.ResourceNames)
		slices.Sort(names)
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				out = append(out, rule{Group: g, Resource: res, Names: strings.Join(names, ","), Verbs: strings.Join(verbs, ",")})
			}
		}
	}
	slices.SortFunc(out, func(a, b rule) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	return out
}

// rendered is the base, sorted by type.
type rendered struct {
	namespaces          []*corev1.Namespace
	serviceAccounts     []*corev1.ServiceAccount
	clusterRoles        []*rbacv1.ClusterRole
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	roles               []*rbacv1.Role
	roleBindings        []*rbacv1.RoleBinding
	deployments         []*appsv1.Deployment
	services            []*corev1.Service
	budgets             []*policyv1.PodDisruptionBudget
	policies            []*admissionregistrationv1.ValidatingAdmissionPolicy
	policyBindings      []*admissionregistrationv1.ValidatingAdmissionPolicyBinding
	configMaps          []*corev1.ConfigMap
	other               []*unstructured.Unstructured
}

func render(t *testing.T, opts Options) *rendered {
	t.Helper()
	objs, err := ObjectsWith(opts)
	if err != nil {
		t.Fatalf("rendering deploy/ with %+v: %v", opts, err)
	}
	r := classify(t, objs)
	if len(r.namespaces) != 1 || len(r.serviceAccounts) != 1 || len(r.clusterRoles) != 1 ||
		len(r.clusterRoleBindings) != 1 || len(r.roles) != 1 || len(r.roleBindings) != 1 ||
		len(r.deployments) != 1 || len(r.services) != 1 || len(r.budgets) != 1 ||
		len(r.policies) != 1 || len(r.policyBindings) != 1 {
		t.Fatalf("deploy/ should hold one of each object, got %s", r.counts())
	}
	if n := len(r.configMaps); opts.RolloutLock != (n == 1) || n > 1 {
		t.Fatalf("%d ConfigMaps: only overlays/rollout-lock has one", n)
	}
	if !opts.ServiceMonitor && len(r.other) > 0 {
		t.Errorf("the base holds objects of kinds client-go does not know: %v", r.other)
	}
	return r
}

// classify sorts decoded objects by type (deploy/ or the Helm chart).
func classify(t *testing.T, objs []runtime.Object) *rendered {
	t.Helper()
	r := &rendered{}
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			r.namespaces = append(r.namespaces, o)
		case *corev1.ServiceAccount:
			r.serviceAccounts = append(r.serviceAccounts, o)
		case *rbacv1.ClusterRole:
			r.clusterRoles = append(r.clusterRoles, o)
		case *rbacv1.ClusterRoleBinding:
			r.clusterRoleBindings = append(r.clusterRoleBindings, o)
		case *rbacv1.Role:
			r.roles = append(r.roles, o)
		case *rbacv1.RoleBinding:
			r.roleBindings = append(r.roleBindings, o)
		case *appsv1.Deployment:
			r.deployments = append(r.deployments, o)
		case *corev1.Service:
			r.services = append(r.services, o)
		case *policyv1.PodDisruptionBudget:
			r.budgets = append(r.budgets, o)
		case *admissionregistrationv1.ValidatingAdmissionPolicy:
			r.policies = append(r.policies, o)
		case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
			r.policyBindings = append(r.policyBindings, o)
		case *corev1.ConfigMap:
			r.configMaps = append(r.configMaps, o)
		case *unstructured.Unstructured:
			r.other = append(r.other, o)
		default:
			t.Errorf("unexpected object %T", o)
		}
	}
	return r
}

func (r *rendered) counts() string {
	return fmt.Sprintf("%d Namespace, %d ServiceAccount, %d ClusterRole, %d ClusterRoleBinding, %d Role, %d RoleBinding, %d Deployment, %d Service, %d PodDisruptionBudget, %d ValidatingAdmissionPolicy, %d ValidatingAdmissionPolicyBinding, %d other",
		len(r.namespaces), len(r.serviceAccounts), len(r.clusterRoles), len(r.clusterRoleBindings),
		len(r.roles), len(r.roleBindings), len(r.deployments), len(r.services), len(r.budgets),
		len(r.policies), len(r.policyBindings), len(r.other))
}

func TestClusterRoleIsExactlyWhatTheCodeCalls(t *testing.T) {
	r := render(t, Options{})
	if diff := cmp.Diff(wantClusterRole, flatten(r.clusterRoles[0].Rules)); diff != "" {
		t.Errorf("ClusterRole rules (-want +got):\n%s", diff)
	}
	if r.clusterRoles[0].AggregationRule != nil {
		t.Errorf("the ClusterRole must not aggregate other roles")
	}
	if diff := cmp.Diff(wantLeaderRole, flatten(r.roles[0].Rules)); diff != "" {
		t.Errorf("leader-election Role rules (-want +got):\n%s", diff)
	}
}

func TestNoWildcardsNoSecrets(t *testing.T) {
	r := render(t, Options{})
	check := func(kind string, rules []rbacv1.PolicyRule) {
		for i, ru := range rules {
			for _, field := range [][]string{ru.APIGroups, ru.Resources, ru.Verbs, ru.ResourceNames} {
				for _, v := range field {
					if strings.Contains(v, "*") {
						t.Errorf("%s rule %d has a wildcard: %q", kind, i, v)
					}
				}
			}
			if len(ru.NonResourceURLs) > 0 {
				t.Errorf("%s rule %d grants non-resource URLs %v", kind, i, ru.NonResourceURLs)
			}
			for _, res := range ru.Resources {
				if res == "secrets" || strings.HasPrefix(res, "secrets/") {
					t.Errorf("%s rule %d grants access to Secrets", kind, i)
				}
			}
			for _, v := range ru.Verbs {
				if v == "escalate" || v == "bind" || v == "impersonate" {
					t.Errorf("%s rule %d grants %q", kind, i, v)
				}
			}
		}
	}
	check("ClusterRole", r.clusterRoles[0].Rules)
	check("Role", r.roles[0].Rules)
}

func TestBindingsBindTheDeploymentsServiceAccount(t *testing.T) {
	for _, opts := range []Options{{}, {Namespace: "stsroller-e2e"}} {
		t.Run(fmt.Sprintf("%+v", opts), func(t *testing.T) {
			r := render(t, opts)
			wantNS := Namespace
			if opts.Namespace != "" {
				wantNS = opts.Namespace
			}
			d := r.deployments[0]
			sa := r.serviceAccounts[0]
			if d.Spec.Template.Spec.ServiceAccountName != sa.Name || d.Namespace != sa.Namespace {
				t.Errorf("the Deployment runs as %s/%s, but the ServiceAccount is %s/%s",
					d.Namespace, d.Spec.Template.Spec.ServiceAccountName, sa.Namespace, sa.Name)
			}
			if sa.Name != ServiceAccount {
				t.Errorf("ServiceAccount %q, want %q", sa.Name, ServiceAccount)
			}
			if d.Spec.Template.Spec.AutomountServiceAccountToken != nil && !*d.Spec.Template.Spec.AutomountServiceAccountToken {
				t.Errorf("the Deployment must mount its ServiceAccount token to reach the API")
			}
			want := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: sa.Namespace}}

			crb := r.clusterRoleBindings[0]
			if diff := cmp.Diff(want, crb.Subjects); diff != "" {
				t.Errorf("ClusterRoleBinding subjects (-want +got):\n%s", diff)
			}
			if got := crb.RoleRef; got != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r.clusterRoles[0].Name}) {
				t.Errorf("ClusterRoleBinding roleRef %+v does not name ClusterRole %s", got, r.clusterRoles[0].Name)
			}
			rb := r.roleBindings[0]
			if diff := cmp.Diff(want, rb.Subjects); diff != "" {
				t.Errorf("RoleBinding subjects (-want +got):\n%s", diff)
			}
			if got := rb.RoleRef; got != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.roles[0].Name}) {
				t.Errorf("RoleBinding roleRef %+v does not name Role %s", got, r.roles[0].Name)
			}
			// Everything namespaced lives in the controller's namespace, where
			// the Lease is taken (POD_NAMESPACE).
			if r.namespaces[0].Name != wantNS {
				t.Errorf("Namespace %q, want %q", r.namespaces[0].Name, wantNS)
			}
			for _, m := range []metav1.Object{sa, r.roles[0], rb, d, r.services[0], r.budgets[0]} {
				if m.GetNamespace() != wantNS {
					t.Errorf("%s is in namespace %q, want %q", m.GetName(), m.GetNamespace(), wantNS)
				}
			}
		})
	}
}

func TestLeaseNameMatchesTheRole(t *testing.T) {
	r := render(t, Options{})
	// cmd/stsroller's --leader-elect-name defaults to "stsroller".
	lease := "stsroller"
	for _, a := range r.deployments[0].Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--leader-elect-name="); ok {
			lease = v
		}
	}
	for _, ru := range r.roles[0].Rules {
		if len(ru.ResourceNames) > 0 && !slices.Contains(ru.ResourceNames, lease) {
			t.Errorf("the Role grants %v on Leases %v, but the controller takes Lease %q", ru.Verbs, ru.ResourceNames, lease)
		}
	}
}

func TestDeploymentIsRestricted(t *testing.T) {
	r := render(t, Options{})
	d := r.deployments[0]
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	spec := d.Spec.Template.Spec
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want 30", spec.TerminationGracePeriodSeconds)
	}
	if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("the pod's securityContext must set runAsNonRoot: true")
	}
	containers := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for _, c := range containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", c.Name)
			continue
		}
		checks := []struct {
			what string
			ok   bool
		}{
			{"runAsNonRoot: true", sc.RunAsNonRoot != nil && *sc.RunAsNonRoot},
			{"runAsUser: 65532", sc.RunAsUser != nil && *sc.RunAsUser == 65532},
			{"readOnlyRootFilesystem: true", sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem},
			{"allowPrivilegeEscalation: false", sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
			{"capabilities.drop: [ALL]", sc.Capabilities != nil && slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(sc.Capabilities.Add) == 0},
			{"seccompProfile.type: RuntimeDefault", sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
			{"privileged unset or false", sc.Privileged == nil || !*sc.Privileged},
		}
		for _, ch := range checks {
			if !ch.ok {
				t.Errorf("container %s: securityContext must set %s", c.Name, ch.what)
			}
		}
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[res], c.Resources.Limits[res]
			if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
				t.Errorf("container %s: %s request %s and limit %s must both be set, request <= limit", c.Name, res, req.String(), lim.String())
			}
		}
	}
	if got := spec.Containers[0].Resources.Requests[corev1.ResourceMemory]; got.Cmp(resource.MustParse("32Mi")) < 0 {
		t.Errorf("memory request %s is too small for a controller with informers", got.String())
	}

	// The namespace enforces the restricted Pod Security Standard; the pods
	// must pass it, as the API server will check.
	ns := r.namespaces[0]
	if got := ns.Labels[psapi.EnforceLevelLabel]; got != string(psapi.LevelRestricted) {
		t.Errorf("namespace label %s = %q, want restricted", psapi.EnforceLevelLabel, got)
	}
	level, err := psapi.ParseLevel(ns.Labels[psapi.EnforceLevelLabel])
	if err != nil {
		t.Fatal(err)
	}
	version := psapi.LatestVersion()
	if v := ns.Labels[psapi.EnforceVersionLabel]; v != "" && v != "latest" {
		if version, err = psapi.ParseVersion(v); err != nil {
			t.Fatal(err)
		}
	}
	eval, err := pspolicy.NewEvaluator(pspolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := pspolicy.AggregateCheckResults(eval.EvaluatePod(psapi.LevelVersion{Level: level, Version: version},
		&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec))
	if !res.Allowed {
		t.Errorf("the Deployment's pods violate Pod Security %q: %s: %s", level, res.ForbiddenReason(), res.ForbiddenDetail())
	}
}

func TestDeploymentRunsTheController(t *testing.T) {
	r := render(t, Options{})
	d := r.deployments[0]
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != Image {
		t.Errorf("image %q, want %q", c.Image, Image)
	}
	if !slices.Contains(c.Args, "--leader-elect=true") {
		t.Errorf("args %v lack --leader-elect=true", c.Args)
	}
	var podNS bool
	for _, e := range c.Env {
		if e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.namespace" {
			podNS = true
		}
	}
	if !podNS {
		t.Errorf("env lacks POD_NAMESPACE from fieldRef metadata.namespace (the Lease's namespace)")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{"metrics": 8080, "health": 8081}, ports); diff != "" {
		t.Errorf("container ports (-want +got):\n%s", diff)
	}
	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an HTTP GET of %s", what, path)
			return
		}
		port := p.HTTPGet.Port.IntVal
		if p.HTTPGet.Port.StrVal != "" {
			port = ports[p.HTTPGet.Port.StrVal]
		}
		if p.HTTPGet.Path != path || port != 8081 {
			t.Errorf("%s probe: GET %s on port %d, want %s on 8081", what, p.HTTPGet.Path, port, path)
		}
	}
	probe("liveness", c.LivenessProbe, "/healthz")
	probe("readiness", c.ReadinessProbe, "/readyz")

	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Deployment's selector %v does not match its template's labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}

	svc := r.services[0]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 8080 ||
		(svc.Spec.Ports[0].TargetPort.StrVal != "metrics" && svc.Spec.Ports[0].TargetPort.IntVal != 8080) {
		t.Errorf("metrics Service ports %+v, want one named metrics, 8080 to the container's metrics port", svc.Spec.Ports)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("metrics Service selector %v does not select the Deployment's pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	pdbSel, err := metav1.LabelSelectorAsSelector(r.budgets[0].Spec.Selector)
	if err != nil || !pdbSel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PodDisruptionBudget does not select the Deployment's pods")
	}
}

func TestImageOverride(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"registry.example.com:5000/team/stsroller:v0.1.0", "registry.example.com:5000/team/stsroller:v0.1.0"},
		{"registry.example.com:5000/stsroller", "registry.example.com:5000/stsroller:latest"},
		{"stsroller@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"stsroller@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	} {
		r := render(t, Options{Image: tc.image})
		if got := r.deployments[0].Spec.Template.Spec.Containers[0].Image; got != tc.want {
			t.Errorf("Image %q: the Deployment runs %q, want %q", tc.image, got, tc.want)
		}
	}
}

// TestArgsAppended: Options.Args are appended to the container's arguments,
// which are otherwise kept, with the image override beside them.
func TestArgsAppended(t *testing.T) {
	base := render(t, Options{}).deployments[0].Spec.Template.Spec.Containers[0].Args
	extra := []string{"--dns-servers=10.201.0.1:5353,10.201.0.1:5354", "--dns-recheck-interval=5s"}
	c := render(t, Options{Image: "stsroller:e2e", Args: extra}).deployments[0].Spec.Template.Spec.Containers[0]
	if diff := cmp.Diff(append(slices.Clone(base), extra...), c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if c.Image != "stsroller:e2e" {
		t.Errorf("image %q, want stsroller:e2e", c.Image)
	}
}

func TestServiceMonitorOverlay(t *testing.T) {
	r := render(t, Options{ServiceMonitor: true})
	if len(r.other) != 1 {
		t.Fatalf("want one ServiceMonitor, got %d unknown objects", len(r.other))
	}
	sm := r.other[0]
	if sm.GetAPIVersion() != "monitoring.coreos.com/v1" || sm.GetKind() != "ServiceMonitor" || sm.GetNamespace() != Namespace {
		t.Errorf("got %s %s/%s, want a monitoring.coreos.com/v1 ServiceMonitor in %s", sm.GetAPIVersion(), sm.GetNamespace(), sm.GetName(), Namespace)
	}
	// No typed decoder for it here: check the fields it may use.
	spec, _, _ := unstructured.NestedMap(sm.Object, "spec")
	for k := range spec {
		if k != "selector" && k != "endpoints" && k != "namespaceSelector" {
			t.Errorf("ServiceMonitor spec.%s: not a field this test knows", k)
		}
	}
	matchLabels, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if len(matchLabels) == 0 || !labels.SelectorFromSet(matchLabels).Matches(labels.Set(r.services[0].Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service %v", matchLabels, r.services[0].Labels)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("want one endpoint, got %v", eps)
	}
	ep, _ := eps[0].(map[string]any)
	if ep["port"] != "metrics" || ep["path"] != "/metrics" {
		t.Errorf("endpoint %v, want port metrics, path /metrics", ep)
	}
	for k := range ep {
		if !slices.Contains([]string{"port", "path", "interval", "scrapeTimeout"}, k) {
			t.Errorf("ServiceMonitor endpoint %s: not a field this test knows", k)
		}
	}
}

func TestDecodeIsStrict(t *testing.T) {
	_, err := Decode([]byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\nautomountToken: false\n"))
	if err == nil || !strings.Contains(err.Error(), "automountToken") {
		t.Errorf("an unknown field must be an error, got %v", err)
	}
	objs, err := Decode([]byte("---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n---\n---\napiVersion: example.com/v1\nkind: Thing\nmetadata:\n  name: y\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("want 2 objects, got %d", len(objs))
	}
	if _, ok := objs[0].(*corev1.ServiceAccount); !ok {
		t.Errorf("want a *corev1.ServiceAccount, got %T", objs[0])
	}
	if u, ok := objs[1].(*unstructured.Unstructured); !ok || u.GetKind() != "Thing" {
		t.Errorf("want an unstructured Thing, got %T", objs[1])
	}
}

func TestBuildMatchesObjects(t *testing.T) {
	b, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(decoded) != len(objs) || len(objs) == 0 {
		t.Fatalf("Build gives %d objects, Objects %d", len(decoded), len(objs))
	}
}

// TestRolloutLockOverlay: overlays/rollout-lock is the base plus what a
// region needs for locks kept in a coordination cluster, and nothing more:
// the flags, each $(VAR) of theirs defined from the overlay's ConfigMap, and
// the user's Secret mounted read-only where --lock-kubeconfig points.
func TestRolloutLockOverlay(t *testing.T) {
	base, r := render(t, Options{}), render(t, Options{RolloutLock: true})
	b, c := base.deployments[0].Spec.Template.Spec, r.deployments[0].Spec.Template.Spec
	cm := r.configMaps[0]
	if cm.Namespace != Namespace || !strings.HasPrefix(cm.Name, LockConfig+"-") {
		t.Errorf("ConfigMap %s/%s, want %s/%s-<hash>", cm.Namespace, cm.Name, Namespace, LockConfig)
	}
	if cm.Data["cluster-name"] == "" || cm.Data["lock-namespace"] != LockNamespace || cm.Data["lock-ttl"] != "10m" {
		t.Errorf("ConfigMap data %v: want a cluster-name, lock-namespace %s, lock-ttl 10m", cm.Data, LockNamespace)
	}
	ctr := c.Containers[0]
	added, ok := strings.CutPrefix(strings.Join(ctr.Args, " "), strings.Join(b.Containers[0].Args, " ")+" ")
	want := "--lock-kubeconfig=/etc/stsroller/lock/kubeconfig --cluster-name=$(STSROLLER_CLUSTER_NAME) " +
		"--lock-namespace=$(STSROLLER_LOCK_NAMESPACE) --lock-ttl=$(STSROLLER_LOCK_TTL)"
	if !ok || added != want {
		t.Errorf("args %q: want the base's, then %q", ctr.Args, want)
	}
	// The kubelet expands $(VAR) only for variables defined before: each
	// comes from a key of the ConfigMap that exists.
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	for v, key := range map[string]string{"STSROLLER_CLUSTER_NAME": "cluster-name", "STSROLLER_LOCK_NAMESPACE": "lock-namespace", "STSROLLER_LOCK_TTL": "lock-ttl"} {
		e, ok := env[v]
		if !ok || e.ValueFrom == nil || e.ValueFrom.ConfigMapKeyRef == nil || e.ValueFrom.ConfigMapKeyRef.Name != cm.Name || e.ValueFrom.ConfigMapKeyRef.Key != key {
			t.Errorf("env %s = %+v: want the key %s of ConfigMap %s", v, e, key, cm.Name)
		}
		if _, ok := cm.Data[key]; !ok {
			t.Errorf("ConfigMap has no key %s", key)
		}
	}
	if len(c.Volumes) != 1 || c.Volumes[0].Secret == nil || c.Volumes[0].Secret.SecretName != LockKubeconfigSecret ||
		len(c.Volumes[0].Secret.Items) != 0 || c.Volumes[0].Secret.Optional != nil {
		t.Fatalf("volumes %+v: want the one Secret %s, whole and required", c.Volumes, LockKubeconfigSecret)
	}
	if m := c.Volumes[0].Secret.DefaultMode; m == nil || *m&0o004 == 0 {
		t.Errorf("the Secret's mode %v: the container's user (65532, no fsGroup) must be able to read it", m)
	}
	if len(ctr.VolumeMounts) != 1 || ctr.VolumeMounts[0].Name != c.Volumes[0].Name || ctr.VolumeMounts[0].MountPath != "/etc/stsroller/lock" || !ctr.VolumeMounts[0].ReadOnly {
		t.Errorf("mounts %+v: want %s read-only at /etc/stsroller/lock", ctr.VolumeMounts, c.Volumes[0].Name)
	}
	// Nothing else changes: no Secret rights, the same RBAC.
	if diff := cmp.Diff(flatten(base.clusterRoles[0].Rules), flatten(r.clusterRoles[0].Rules)); diff != "" {
		t.Errorf("the ClusterRole changed (-base +overlay):\n%s", diff)
	}
	if diff := cmp.Diff(flatten(base.roles[0].Rules), flatten(r.roles[0].Rules)); diff != "" {
		t.Errorf("the Role changed (-base +overlay):\n%s", diff)
	}
	if _, err := BuildWith(Options{RolloutLock: true, ServiceMonitor: true}); err == nil {
		t.Errorf("RolloutLock with ServiceMonitor: want an error")
	}
}

// TestCoordination: the coordination cluster gets exactly get, create and
// update on Leases in the locks' namespace (rollout/lock.go's calls), bound
// to its ServiceAccount; the namespace can be changed.
func TestCoordination(t *testing.T) {
	for _, ns := range []string{"", "team-locks"} {
		objs, err := Coordination(ns)
		if err != nil {
			t.Fatal(err)
		}
		r := classify(t, objs)
		want := ns
		if want == "" {
			want = LockNamespace
		}
		if len(r.namespaces) != 1 || r.namespaces[0].Name != want || len(r.roles) != 1 || len(r.roleBindings) != 1 ||
			len(r.serviceAccounts) != 1 || len(objs) != 4 {
			t.Fatalf("namespace %q: want the Namespace %s, a ServiceAccount, a Role and its binding, got %s", ns, want, r.counts())
		}
		wantRules := []rule{{Group: "coordination.k8s.io", Resource: "leases", Verbs: "create,get,update"}}
		if diff := cmp.Diff(wantRules, flatten(r.roles[0].Rules)); diff != "" {
			t.Errorf("the Role's rules (-want +got):\n%s", diff)
		}
		sa, rb := r.serviceAccounts[0], r.roleBindings[0]
		if sa.Name != LockServiceAccount || sa.Namespace != want || r.roles[0].Namespace != want || rb.Namespace != want {
			t.Errorf("objects outside %s: %s/%s, Role in %s, binding in %s", want, sa.Namespace, sa.Name, r.roles[0].Namespace, rb.Namespace)
		}
		if rb.RoleRef.Name != r.roles[0].Name || len(rb.Subjects) != 1 || rb.Subjects[0].Kind != "ServiceAccount" ||
			rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Namespace != want {
			t.Errorf("binding %+v: want the Role bound to %s/%s", rb, want, sa.Name)
		}
	}
}
