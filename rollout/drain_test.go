package rollout

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/policy"
)

func drainSts() map[string]string {
	return map[string]string{policy.AnnotationDrainTimeoutSeconds: "60"}
}

// A healthy pod is asked to drain with a patch that only applies to the pod
// as planned (UID and resourceVersion), and DrainRequested is recorded.
func TestSyncAsksToDrainInsteadOfEvicting(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, drainSts())
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	want := []string{"get statefulsets web", "patch pods web-2", "patch statefulsets web"}
	if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	p := f.actions()[1].(core.PatchAction)
	var body struct {
		Metadata struct {
			UID             string            `json:"uid"`
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(p.GetPatch(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Metadata.UID != "web-2-uid" || body.Metadata.ResourceVersion != "7" {
		t.Errorf("patch %s lacks the pod's UID and resourceVersion", p.GetPatch())
	}
	var raw struct {
		Metadata struct {
			Annotations map[string]*string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(p.GetPatch(), &raw); err != nil {
		t.Fatal(err)
	}
	if got := body.Metadata.Annotations[policy.AnnotationDrainRequested]; got != now.Format(time.RFC3339Nano) {
		t.Errorf("%s = %q, want %q", policy.AnnotationDrainRequested, got, now.Format(time.RFC3339Nano))
	}
	if got := body.Metadata.Annotations[policy.AnnotationDrainRevision]; got != sts.Status.UpdateRevision {
		t.Errorf("%s = %q, want the update revision %q", policy.AnnotationDrainRevision, got, sts.Status.UpdateRevision)
	}
	// The same patch removes an earlier answer: only one given after the
	// request counts.
	if v, ok := raw.Metadata.Annotations[policy.AnnotationDrainComplete]; !ok || v != nil {
		t.Errorf("patch %s does not remove %s", p.GetPatch(), policy.AnnotationDrainComplete)
	}
	if st := f.status(); st == nil || st.Reason != policy.ReasonWaitingForDrain || !strings.Contains(st.Message, "web-2") {
		t.Errorf("status = %+v, want reason %s naming web-2", st, policy.ReasonWaitingForDrain)
	}
	if ev := strings.Join(f.events(), "\n"); !strings.Contains(ev, "Normal "+policy.ReasonDrainRequested) {
		t.Errorf("events %q lack %s", ev, policy.ReasonDrainRequested)
	}
}

func TestSyncEvictsAfterTheDrain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ago      time.Duration
		complete bool
		want     string
		result   string
	}{
		{name: "answered", ago: 10 * time.Second, complete: true, want: "Normal " + policy.ReasonDrainCompleted, result: "Completed"},
		{name: "timed out", ago: 61 * time.Second, want: "Warning " + policy.ReasonDrainTimeout, result: "TimedOut"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sts := newSts("web", 3, drainSts())
			f.sts = append(f.sts, sts)
			asked := newPod(sts, 2, "old", true)
			asked.Annotations = map[string]string{policy.AnnotationDrainRequested: now.Add(-tc.ago).Format(time.RFC3339),
				policy.AnnotationDrainRevision: sts.Status.UpdateRevision}
			if tc.complete {
				asked.Annotations[policy.AnnotationDrainComplete] = "yes"
			}
			f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), asked)
			if err := f.run(key(sts)); err != nil {
				t.Fatal(err)
			}
			want := []string{"get statefulsets web", "create pods/eviction web-2", "patch statefulsets web"}
			if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
				t.Fatalf("actions (-want +got):\n%s", diff)
			}
			ev := strings.Join(f.events(), "\n")
			if !strings.Contains(ev, tc.want) || !strings.Contains(ev, policy.ReasonEvictedPod) {
				t.Errorf("events %q lack %s and %s", ev, tc.want, policy.ReasonEvictedPod)
			}
			want = []string{`stsroller_drain_duration_seconds_count{result="` + tc.result + `"} 1`,
				`stsroller_drain_duration_seconds_sum{result="` + tc.result + `"} ` + strconv.Itoa(int(tc.ago/time.Second))}
			text := metricsText(t, f)
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("metrics lack %q:\n%s", w, text)
				}
			}
		})
	}
}

// A pod that changed since the plan (409) is not asked: the next plan looks
// again, and no event claims a request.
func TestSyncDrainRequestConflictIsNotAnError(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, drainSts())
	f.sts = append(f.sts, sts)
	f.pods = append(f.pods, newPod(sts, 0, "old", true), newPod(sts, 1, "old", true), newPod(sts, 2, "old", true))
	// The first run sets the fixture up; the StatefulSet it asks for does not exist.
	if err := f.run(cache.ObjectName{Namespace: "ns", Name: "none"}); err != nil {
		t.Fatal(err)
	}
	f.client.PrependReactor("patch", "pods", func(core.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "web-2", nil)
	})
	if err := f.run(key(sts)); err != nil {
		t.Fatalf("sync = %v, want nil on a conflict", err)
	}
	if ev := strings.Join(f.events(), "\n"); strings.Contains(ev, policy.ReasonDrainRequested) {
		t.Errorf("events %q claim a request that was refused", ev)
	}
	// Not at once: a pod that keeps changing must be no hot loop.
	if n := f.c.queue.Len(); n != 0 {
		t.Errorf("queue length = %d right after the conflict, want 0", n)
	}
	f.clock.Step(conflictRetry)
	if err := waitFor(func() bool { return f.c.queue.Len() == 1 }); err != nil {
		t.Errorf("not planned again %s after the conflict", conflictRetry)
	}
}

// Drain requests the plan no longer stands by are removed, the answer with
// them, by a patch made against the pod as planned, with an event on the
// pod; and the handshake turned off records no DrainTimeout for a pod that
// still carries a request (issue 15, item 12).
func TestSyncWithdrawsLeftoverDrainRequests(t *testing.T) {
	f := newFixture(t)
	sts := newSts("web", 3, map[string]string{policy.AnnotationMaxUnavailable: "1"})
	f.sts = append(f.sts, sts)
	left := newPod(sts, 1, "old", true)
	left.Annotations = map[string]string{policy.AnnotationDrainRequested: now.Add(-time.Hour).Format(time.RFC3339),
		policy.AnnotationDrainRevision: sts.Status.UpdateRevision, policy.AnnotationDrainComplete: "done"}
	evicted := newPod(sts, 2, "old", true)
	evicted.Annotations = map[string]string{policy.AnnotationDrainRequested: now.Add(-time.Hour).Format(time.RFC3339),
		policy.AnnotationDrainRevision: sts.Status.UpdateRevision}
	f.pods = append(f.pods, newPod(sts, 0, "old", true), left, evicted)
	if err := f.run(key(sts)); err != nil {
		t.Fatal(err)
	}
	want := []string{"get statefulsets web", "create pods/eviction web-2", "patch pods web-1", "patch statefulsets web"}
	if diff := cmp.Diff(want, describe(f.actions())); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	var raw struct {
		Metadata struct {
			UID             string             `json:"uid"`
			ResourceVersion string             `json:"resourceVersion"`
			Annotations     map[string]*string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(f.actions()[2].(core.PatchAction).GetPatch(), &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Metadata.UID != string(left.UID) || raw.Metadata.ResourceVersion != left.ResourceVersion {
		t.Errorf("withdrawal %+v is not made against the pod as planned", raw.Metadata)
	}
	for _, k := range []string{policy.AnnotationDrainRequested, policy.AnnotationDrainRevision, policy.AnnotationDrainComplete} {
		if v, ok := raw.Metadata.Annotations[k]; !ok || v != nil {
			t.Errorf("withdrawal does not remove %s", k)
		}
	}
	ev := strings.Join(f.events(), "\n")
	if !strings.Contains(ev, "Normal "+policy.ReasonDrainWithdrawn) {
		t.Errorf("events %q lack %s", ev, policy.ReasonDrainWithdrawn)
	}
	if strings.Contains(ev, policy.ReasonDrainTimeout) || strings.Contains(ev, policy.ReasonDrainCompleted) {
		t.Errorf("events %q report a drain, with the handshake off", ev)
	}
}

// metricsText renders the drain duration metric's count and sum, as the
// text format would.
func metricsText(t *testing.T, f *fixture) string {
	t.Helper()
	families, err := f.c.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range families {
		if mf.GetName() != "stsroller_drain_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			l := strings.Join(labels, ",")
			fmt.Fprintf(&b, "%s_count{%s} %d\n", mf.GetName(), l, m.GetHistogram().GetSampleCount())
			fmt.Fprintf(&b, "%s_sum{%s} %g\n", mf.GetName(), l, m.GetHistogram().GetSampleSum())
		}
	}
	return b.String()
}
