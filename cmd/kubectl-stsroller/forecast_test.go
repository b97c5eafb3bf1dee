package main

import (
	"encoding/json"
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
	"k8s.io/client-go/kubernetes/fake"

	"github.com/stsroller/stsroller/policy"
)

// stepPods is what a test compares of a forecast: each step's StatefulSet,
// start and pods.
func stepPods(o forecastOutput) []string {
	var out []string
	for _, s := range o.Steps {
		var ps []string
		for _, p := range s.Pods {
			ps = append(ps, p.Pod+":"+p.Method)
		}
		out = append(out, fmt.Sprintf("%s@%gs %s", s.StatefulSet, s.AtSeconds, strings.Join(ps, ",")))
	}
	return out
}

func runForecast(t *testing.T, objs []runtime.Object, args ...string) forecastOutput {
	t.Helper()
	client := fake.NewClientset(objs...)
	out, err := runWith(t, client, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var o forecastOutput
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	assertNoWrites(t, client)
	return o
}

func TestForecastOne(t *testing.T) {
	o := runForecast(t, fixture(statefulSet(nil), nil), "plan", "web", "--all", "--pod-ready", "10s")
	want := []string{"web@0s web-1:Delete,web-4:Evict", "web@10s web-3:Evict,web-2:Evict"}
	if diff := cmp.Diff(want, stepPods(o)); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if o.TotalSeconds != 20 || !o.Complete {
		t.Errorf("total %vs complete %v, want 20s, complete", o.TotalSeconds, o.Complete)
	}
}

// Times are measured from the pods (creation to Ready) and from stsroller's
// events (deletion to re-creation).
func TestForecastMeasuresTimes(t *testing.T) {
	objs := fixture(statefulSet(nil), func(pods []*corev1.Pod) {
		for i, p := range pods {
			created := now.Add(-time.Hour + time.Duration(i)*time.Minute)
			p.CreationTimestamp = metav1.NewTime(created)
			p.Status.Conditions[0].LastTransitionTime = metav1.NewTime(created.Add(time.Duration(4+i%2) * time.Second))
		}
	})
	for i, gap := range []time.Duration{2 * time.Second, 3 * time.Second, 20 * time.Minute} {
		p := objs[2+i].(*corev1.Pod)
		objs = append(objs, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("e%d", i), Namespace: ns},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: p.Name, Namespace: ns},
			Reason:         policy.ReasonEvictedPod,
			LastTimestamp:  metav1.NewTime(p.CreationTimestamp.Add(-gap)),
		})
	}
	o := runForecast(t, objs, "plan", "web", "--all")
	got := o.Timing["web"]
	// Ready: 4s, 4s, 5s, 4s (web-1 is not Ready): mean 4.25s. Gaps: 2s and
	// 3s (20 minutes is another story): mean 2.5s.
	if got.ReadySeconds != 4.25 || got.TerminateSeconds != 2.5 {
		t.Errorf("timing %+v, want Ready 4.25s, deletion to re-creation 2.5s", got)
	}
	if o.TotalSeconds != 13.5 {
		t.Errorf("total %vs, want two steps of 2.5s + 4.25s", o.TotalSeconds)
	}
}

// member is a StatefulSet of rollout group "db" with pods <name>-<i> at the
// revisions given, broken where the ordinal is in broken.
func groupMember(name string, order string, revs []string, broken ...int) []runtime.Object {
	sts := statefulSet(map[string]string{policy.AnnotationRolloutGroup: "db", policy.AnnotationRolloutGroupOrder: order,
		policy.AnnotationMaxUnavailable: "1"})
	sts.Name, sts.UID = name, types.UID(name+"-uid")
	sts.Spec.Replicas = ptrInt32(int32(len(revs)))
	sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}
	objs := []runtime.Object{sts}
	for i, rev := range revs {
		p := pod(i, rev, false)
		for _, b := range broken {
			if b == i {
				p = pod(i, rev, true)
			}
		}
		p.Name, p.UID = fmt.Sprintf("%s-%d", name, i), types.UID(fmt.Sprintf("%s-%d", name, i))
		p.Labels["app"] = name
		p.OwnerReferences[0].Name, p.OwnerReferences[0].UID = name, sts.UID
		objs = append(objs, p)
	}
	return objs
}

func ptrInt32(v int32) *int32 { return &v }

func TestForecastGroup(t *testing.T) {
	var objs []runtime.Object
	objs = append(objs, groupMember("zone-a", "0", []string{oldRev, oldRev})...)
	objs = append(objs, groupMember("zone-b", "0", []string{oldRev, oldRev}, 0)...)
	objs = append(objs, groupMember("zone-c", "-1", []string{oldRev, oldRev})...)
	other := statefulSet(nil)
	other.Name = "other"
	objs = append(objs, other)
	o := runForecast(t, objs, "plan", "zone-a", "--all", "--pod-ready", "10s")
	want := []string{
		"zone-b@0s zone-b-0:Delete", "zone-b@10s zone-b-1:Evict",
		"zone-c@20s zone-c-1:Evict", "zone-c@30s zone-c-0:Evict",
		"zone-a@40s zone-a-1:Evict", "zone-a@50s zone-a-0:Evict",
	}
	if diff := cmp.Diff(want, stepPods(o)); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	var names []string
	for _, m := range o.Members {
		names = append(names, m.Name)
	}
	if diff := cmp.Diff([]string{"zone-b", "zone-c", "zone-a"}, names); diff != "" {
		t.Errorf("members (-want +got):\n%s", diff)
	}
	if o.Group != "db" || o.TotalSeconds != 60 || !o.Complete {
		t.Errorf("group %q total %vs complete %v, want db, 60s, complete", o.Group, o.TotalSeconds, o.Complete)
	}
	if s := o.Steps[0]; !cmp.Equal(s.Waiting, []string{"zone-a", "zone-c"}) {
		t.Errorf("first step: waiting %v, want zone-a, zone-c", s.Waiting)
	}

	// The text names the order, the group, each step and the total.
	client := fake.NewClientset(objs...)
	out, err := runWith(t, client, "plan", "zone-a", "--all", "--pod-ready", "10s")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{`rollout group "db"`, "in the order they roll: zone-b, zone-c, zone-a", "zone-b-0  Delete",
		"WaitingForGroup", "Complete after 1m0s (estimated)"} {
		if !strings.Contains(out, part) {
			t.Errorf("text lacks %q:\n%s", part, out)
		}
	}
}

// A paused member: the forecast says where it stops.
func TestForecastGroupHeld(t *testing.T) {
	objs := groupMember("zone-a", "0", []string{oldRev})
	held := groupMember("zone-b", "0", []string{oldRev})
	held[0].(*appsv1.StatefulSet).Annotations[policy.AnnotationPaused] = "true"
	objs = append(objs, held...)
	o := runForecast(t, objs, "plan", "zone-a", "--all", "--pod-ready", "10s")
	if len(o.Steps) != 0 || o.Complete || !cmp.Equal(o.Blocked, []string{"zone-a", "zone-b"}) {
		t.Errorf("steps %v complete %v blocked %v, want none, not complete, blocked at zone-a and zone-b", stepPods(o), o.Complete, o.Blocked)
	}
	client := fake.NewClientset(objs...)
	out, _ := runWith(t, client, "plan", "zone-a", "--all", "--pod-ready", "10s")
	if !strings.Contains(out, `rollout group "db" is held by zone-b: it is paused`) {
		t.Errorf("text does not say who holds the group:\n%s", out)
	}
}
