package rollout

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/policy"
)

// Three members of rollout group "db" and one StatefulSet outside it, all
// outdated; zone-b has a broken pod. Only zone-b deletes; zone-a and zone-c
// say they wait for it; "other" rolls on its own.
func TestSyncRolloutGroup(t *testing.T) {
	f := newFixture(t)
	member := func(name string) *appsv1.StatefulSet {
		return newSts(name, 2, map[string]string{policy.AnnotationRolloutGroup: "db"})
	}
	a, b, c, other := member("zone-a"), member("zone-b"), member("zone-c"), newSts("other", 2, nil)
	f.sts = append(f.sts, a, b, c, other)
	for _, s := range f.sts {
		f.pods = append(f.pods, newPod(s, 0, "old", s != b), newPod(s, 1, "old", true))
	}
	for _, s := range []*appsv1.StatefulSet{a, c, b, other} {
		if err := f.run(key(s)); err != nil {
			t.Fatal(err)
		}
	}
	var deletes []string
	for _, d := range describe(f.actions()) {
		if !strings.HasPrefix(d, "patch") && !strings.HasPrefix(d, "get") {
			deletes = append(deletes, d)
		}
	}
	want := []string{"create pods/eviction other-1", "delete pods zone-b-0"}
	if diff := cmp.Diff(want, deletes); diff != "" {
		t.Errorf("deletions (-want +got):\n%s", diff)
	}
	statuses := map[string]*policy.Status{}
	for _, act := range f.actions() {
		p, ok := act.(core.PatchAction)
		if !ok || p.GetResource().Resource != "statefulsets" {
			continue
		}
		var obj struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(p.GetPatch(), &obj); err != nil {
			t.Fatal(err)
		}
		statuses[p.GetName()] = policy.ParseStatus(obj.Metadata.Annotations)
	}
	for _, s := range []*appsv1.StatefulSet{a, c} {
		st := statuses[s.Name]
		if st == nil || st.Phase != policy.PhaseRolling || st.Reason != policy.ReasonWaitingForGroup || !strings.Contains(st.Message, "zone-b goes first") {
			t.Errorf("%s: status %+v, want Rolling/%s naming zone-b", s.Name, st, policy.ReasonWaitingForGroup)
		}
	}

	// The members' summaries are noted; zone-b's changes wake zone-a and
	// zone-c, through the index, and nothing outside the group.
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		f.c.queue.Forget(k)
	}
	f.c.noteMember(key(b), nil, policy.Input{}) // zone-b is gone
	var woken []string
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		woken = append(woken, k.Name)
		f.c.queue.Done(k)
	}
	slices.Sort(woken)
	if diff := cmp.Diff([]string{"zone-a", "zone-c"}, woken); diff != "" {
		t.Errorf("woken (-want +got):\n%s", diff)
	}
}

// A member deleted before this process ever synced it still wakes the
// members waiting for it (issue 15, item 13); the group locks go with
// their last user.
func TestDeletedMemberWakesItsGroup(t *testing.T) {
	f := newFixture(t)
	member := func(name string) *appsv1.StatefulSet {
		return newSts(name, 2, map[string]string{policy.AnnotationRolloutGroup: "db"})
	}
	a, b := member("zone-a"), member("zone-b")
	f.sts = append(f.sts, a, b)
	// The first run sets the fixture up; the StatefulSet it asks for does not exist.
	if err := f.run(cache.ObjectName{Namespace: "ns", Name: "none"}); err != nil {
		t.Fatal(err)
	}
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		f.c.queue.Done(k)
		f.c.queue.Forget(k)
	}
	if err := f.c.stsIndexer.Delete(b); err != nil {
		t.Fatal(err)
	}
	f.c.deleteStatefulSet(b)
	var woken []string
	for f.c.queue.Len() > 0 {
		k, _ := f.c.queue.Get()
		woken = append(woken, k.Name)
		f.c.queue.Done(k)
	}
	slices.Sort(woken)
	if diff := cmp.Diff([]string{"zone-a", "zone-b"}, woken); diff != "" {
		t.Errorf("woken (-want +got):\n%s", diff)
	}

	unlock := f.c.groups.lock(a)
	if n := len(f.c.groups.locks); n != 1 {
		t.Errorf("%d group locks held, want 1", n)
	}
	unlock()
	if n := len(f.c.groups.locks); n != 0 {
		t.Errorf("%d group locks left after the last unlock, want 0", n)
	}
}
