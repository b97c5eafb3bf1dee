package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

var now = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

const (
	ns     = "db"
	newRev = "web-new"
	oldRev = "web-old"
	domain = "db.example.com"
)

// statefulSet is an opted-in StatefulSet of 5 whose update revision is newRev.
func statefulSet(annotations map[string]string) *appsv1.StatefulSet {
	a := map[string]string{
		policy.AnnotationEnabled:        "true",
		policy.AnnotationMaxUnavailable: "2",
	}
	for k, v := range annotations {
		a[k] = v
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, UID: "sts-uid", Generation: 2, Annotations: a},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](5),
			Selector:            &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			ServiceName:         "web",
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
		},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdateRevision: newRev, Replicas: 5},
	}
}

// pod is web-<ordinal> at rev, Ready unless crashing, with IP 10.0.0.<ordinal>.
func pod(ordinal int, rev string, crashing bool) *corev1.Pod {
	ready := corev1.ConditionTrue
	var cs []corev1.ContainerStatus
	if crashing {
		ready = corev1.ConditionFalse
		cs = []corev1.ContainerStatus{{Name: "db", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("web-%d", ordinal), Namespace: ns, UID: types.UID(fmt.Sprintf("pod-%d", ordinal)),
			Labels: map[string]string{"app": "web", appsv1.ControllerRevisionHashLabelKey: rev},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "web",
				UID: "sts-uid", Controller: ptr.To(true)}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: fmt.Sprintf("10.0.0.%d", ordinal),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready,
				LastTransitionTime: metav1.NewTime(now.Add(-time.Hour))}},
			ContainerStatuses: cs,
		},
	}
}

// vouch gives the pod a True DNS condition for ip, as the gate writes it.
func vouch(p *corev1.Pod, ip string) *corev1.Pod {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
		Type: policy.ConditionDNSPropagated, Status: corev1.ConditionTrue, Reason: policy.ReasonDNSPropagated,
		Message: fmt.Sprintf("%s.%s resolves to %s at every authoritative server", p.Name, domain, ip),
	})
	return p
}

// fixture: web-0 updated; web-1 outdated and crashing; web-2..4 outdated and healthy.
func fixture(sts *appsv1.StatefulSet, edit func(pods []*corev1.Pod)) []runtime.Object {
	pods := []*corev1.Pod{pod(0, newRev, false), pod(1, oldRev, true), pod(2, oldRev, false), pod(3, oldRev, false), pod(4, oldRev, false)}
	if edit != nil {
		edit(pods)
	}
	objs := []runtime.Object{sts, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, PublishNotReadyAddresses: true},
	}}
	for _, p := range pods {
		objs = append(objs, p)
	}
	return objs
}

// runWith runs the plugin against client; the kubeconfig's namespace is ns.
func runWith(t *testing.T, client kubernetes.Interface, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	e := env{
		out: &out,
		now: func() time.Time { return now },
		connect: func(_, _, namespace string) (kubernetes.Interface, string, error) {
			if namespace == "" {
				namespace = ns
			}
			return client, namespace, nil
		},
	}
	err := run(context.Background(), args, e)
	return out.String(), err
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		edit        func([]*corev1.Pod)
		want        []deletion // message checked by prefix
		wantPhase   policy.Phase
		wantReason  string
	}{{
		name: "unhealthy outdated first, then the highest healthy ordinal",
		want: []deletion{
			{Pod: "web-1", Method: "Delete", Message: "web-1 is outdated and not ready (CrashLoopBackOff)"},
			{Pod: "web-4", Method: "Evict", Message: "web-4 is outdated (ordinal 4, highest first)"},
		},
		wantPhase: policy.PhaseRolling, wantReason: policy.ReasonDeletingPods,
	}, {
		name: "the leader waits",
		edit: func(pods []*corev1.Pod) { pods[4].Labels["stsroller.io/role"] = "leader" },
		want: []deletion{
			{Pod: "web-1", Method: "Delete", Message: "web-1 is outdated and not ready"},
			{Pod: "web-3", Method: "Evict", Message: "web-3 is outdated (ordinal 3, highest first)"},
		},
		wantPhase: policy.PhaseRolling, wantReason: policy.ReasonDeletingPods,
	}, {
		name:        "paused: nothing",
		annotations: map[string]string{policy.AnnotationPaused: "true"},
		wantPhase:   policy.PhasePaused, wantReason: policy.ReasonPaused,
	}, {
		name:        "DNS gate: pods whose condition vouches for their IPs are available",
		annotations: map[string]string{policy.AnnotationDNSDomain: domain},
		edit: func(pods []*corev1.Pod) {
			for _, p := range pods {
				vouch(p, p.Status.PodIP)
			}
		},
		want: []deletion{
			{Pod: "web-1", Method: "Delete", Message: "web-1 is outdated and not ready"},
			{Pod: "web-4", Method: "Evict", Message: "web-4 is outdated"},
		},
		wantPhase: policy.PhaseRolling, wantReason: policy.ReasonDeletingPods,
	}, {
		name:        "DNS gate: a condition vouching for an old IP makes the pod unavailable",
		annotations: map[string]string{policy.AnnotationDNSDomain: domain},
		edit: func(pods []*corev1.Pod) {
			for _, p := range pods {
				vouch(p, p.Status.PodIP)
			}
			pods[2].Status.Conditions[1].Message = "web-2.db.example.com resolves to 10.9.9.9 at every authoritative server"
		},
		// web-1 and web-2 unavailable: max-unavailable 2 is used up.
		want:      []deletion{{Pod: "web-1", Method: "Delete", Message: "web-1 is outdated and not ready"}},
		wantPhase: policy.PhaseRolling, wantReason: policy.ReasonDeletingPods,
	}, {
		name:        "not managed",
		annotations: map[string]string{policy.AnnotationEnabled: "false"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			objs := fixture(statefulSet(tc.annotations), tc.edit)
			client := fake.NewClientset(objs...)
			out, err := runWith(t, client, "plan", "web", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var got planOutput
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("plan -o json is not JSON: %v\n%s", err, out)
			}
			if got.StatefulSet != (ref{ns, "web"}) {
				t.Errorf("statefulSet %+v", got.StatefulSet)
			}
			if len(got.Deletions) != len(tc.want) {
				t.Fatalf("deletions %+v, want %+v", got.Deletions, tc.want)
			}
			for i, d := range got.Deletions {
				w := tc.want[i]
				if d.Pod != w.Pod || d.Method != w.Method || !strings.HasPrefix(d.Message, w.Message) {
					t.Errorf("deletion %d = %+v, want %+v (message prefix)", i, d, w)
				}
			}
			if tc.wantPhase == "" {
				if got.Managed || got.Status != nil {
					t.Errorf("not managed: want managed false and no status, got %v %+v", got.Managed, got.Status)
				}
			} else if got.Status == nil || got.Status.Phase != tc.wantPhase || got.Status.Reason != tc.wantReason {
				t.Errorf("status %+v, want phase %s reason %s", got.Status, tc.wantPhase, tc.wantReason)
			}
			assertNoWrites(t, client)

			text, err := runWith(t, client, "plan", "web")
			if err != nil {
				t.Fatal(err)
			}
			pos := 0
			for _, w := range tc.want {
				i := strings.Index(text[pos:], w.Pod+"  "+w.Method)
				if i < 0 {
					t.Errorf("text plan lacks %s %s after position %d:\n%s", w.Pod, w.Method, pos, text)
					break
				}
				pos += i
			}
			if tc.wantPhase != "" && !strings.Contains(text, string(tc.wantPhase)) {
				t.Errorf("text plan lacks the phase %s:\n%s", tc.wantPhase, text)
			}
			if tc.wantPhase != "" && !strings.Contains(text, "Nothing was deleted") {
				t.Errorf("text plan lacks the note on what it cannot see:\n%s", text)
			}
			assertNoWrites(t, client)
		})
	}
}

// assertNoWrites fails when the plugin did more than read.
func assertNoWrites(t *testing.T, client *fake.Clientset) {
	t.Helper()
	for _, a := range client.Actions() {
		if v := a.GetVerb(); v != "get" && v != "list" {
			t.Errorf("plan must only read, but it did %s %s", v, a.GetResource().Resource)
		}
	}
}

func TestPlanText(t *testing.T) {
	client := fake.NewClientset(fixture(statefulSet(nil), nil)...)
	out, err := runWith(t, client, "plan", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"StatefulSet db/web",
		"Would delete, in this order:",
		"1  web-1  Delete  web-1 is outdated and not ready (CrashLoopBackOff)",
		"2  web-4  Evict   web-4 is outdated (ordinal 4, highest first)",
		"Status it would write:",
		"Reason:    DeletingPods",
		"Replicas:  5 (updated 1, available 4, updated and available 1)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
}

func TestPauseResume(t *testing.T) {
	client := fake.NewClientset(statefulSet(nil))
	out, err := runWith(t, client, "pause", "web")
	if err != nil {
		t.Fatal(err)
	}
	if out != "statefulset.apps/web paused\n" {
		t.Errorf("pause said %q", out)
	}
	sts, err := client.AppsV1().StatefulSets(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := sts.Annotations[policy.AnnotationPaused]; got != "true" {
		t.Errorf("after pause, %s = %q, want \"true\"", policy.AnnotationPaused, got)
	}
	if sts.Annotations[policy.AnnotationMaxUnavailable] != "2" {
		t.Errorf("pause lost the other annotations: %v", sts.Annotations)
	}
	assertPatch(t, client, `{"metadata":{"annotations":{"stsroller.io/paused":"true"},"uid":"sts-uid"}}`)

	client.ClearActions()
	if out, err = runWith(t, client, "resume", "-n", ns, "web"); err != nil {
		t.Fatal(err)
	}
	if out != "statefulset.apps/web resumed\n" {
		t.Errorf("resume said %q", out)
	}
	sts, err = client.AppsV1().StatefulSets(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := sts.Annotations[policy.AnnotationPaused]; ok {
		t.Errorf("after resume, %s is still there: %q", policy.AnnotationPaused, v)
	}
	if !policy.Enabled(sts) {
		t.Errorf("resume lost the other annotations: %v", sts.Annotations)
	}
	assertPatch(t, client, `{"metadata":{"annotations":{"stsroller.io/paused":null},"uid":"sts-uid"}}`)
}

func assertPatch(t *testing.T, client *fake.Clientset, want string) {
	t.Helper()
	var patches []k8stesting.PatchAction
	for _, a := range client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			patches = append(patches, p)
		}
	}
	if len(patches) != 1 {
		t.Fatalf("want one patch, got %d", len(patches))
	}
	p := patches[0]
	if p.GetPatchType() != types.MergePatchType || p.GetResource().Resource != "statefulsets" || p.GetName() != "web" {
		t.Errorf("patch %s of %s %s, want a merge patch of statefulsets web", p.GetPatchType(), p.GetResource().Resource, p.GetName())
	}
	if string(p.GetPatch()) != want {
		t.Errorf("patch %s, want %s", p.GetPatch(), want)
	}
}

func TestPauseMissing(t *testing.T) {
	client := fake.NewClientset()
	if _, err := runWith(t, client, "pause", "nope"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("pausing a missing StatefulSet: want not found, got %v", err)
	}
}

// statusFixture: a Rolling status and 12 events on the StatefulSet, one on
// another object.
func statusFixture() []runtime.Object {
	st := policy.Status{
		Phase: policy.PhaseRolling, UpdateRevision: newRev, Replicas: 5, Updated: 1, Available: 4, UpdatedAvailable: 1,
		Reason: policy.ReasonDeletingPods, Message: "removing web-1, web-4; 1 of 5 pods updated",
		LastTransitionTime: metav1.NewTime(now.Add(-5 * time.Minute)), ObservedGeneration: 2,
		WaitingForDNS: map[string]string{"web-0": "not checked yet"},
	}
	sts := statefulSet(map[string]string{policy.AnnotationStatus: st.Encode()})
	objs := []runtime.Object{sts}
	for i := range 12 {
		objs = append(objs, &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web.%02d", i), Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "StatefulSet", Namespace: ns, Name: "web", UID: sts.UID,
				APIVersion: "apps/v1"},
			Type: corev1.EventTypeNormal, Reason: fmt.Sprintf("Reason%02d", i), Message: fmt.Sprintf("message %d", i),
			Count: 1, LastTimestamp: metav1.NewTime(now.Add(time.Duration(i-12) * time.Minute)),
		})
	}
	objs = append(objs, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "other.1", Namespace: ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "web-0", UID: "pod-0"},
		Type:           corev1.EventTypeWarning, Reason: "Unrelated", LastTimestamp: metav1.NewTime(now),
	})
	return objs
}

func TestStatusText(t *testing.T) {
	client := fake.NewClientset(statusFixture()...)
	out, err := runWith(t, client, "status", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"StatefulSet db/web",
		"Phase:            Rolling",
		"Reason:           DeletingPods",
		"Message:          removing web-1, web-4; 1 of 5 pods updated",
		"Revision:         web-new",
		"Replicas:         5 (updated 1, available 4, updated and available 1)",
		"Since:            2026-07-01T11:55:00Z",
		"Waiting for DNS:  web-0: not checked yet",
		"Events (newest last):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Reason00") || strings.Contains(out, "Reason01") || strings.Contains(out, "Unrelated") {
		t.Errorf("status shows old or unrelated events:\n%s", out)
	}
	if i, j := strings.Index(out, "Reason02"), strings.Index(out, "Reason11"); i < 0 || j < i {
		t.Errorf("want events Reason02..Reason11, newest last:\n%s", out)
	}
	var sawSelector bool
	for _, a := range client.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "events" {
			fs := l.GetListRestrictions().Fields.String()
			sawSelector = strings.Contains(fs, "involvedObject.uid=sts-uid") && strings.Contains(fs, "involvedObject.name=web")
		}
	}
	if !sawSelector {
		t.Errorf("events were not listed with an involvedObject field selector")
	}
}

func TestStatusJSON(t *testing.T) {
	client := fake.NewClientset(statusFixture()...)
	out, err := runWith(t, client, "status", "web", "--output=json")
	if err != nil {
		t.Fatal(err)
	}
	var got statusOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("status -o json is not JSON: %v\n%s", err, out)
	}
	if !got.Managed || got.Status == nil || got.Status.Phase != policy.PhaseRolling || got.Status.Updated != 1 {
		t.Errorf("status %+v", got.Status)
	}
	var reasons []string
	for _, e := range got.Events {
		reasons = append(reasons, e.Reason)
	}
	want := []string{"Reason02", "Reason03", "Reason04", "Reason05", "Reason06", "Reason07", "Reason08", "Reason09", "Reason10", "Reason11"}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestStatusWithoutAnnotation(t *testing.T) {
	client := fake.NewClientset(statefulSet(map[string]string{policy.AnnotationEnabled: "false"}))
	out, err := runWith(t, client, "status", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Not managed", "Status: none yet", "Events: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	out, err = runWith(t, client, "status", "web", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got["managed"] != false || got["status"] != nil || got["events"] == nil {
		t.Errorf("want managed false, status null, events [], got %s", out)
	}
}

func TestCommandLine(t *testing.T) {
	client := fake.NewClientset(statefulSet(nil))
	for _, tc := range []struct {
		args      []string
		wantUsage bool
		wantOut   string
	}{
		{args: nil, wantUsage: true},
		{args: []string{"frobnicate", "web"}, wantUsage: true},
		{args: []string{"status"}, wantUsage: true},
		{args: []string{"status", "web", "other"}, wantUsage: true},
		{args: []string{"status", "web", "-o", "yaml"}, wantUsage: true},
		{args: []string{"pause", "web", "-o", "json"}, wantUsage: true},
		{args: []string{"status", "web", "--bogus"}, wantUsage: true},
		{args: []string{"status", "web", "--all"}, wantUsage: true},
		{args: []string{"plan", "web", "--pod-ready", "5s"}, wantUsage: true},
		{args: []string{"plan", "web", "--all", "--pod-ready", "-5s"}, wantUsage: true},
		{args: []string{"plan", "web", "--all", "--pod-ready", "soon"}, wantUsage: true},
		{args: []string{"plan", "web", "--all"}, wantOut: "Forecast for StatefulSet db/web"},
		{args: []string{"--help"}, wantOut: "Usage:"},
		{args: []string{"help"}, wantOut: "Usage:"},
		// Flags before the subcommand, between, after; -- ends the flags.
		{args: []string{"-n", ns, "status", "web"}, wantOut: "StatefulSet db/web"},
		{args: []string{"status", "--namespace=" + ns, "web"}, wantOut: "StatefulSet db/web"},
		{args: []string{"status", "--", "web"}, wantOut: "StatefulSet db/web"},
	} {
		out, err := runWith(t, client, tc.args...)
		var ue *usageError
		if tc.wantUsage != errors.As(err, &ue) {
			t.Errorf("%q: error %v, want a usage error: %v", tc.args, err, tc.wantUsage)
		}
		if !tc.wantUsage && err != nil {
			t.Errorf("%q: %v", tc.args, err)
		}
		if !strings.Contains(out, tc.wantOut) {
			t.Errorf("%q: output lacks %q:\n%s", tc.args, tc.wantOut, out)
		}
	}
	// Another namespace reaches the client.
	if _, err := runWith(t, client, "status", "web", "-n", "elsewhere"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("status in another namespace: want not found, got %v", err)
	}
}

// plan names the pods asked to drain, since when, and whether they answered.
func TestPlanDraining(t *testing.T) {
	requested := now.Add(-30 * time.Second).Format(time.RFC3339)
	objs := fixture(statefulSet(map[string]string{policy.AnnotationDrainTimeoutSeconds: "60"}), func(pods []*corev1.Pod) {
		pods[4].Annotations = map[string]string{policy.AnnotationDrainRequested: requested}
		pods[3].Annotations = map[string]string{policy.AnnotationDrainRequested: requested, policy.AnnotationDrainComplete: "yes"}
	})
	client := fake.NewClientset(objs...)
	out, err := runWith(t, client, "plan", "web", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got planOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("plan -o json is not JSON: %v\n%s", err, out)
	}
	timeout := now.Add(30 * time.Second)
	want := []draining{
		{Pod: "web-3", Requested: requested, Complete: true, TimeoutAt: &timeout},
		{Pod: "web-4", Requested: requested, TimeoutAt: &timeout},
	}
	if diff := cmp.Diff(want, got.Draining); diff != "" {
		t.Errorf("draining (-want +got):\n%s", diff)
	}
	text, err := runWith(t, client, "plan", "web")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"Draining (asked to drain, not yet evicted):",
		"web-3  " + requested + "  drain complete",
		"web-4  " + requested + "  none yet; evicted anyway at " + timeout.Format(time.RFC3339) + " (in 30s)",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("text plan lacks %q:\n%s", w, text)
		}
	}
	assertNoWrites(t, client)
}

// TestPlanInRolloutGroup: plan NAME says what the controller would do for a
// member of a rollout group, not what the member would do alone (issue 15,
// item 12): while another member has replacements on their way, web waits.
func TestPlanInRolloutGroup(t *testing.T) {
	web := statefulSet(map[string]string{policy.AnnotationRolloutGroup: "db", policy.AnnotationRolloutGroupOrder: "1"})
	other := statefulSet(map[string]string{policy.AnnotationRolloutGroup: "db", policy.AnnotationRolloutGroupOrder: "0"})
	other.Name, other.UID = "api", "api-uid"
	other.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}
	other.Spec.Replicas = ptr.To[int32](2) // no pod yet: both are on their way
	client := fake.NewClientset(append(fixture(web, nil), other)...)
	out, err := runWith(t, client, "plan", "web", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got planOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(got.Deletions) != 0 || got.Status == nil || got.Status.Reason != policy.ReasonWaitingForGroup {
		t.Errorf("plan web = %+v, status %+v; want no deletion, reason %s", got.Deletions, got.Status, policy.ReasonWaitingForGroup)
	}
	assertNoWrites(t, client)
}
