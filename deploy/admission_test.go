package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/policy"
)

// notConfined are the resources stsroller's roles let it write that the
// admission policy leaves alone: its Events and its Lease, which change
// nothing of anyone else's.
var notConfined = []string{"events", "leases"}

// checkAdmissionPolicy: the policy matches the ServiceAccount the Deployment
// runs as and no one else, refuses (Deny, failing closed), matches creates
// and updates of every pod and StatefulSet resource the ClusterRole lets it
// write but no delete (deletes keep their preconditions, not a policy), and
// names the field it refuses.
func checkAdmissionPolicy(t *testing.T, r *rendered, wantName string) {
	t.Helper()
	if len(r.policies) != 1 || len(r.policyBindings) != 1 {
		t.Fatalf("want one ValidatingAdmissionPolicy and one binding, got %s", r.counts())
	}
	p, b := r.policies[0], r.policyBindings[0]
	if p.Name != wantName || b.Name != wantName {
		t.Errorf("policy %q, binding %q, want %q", p.Name, b.Name, wantName)
	}
	if b.Spec.PolicyName != p.Name {
		t.Errorf("the binding binds policy %q, not %q", b.Spec.PolicyName, p.Name)
	}
	if !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("binding validationActions %v, want [Deny]", b.Spec.ValidationActions)
	}
	if b.Spec.ParamRef != nil || b.Spec.MatchResources != nil {
		t.Errorf("the binding narrows the policy (paramRef %v, matchResources %v)", b.Spec.ParamRef, b.Spec.MatchResources)
	}
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v, want Fail", p.Spec.FailurePolicy)
	}

	d := r.deployments[0]
	user := ServiceAccountUsername(d.Namespace, d.Spec.Template.Spec.ServiceAccountName)
	want := []admissionregistrationv1.MatchCondition{{Name: "stsroller-service-account",
		Expression: "request.userInfo.username == '" + user + "'"}}
	if diff := cmp.Diff(want, p.Spec.MatchConditions); diff != "" {
		t.Errorf("matchConditions (-want +got):\n%s", diff)
	}

	mc := p.Spec.MatchConstraints
	if mc == nil || len(mc.ResourceRules) == 0 {
		t.Fatal("the policy matches no resources")
	}
	matches := func(group, resource string, op admissionregistrationv1.OperationType) bool {
		for _, rr := range mc.ResourceRules {
			sub := ""
			if i := strings.Index(resource, "/"); i >= 0 {
				sub = resource[:i] + "/*"
			}
			if slices.Contains(rr.APIGroups, group) && (slices.Contains(rr.Resources, resource) || slices.Contains(rr.Resources, sub)) &&
				slices.Contains(rr.Operations, op) {
				return true
			}
		}
		return false
	}
	for _, rr := range mc.ResourceRules {
		for _, op := range rr.Operations {
			if op != admissionregistrationv1.Create && op != admissionregistrationv1.Update {
				t.Errorf("the policy matches %s on %v: it confines creates and updates only", op, rr.Resources)
			}
		}
	}
	var rules []rbacv1.PolicyRule
	for _, cr := range r.clusterRoles {
		rules = append(rules, cr.Rules...)
	}
	for _, ro := range r.roles {
		rules = append(rules, ro.Rules...)
	}
	for _, ru := range rules {
		for _, g := range ru.APIGroups {
			for _, res := range ru.Resources {
				if slices.Contains(notConfined, res) {
					continue
				}
				for _, verb := range ru.Verbs {
					op := map[string]admissionregistrationv1.OperationType{"create": admissionregistrationv1.Create,
						"update": admissionregistrationv1.Update, "patch": admissionregistrationv1.Update}[verb]
					if op != "" && !matches(g, res, op) {
						t.Errorf("a role grants %s on %s/%s, which the policy does not match", verb, g, res)
					}
				}
			}
		}
	}
	for _, w := range []struct{ group, resource string }{{"", "pods"}, {"", "pods/status"}, {"", "pods/ephemeralcontainers"},
		{"", "pods/resize"}, {"apps", "statefulsets"}, {"apps", "statefulsets/status"}, {"apps", "statefulsets/scale"}} {
		for _, op := range []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update} {
			if !matches(w.group, w.resource, op) {
				t.Errorf("the policy does not match %s of %s/%s", op, w.group, w.resource)
			}
		}
	}
	if len(p.Spec.Validations) == 0 {
		t.Fatal("the policy has no validations")
	}
	for i, v := range p.Spec.Validations {
		if v.MessageExpression == "" {
			t.Errorf("validation %d has no messageExpression: a refusal must name the field", i)
		}
		if v.Reason == nil || *v.Reason != "Forbidden" {
			t.Errorf("validation %d: reason %v, want Forbidden", i, v.Reason)
		}
	}
}

func TestAdmissionPolicyConfinesTheServiceAccount(t *testing.T) {
	for _, opts := range []Options{{}, {Namespace: "stsroller-e2e"}} {
		t.Run(fmt.Sprintf("%+v", opts), func(t *testing.T) {
			checkAdmissionPolicy(t, render(t, opts), AdmissionPolicy)
		})
	}
}

// TestAdmissionPolicyOwnsWhatTheCodeWrites: the annotations and the
// condition the policy lets stsroller change are the ones the code writes
// (the names of policy and dnsgate, spelt out in the CEL).
func TestAdmissionPolicyOwnsWhatTheCodeWrites(t *testing.T) {
	p := render(t, Options{}).policies[0]
	var cel strings.Builder
	for _, v := range p.Spec.Variables {
		cel.WriteString(v.Expression + "\n")
	}
	for _, owned := range []string{policy.AnnotationDrainRequested, policy.AnnotationDrainComplete, dnsgate.AnnotationVouchedIPs} {
		if !strings.HasPrefix(owned, policy.AnnotationPrefix) {
			t.Errorf("stsroller writes pod annotation %s, outside %s", owned, policy.AnnotationPrefix)
		}
	}
	for _, want := range []string{"k.startsWith('" + policy.AnnotationPrefix + "')", "k == '" + policy.AnnotationStatus + "'",
		"c.type != '" + string(policy.ConditionDNSPropagated) + "'"} {
		if !strings.Contains(cel.String(), want) {
			t.Errorf("the policy's variables do not hold %q", want)
		}
	}
}
