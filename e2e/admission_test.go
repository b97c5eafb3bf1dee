//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// The tests of this file check deploy/'s ValidatingAdmissionPolicy: as
// stsroller's ServiceAccount (a token from the TokenRequest API), every write
// the controller makes is admitted and every other change of a pod or a
// StatefulSet is refused, with the field named. They run in both modes; their
// names begin with TestDeployed so that make test's deployed subset
// (E2E_DEPLOYED_RUN) holds them. The deployed mode has the policy from
// `kubectl apply` of deploy/; the local mode creates deploy/'s policy objects
// once, and leaves them, so the tests that run the controller as that
// ServiceAccount (TestRolloutAsDeployServiceAccount,
// TestLeaderElectionFailover: parallel, so after these) run under it too, as
// in a real install. They are not parallel for that reason.

var (
	admissionOnce sync.Once
	admissionErr  error
	// admissionPolicy is false when deploy/ holds no admission policy.
	admissionPolicy bool
)

// applyAdmissionPolicy creates deploy/'s ValidatingAdmissionPolicy and its
// binding in the local mode (the deployed mode has them already), once per
// run, and reports whether deploy/ has them. The caller waits for the API
// server to enforce them (waitPolicyEnforced).
func applyAdmissionPolicy(t testing.TB, client kubernetes.Interface) bool {
	t.Helper()
	objs := applyDeployRBAC(t, client)
	admissionOnce.Do(func() {
		ctx := context.Background()
		for _, o := range objs {
			var err error
			switch o := o.(type) {
			case *admissionregistrationv1.ValidatingAdmissionPolicy:
				admissionPolicy = true
				if !framework.Deployed() {
					_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, o, metav1.CreateOptions{})
				}
			case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
				if !framework.Deployed() {
					_, err = client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, o, metav1.CreateOptions{})
				}
			}
			if err != nil && !apierrors.IsAlreadyExists(err) {
				admissionErr = err
				return
			}
		}
	})
	if admissionErr != nil {
		t.Fatalf("creating deploy/'s admission policy: %v", admissionErr)
	}
	if !admissionPolicy {
		t.Logf("deploy/ holds no ValidatingAdmissionPolicy: the ServiceAccount has RBAC only")
	}
	return admissionPolicy
}

// admissionFixture is a StatefulSet of one pod that stsroller does not manage
// (no stsroller.io/enabled), and a client that is stsroller's ServiceAccount.
type admissionFixture struct {
	t      *testing.T
	ctx    context.Context
	admin  kubernetes.Interface
	sa     kubernetes.Interface
	ns     string
	policy bool
}

func newAdmissionFixture(t *testing.T) *admissionFixture {
	t.Helper()
	f := &admissionFixture{t: t, ctx: t.Context(), admin: framework.Client(t)}
	f.policy = applyAdmissionPolicy(t, f.admin)
	f.ns = framework.Namespace(f.ctx, t, f.admin)
	cfg, err := clientcmd.BuildConfigFromFlags("", serviceAccountKubeconfig(t, f.admin))
	if err != nil {
		t.Fatal(err)
	}
	if f.sa, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	sts := dbStatefulSet(f.ns, 1, appsv1.OnDeleteStatefulSetStrategyType, map[string]string{"example.com/owner": "team-db"})
	sts.Spec.Template.Annotations = map[string]string{"example.com/owner": "team-db"}
	if _, err := f.admin.AppsV1().StatefulSets(f.ns).Create(f.ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = framework.Eventually(f.ctx, 2*time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		p, err := f.admin.CoreV1().Pods(f.ns).Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return fmt.Errorf("pod db-0 is %s, IP %q", p.Status.Phase, p.Status.PodIP)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	f.waitPolicyEnforced()
	return f
}

func (f *admissionFixture) pod() *corev1.Pod {
	f.t.Helper()
	p, err := f.admin.CoreV1().Pods(f.ns).Get(f.ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *admissionFixture) statefulSet() *appsv1.StatefulSet {
	f.t.Helper()
	s, err := f.admin.AppsV1().StatefulSets(f.ns).Get(f.ctx, "db", metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

// refusedByPolicy says whether err is the policy's refusal naming field.
func refusedByPolicy(err error, field string) bool {
	return apierrors.IsForbidden(err) &&
		strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+deploy.AdmissionPolicy+"'") &&
		strings.Contains(err.Error(), field)
}

// waitPolicyEnforced waits until the API server applies the policy (it
// loads a new one a moment after its creation): a label patch of the pod, as
// a dry run, is refused. Without a policy in deploy/ there is nothing to wait
// for, and the tests then show what the identity can do with RBAC only.
func (f *admissionFixture) waitPolicyEnforced() {
	f.t.Helper()
	if !f.policy {
		return
	}
	err := framework.Eventually(f.ctx, time.Minute, 200*time.Millisecond, func(ctx context.Context) error {
		_, err := f.sa.CoreV1().Pods(f.ns).Patch(ctx, "db-0", types.MergePatchType, []byte(`{"metadata":{"labels":{"probe":"x"}}}`),
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if !refusedByPolicy(err, "metadata.labels") {
			return fmt.Errorf("a label patch as the ServiceAccount: err = %v, want the policy's refusal", err)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// write is one request as stsroller's ServiceAccount.
type write struct {
	name string
	do   func(ctx context.Context, f *admissionFixture, dryRun []string) error
	// refused names the field the policy's message must name; empty: the
	// write is stsroller's own and must be admitted.
	refused string
	// rbac: RBAC refuses it already (the policy need not).
	rbac bool
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func patchPod(pt types.PatchType, patch func(f *admissionFixture) []byte, sub ...string) func(context.Context, *admissionFixture, []string) error {
	return func(ctx context.Context, f *admissionFixture, dryRun []string) error {
		_, err := f.sa.CoreV1().Pods(f.ns).Patch(ctx, "db-0", pt, patch(f), metav1.PatchOptions{DryRun: dryRun, FieldManager: "stsroller"}, sub...)
		return err
	}
}

func patchStatefulSet(pt types.PatchType, patch string, sub ...string) func(context.Context, *admissionFixture, []string) error {
	return func(ctx context.Context, f *admissionFixture, dryRun []string) error {
		_, err := f.sa.AppsV1().StatefulSets(f.ns).Patch(ctx, "db", pt, []byte(patch), metav1.PatchOptions{DryRun: dryRun, FieldManager: "stsroller"}, sub...)
		return err
	}
}

// drainPatch is rollout/drain.go's drainRequestPatch (a merge patch with the
// pod's UID and resourceVersion) with annotations of the drain handshake set
// or, as null, removed.
func drainPatch(annotations map[string]any) func(f *admissionFixture) []byte {
	return func(f *admissionFixture) []byte {
		p := f.pod()
		return mustJSON(f.t, map[string]any{"metadata": map[string]any{
			"uid": p.UID, "resourceVersion": p.ResourceVersion, "annotations": annotations}})
	}
}

// dnsConditionPatch is dnsgate/gate.go's Gate.Apply: a strategic merge patch
// of pods/status with the pod's UID, the vouched IPs annotation and the
// condition.
func dnsConditionPatch(status corev1.ConditionStatus) func(f *admissionFixture) []byte {
	return func(f *admissionFixture) []byte {
		p := f.pod()
		vouched := any(nil)
		reason := policy.ReasonDNSNotPropagated
		if status == corev1.ConditionTrue {
			vouched, reason = p.Status.PodIP, policy.ReasonDNSPropagated
		}
		return mustJSON(f.t, map[string]any{
			"metadata": map[string]any{"uid": p.UID, "annotations": map[string]any{dnsgate.AnnotationVouchedIPs: vouched}},
			"status": map[string]any{"conditions": []corev1.PodCondition{{
				Type: policy.ConditionDNSPropagated, Status: status, Reason: reason, Message: "e2e",
				LastTransitionTime: metav1.Now(),
			}}},
		})
	}
}

func fixed(patch string) func(*admissionFixture) []byte {
	return func(*admissionFixture) []byte { return []byte(patch) }
}

// stsrollerWrites are the writes the controller makes, in an order that
// also removes what it set. They are sent for real.
var stsrollerWrites = []write{{
	name: "drain request (rollout/drain.go)",
	do: patchPod(types.MergePatchType, drainPatch(map[string]any{
		policy.AnnotationDrainRequested: time.Now().UTC().Format(time.RFC3339), "stsroller.io/drain-revision": "db-2"})),
}, {
	name: "drain annotations removed",
	do: patchPod(types.MergePatchType, drainPatch(map[string]any{
		policy.AnnotationDrainRequested: nil, "stsroller.io/drain-revision": nil, policy.AnnotationDrainComplete: nil})),
}, {
	name: "DNS condition True with the vouched IPs (dnsgate/gate.go)",
	do:   patchPod(types.StrategicMergePatchType, dnsConditionPatch(corev1.ConditionTrue), "status"),
}, {
	name: "DNS condition False, vouched IPs removed",
	do:   patchPod(types.StrategicMergePatchType, dnsConditionPatch(corev1.ConditionFalse), "status"),
}, {
	name: "status annotation (rollout/status.go writeStatus)",
	do: func(ctx context.Context, f *admissionFixture, dryRun []string) error {
		st := policy.Status{Phase: policy.PhaseRolling, Replicas: 1, Reason: "e2e", Message: "stsroller's own annotation"}
		patch := mustJSON(f.t, map[string]any{"metadata": map[string]any{"annotations": map[string]string{policy.AnnotationStatus: st.Encode()}}})
		return patchStatefulSet(types.MergePatchType, string(patch))(ctx, f, dryRun)
	},
}, {
	name: "eviction (rollout/sender.go APIRemover.Evict), dry run",
	do: func(ctx context.Context, f *admissionFixture, _ []string) error {
		return f.sa.CoreV1().Pods(f.ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: f.ns},
			DeleteOptions: &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}})
	},
}, {
	name: "delete with UID and resourceVersion preconditions (APIRemover.Delete), dry run",
	do: func(ctx context.Context, f *admissionFixture, _ []string) error {
		p := f.pod()
		return f.sa.CoreV1().Pods(f.ns).Delete(ctx, "db-0", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll},
			Preconditions: &metav1.Preconditions{UID: &p.UID, ResourceVersion: &p.ResourceVersion}})
	},
}}

// forbiddenWrites are changes stsroller never makes. They are sent as dry
// runs: without the policy they would be admitted, and change nothing.
var forbiddenWrites = []write{
	{name: "pod image", refused: "spec.containers",
		do: patchPod(types.StrategicMergePatchType, fixed(`{"spec":{"containers":[{"name":"db","image":"registry.example.com/evil:1"}]}}`))},
	{name: "pod label", refused: "metadata.labels",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"labels":{"app":"other"}}}`))},
	{name: "someone else's pod annotation", refused: "metadata.annotations[example.com/owner]",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"annotations":{"example.com/owner":"mallory"}}}`))},
	{name: "someone else's pod annotation removed", refused: "metadata.annotations[example.com/owner]",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"annotations":{"example.com/owner":null}}}`))},
	{name: "pod finalizer", refused: "metadata.finalizers",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"finalizers":["example.com/hold"]}}`))},
	{name: "pod owner references removed", refused: "metadata.ownerReferences",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"ownerReferences":null}}`))},
	{name: "pod label through pods/status", refused: "metadata.labels",
		do: patchPod(types.MergePatchType, fixed(`{"metadata":{"labels":{"app":"other"}}}`), "status")},
	{name: "another pod condition", refused: "status.conditions[type=example.com/ready]",
		do: patchPod(types.StrategicMergePatchType, fixed(`{"status":{"conditions":[{"type":"example.com/ready","status":"True"}]}}`), "status")},
	{name: "the Ready condition", refused: "status.conditions[type=Ready]",
		do: patchPod(types.StrategicMergePatchType, fixed(`{"status":{"conditions":[{"type":"Ready","status":"False","reason":"Mallory"}]}}`), "status")},
	{name: "pod status message", refused: "status.message",
		do: patchPod(types.MergePatchType, fixed(`{"status":{"message":"mallory"}}`), "status")},
	{name: "StatefulSet template", refused: "spec.template",
		do: patchStatefulSet(types.StrategicMergePatchType, `{"spec":{"template":{"spec":{"containers":[{"name":"db","image":"registry.example.com/evil:1"}]}}}}`)},
	{name: "StatefulSet replicas", refused: "spec.replicas",
		do: patchStatefulSet(types.MergePatchType, `{"spec":{"replicas":5}}`)},
	{name: "StatefulSet label", refused: "metadata.labels",
		do: patchStatefulSet(types.MergePatchType, `{"metadata":{"labels":{"app":"other"}}}`)},
	{name: "StatefulSet opted in", refused: "metadata.annotations[" + policy.AnnotationEnabled + "]",
		do: patchStatefulSet(types.MergePatchType, `{"metadata":{"annotations":{"`+policy.AnnotationEnabled+`":"true"}}}`)},
	{name: "someone else's StatefulSet annotation", refused: "metadata.annotations[example.com/owner]",
		do: patchStatefulSet(types.MergePatchType, `{"metadata":{"annotations":{"example.com/owner":"mallory"}}}`)},
	{name: "StatefulSet finalizer", refused: "metadata.finalizers",
		do: patchStatefulSet(types.MergePatchType, `{"metadata":{"finalizers":["example.com/hold"]}}`)},
	{name: "StatefulSet status", rbac: true,
		do: patchStatefulSet(types.MergePatchType, `{"status":{"availableReplicas":0}}`, "status")},
	{name: "ephemeral container", rbac: true,
		do: patchPod(types.StrategicMergePatchType, fixed(`{"spec":{"ephemeralContainers":[{"name":"x","image":"registry.example.com/evil:1"}]}}`), "ephemeralcontainers")},
	{name: "pod created", rbac: true,
		do: func(ctx context.Context, f *admissionFixture, dryRun []string) error {
			_, err := f.sa.CoreV1().Pods(f.ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "evil"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example.com/evil:1"}}}},
				metav1.CreateOptions{DryRun: dryRun})
			return err
		}},
}

// TestDeployedAdmissionPolicyAdmitsStsrollersWritesOnly sends, as stsroller's
// ServiceAccount, each write the controller makes (admitted; the real ones
// are also made by the rollouts of the suite) and each change it never makes
// (refused, with the field named in the message).
func TestDeployedAdmissionPolicyAdmitsStsrollersWritesOnly(t *testing.T) {
	f := newAdmissionFixture(t)
	if !f.policy {
		t.Error("deploy/ holds no admission policy")
	}
	for _, w := range stsrollerWrites {
		if err := w.do(f.ctx, f, nil); err != nil {
			t.Errorf("%s: refused: %v", w.name, err)
		}
	}
	p := f.pod()
	for _, k := range []string{policy.AnnotationDrainRequested, "stsroller.io/drain-revision", dnsgate.AnnotationVouchedIPs} {
		if _, ok := p.Annotations[k]; ok {
			t.Errorf("pod annotation %s was not removed", k)
		}
	}
	if got := framework.PodConditionStatus(p, policy.ConditionDNSPropagated); got != corev1.ConditionFalse {
		t.Errorf("pod condition %s = %q, want False", policy.ConditionDNSPropagated, got)
	}
	if _, ok := f.statefulSet().Annotations[policy.AnnotationStatus]; !ok {
		t.Errorf("the StatefulSet has no %s", policy.AnnotationStatus)
	}

	for _, w := range forbiddenWrites {
		err := w.do(f.ctx, f, []string{metav1.DryRunAll})
		switch {
		case w.rbac && !apierrors.IsForbidden(err):
			t.Errorf("%s: err = %v, want Forbidden", w.name, err)
		case !w.rbac && !refusedByPolicy(err, w.refused):
			t.Errorf("%s: err = %v, want the policy's refusal naming %s", w.name, err, w.refused)
		default:
			t.Logf("%s: %v", w.name, err)
		}
	}
}

// TestDeployedAdmissionPolicyRefusesAttack: what stsroller's token would be
// worth to an attacker without the policy. As the ServiceAccount, for real (no dry
// run): a pod's image, a StatefulSet's template and a pod's labels are each
// refused, and nothing changed; stsroller's own annotation is admitted.
func TestDeployedAdmissionPolicyRefusesAttack(t *testing.T) {
	f := newAdmissionFixture(t)
	before, beforeSts := f.pod(), f.statefulSet()
	const evil = "registry.example.com/evil:1"
	attacks := []struct {
		name, field string
		do          func() error
	}{{
		name: "patch pod db-0's image", field: "spec.containers",
		do: func() error {
			_, err := f.sa.CoreV1().Pods(f.ns).Patch(f.ctx, "db-0", types.StrategicMergePatchType,
				[]byte(`{"spec":{"containers":[{"name":"db","image":"`+evil+`"}]}}`), metav1.PatchOptions{})
			return err
		},
	}, {
		name: "patch StatefulSet db's template", field: "spec.template",
		do: func() error {
			_, err := f.sa.AppsV1().StatefulSets(f.ns).Patch(f.ctx, "db", types.StrategicMergePatchType,
				[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"db","image":"`+evil+`"}]}}}}`), metav1.PatchOptions{})
			return err
		},
	}, {
		name: "patch pod db-0's labels", field: "metadata.labels",
		do: func() error {
			_, err := f.sa.CoreV1().Pods(f.ns).Patch(f.ctx, "db-0", types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"app":"mallory"}}}`), metav1.PatchOptions{})
			return err
		},
	}}
	for _, a := range attacks {
		err := a.do()
		if err == nil {
			t.Errorf("%s as stsroller's ServiceAccount: admitted; want refused by ValidatingAdmissionPolicy %s", a.name, deploy.AdmissionPolicy)
			continue
		}
		if !refusedByPolicy(err, a.field) {
			t.Errorf("%s: err = %v, want the policy's refusal naming %s", a.name, err, a.field)
			continue
		}
		t.Logf("%s: refused: %v", a.name, err)
	}
	after, afterSts := f.pod(), f.statefulSet()
	if got := after.Spec.Containers[0].Image; got != before.Spec.Containers[0].Image {
		t.Errorf("pod db-0 runs %s now, was %s", got, before.Spec.Containers[0].Image)
	}
	if after.Labels["app"] != before.Labels["app"] {
		t.Errorf("pod db-0's label app = %q, was %q", after.Labels["app"], before.Labels["app"])
	}
	if afterSts.Generation != beforeSts.Generation || afterSts.Spec.Template.Spec.Containers[0].Image != beforeSts.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("StatefulSet db: generation %d -> %d, image %s -> %s", beforeSts.Generation, afterSts.Generation,
			beforeSts.Spec.Template.Spec.Containers[0].Image, afterSts.Spec.Template.Spec.Containers[0].Image)
	}

	// What stsroller does is still admitted.
	p := mustJSON(t, map[string]any{"metadata": map[string]any{"uid": after.UID, "resourceVersion": after.ResourceVersion,
		"annotations": map[string]string{policy.AnnotationDrainRequested: time.Now().UTC().Format(time.RFC3339)}}})
	if _, err := f.sa.CoreV1().Pods(f.ns).Patch(f.ctx, "db-0", types.MergePatchType, p, metav1.PatchOptions{}); err != nil {
		t.Errorf("the drain request annotation as stsroller's ServiceAccount: %v", err)
	}
	if _, ok := f.pod().Annotations[policy.AnnotationDrainRequested]; !ok {
		t.Errorf("pod db-0 has no %s after the ServiceAccount's patch", policy.AnnotationDrainRequested)
	}
}
