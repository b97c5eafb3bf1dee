package rbaccheck

import (
	"slices"
	"strings"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRecorderChecksTheClusterRole: an eviction and a status patch are
// granted; a deletecollection of pods and a get of Secrets are not, and
// Check names both.
func TestRecorderChecksTheClusterRole(t *testing.T) {
	var r Recorder
	if err := r.Check(); err == nil {
		t.Error("Check of nothing recorded passed")
	}
	client := fake.NewClientset()
	r.Watch(client)
	ctx := t.Context()
	_ = client.CoreV1().Pods("ns").EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "ns"}})
	_, _ = client.AppsV1().StatefulSets("ns").Patch(ctx, "web", types.MergePatchType, []byte(`{}`), metav1.PatchOptions{})
	if err := r.Check(); err != nil {
		t.Errorf("granted requests: %v", err)
	}
	_ = client.CoreV1().Pods("ns").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	_, _ = client.CoreV1().Secrets("ns").Get(ctx, "s", metav1.GetOptions{})
	err := r.Check()
	if err == nil {
		t.Fatal("Check passed a deletecollection of pods and a get of secrets")
	}
	for _, want := range []string{"deletecollection core pods", "get core secrets"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check's error does not name %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "eviction") {
		t.Errorf("Check names a granted request: %v", err)
	}
}

// TestRecorderChecksWatchesAndLists: watches go through the fake's watch
// reaction chain, lists through the other; both are recorded and checked.
func TestRecorderChecksWatchesAndLists(t *testing.T) {
	var r Recorder
	client := fake.NewClientset()
	r.Watch(client)
	ctx := t.Context()
	w, err := client.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.Stop()
	_, _ = client.AppsV1().StatefulSets("").List(ctx, metav1.ListOptions{})
	if err := r.Check(); err != nil {
		t.Errorf("granted watch and list: %v", err)
	}
	want := []Request{{Verb: "list", Group: "apps", Resource: "statefulsets"}, {Verb: "watch", Group: "", Resource: "pods"}}
	if got := r.Requests(); !slices.Equal(got, want) {
		t.Errorf("recorded %v, want %v", got, want)
	}
	if w, err := client.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{}); err == nil {
		w.Stop()
	}
	_, _ = client.CoreV1().ConfigMaps("ns").List(ctx, metav1.ListOptions{})
	err = r.Check()
	for _, want := range []string{"watch core secrets", "list core configmaps"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check's error does not name %q: %v", want, err)
		}
	}
}
