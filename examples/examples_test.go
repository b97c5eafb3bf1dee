package examples

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/stsroller/stsroller/policy"
)

// strict rejects unknown and duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeFile decodes every document of a YAML file into a typed object.
func decodeFile(t *testing.T, path string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: decoding %v: %v", path, gvk, err)
		}
		out = append(out, obj)
	}
}

// all decodes every examples/*.yaml.
func all(t *testing.T) map[string][]runtime.Object {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*.yaml")
	}
	out := map[string][]runtime.Object{}
	for _, f := range files {
		objs := decodeFile(t, f)
		if len(objs) == 0 {
			t.Errorf("%s holds no object", f)
		}
		out[f] = objs
	}
	return out
}

func TestExamplesDecodeStrictly(t *testing.T) {
	all(t)
}

// TestStatefulSetExample checks that the example is one stsroller accepts and
// whose DNS gate cannot deadlock.
func TestStatefulSetExample(t *testing.T) {
	var (
		sts  *appsv1.StatefulSet
		svc  *corev1.Service
		pdbs []*policyv1.PodDisruptionBudget
	)
	for _, o := range decodeFile(t, "statefulset.yaml") {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			sts = o
		case *corev1.Service:
			svc = o
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		}
	}
	if sts == nil || svc == nil || len(pdbs) != 1 {
		t.Fatalf("want a StatefulSet, a Service and one PodDisruptionBudget")
	}
	if !policy.Enabled(sts) || !policy.IsOnDelete(sts) {
		t.Errorf("the example must opt in: %s \"true\" and updateStrategy OnDelete", policy.AnnotationEnabled)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q, want Parallel", sts.Spec.PodManagementPolicy)
	}
	cfg, err := policy.ParseConfig(sts)
	if err != nil {
		t.Fatalf("stsroller rejects the example's annotations: %v", err)
	}
	if cfg.MaxUnavailable != 2 || cfg.DNSDomain != "db.example.com" || cfg.LeaderSelector.String() != policy.DefaultLeaderSelector {
		t.Errorf("config %+v: want max-unavailable 2, dns-domain db.example.com, the default leader selector", cfg)
	}
	if !policy.HasDNSReadinessGate(sts) {
		t.Errorf("the template lacks readiness gate %s", policy.ConditionDNSPropagated)
	}

	// The Service external-dns publishes the pods under.
	if sts.Spec.ServiceName != svc.Name || svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("the StatefulSet's serviceName must name a headless Service with publishNotReadyAddresses: true")
	}
	if got := svc.Annotations["external-dns.kubernetes.io/hostname"]; got != cfg.DNSDomain {
		t.Errorf("Service annotation external-dns.kubernetes.io/hostname = %q, want the dns-domain %q", got, cfg.DNSDomain)
	}

	// Selectors.
	podLabels := labels.Set(sts.Spec.Template.Labels)
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("the StatefulSet's selector does not match its template")
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the Service does not select the pods")
	}
	pdbSel, err := metav1.LabelSelectorAsSelector(pdbs[0].Spec.Selector)
	if err != nil || !pdbSel.Matches(podLabels) {
		t.Errorf("the PodDisruptionBudget does not select the pods")
	}
	if cfg.LeaderSelector.Matches(podLabels) {
		t.Errorf("the template must not carry the leader label: every new pod would look like the leader")
	}

	// The planner, on the StatefulSet as the API server would report it,
	// finds nothing wrong with it.
	live := sts.DeepCopy()
	live.Generation, live.Status.ObservedGeneration, live.Status.UpdateRevision = 1, 1, "db-1"
	plan := policy.Compute(policy.Input{StatefulSet: live, Config: cfg, Service: svc, Now: time.Now()})
	if plan.Status.Phase == policy.PhaseInvalid || plan.Status.Reason == policy.ReasonDNSGateDeadlock {
		t.Errorf("stsroller would report %s: %s", plan.Status.Reason, plan.Status.Message)
	}
}

// TestLeaderRBACExample checks that the sidecar's Role grants what
// docs/leader-label.md says, on the pods of the example, to the ServiceAccount
// the pods run as.
func TestLeaderRBACExample(t *testing.T) {
	var (
		sts  *appsv1.StatefulSet
		sa   *corev1.ServiceAccount
		role *rbacv1.Role
		rb   *rbacv1.RoleBinding
	)
	for _, o := range append(decodeFile(t, "statefulset.yaml"), decodeFile(t, "leader-rbac.yaml")...) {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			sts = o
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.Role:
			role = o
		case *rbacv1.RoleBinding:
			rb = o
		}
	}
	if sts == nil || sa == nil || role == nil || rb == nil {
		t.Fatal("want a StatefulSet, a ServiceAccount, a Role and a RoleBinding")
	}
	if sts.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("the pods run as %q, the sidecar's ServiceAccount is %q", sts.Spec.Template.Spec.ServiceAccountName, sa.Name)
	}
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name ||
		len(rb.Subjects) != 1 || rb.Subjects[0].Kind != rbacv1.ServiceAccountKind || rb.Subjects[0].Name != sa.Name {
		t.Errorf("the RoleBinding must bind Role %s to ServiceAccount %s", role.Name, sa.Name)
	}
	if len(role.Rules) != 1 {
		t.Fatalf("want one rule, got %d", len(role.Rules))
	}
	r := role.Rules[0]
	verbs := slices.Sorted(slices.Values(r.Verbs))
	if !slices.Equal(r.APIGroups, []string{""}) || !slices.Equal(r.Resources, []string{"pods"}) ||
		!slices.Equal(verbs, []string{"get", "patch"}) {
		t.Errorf("rule %+v: want get and patch on pods", r)
	}
	for i := range int(*sts.Spec.Replicas) {
		name := sts.Name + "-" + strconv.Itoa(i)
		if len(r.ResourceNames) > 0 && !slices.Contains(r.ResourceNames, name) {
			t.Errorf("the Role does not name pod %s", name)
		}
	}
}
