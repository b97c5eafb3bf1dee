package rbaccheck_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/stsroller/stsroller/deploy/rbaccheck"
	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/rollout"
)

// TestInformersListAndWatchWhatTheClusterRoleGrants wires the controller's
// informers as cmd/stsroller's runController does (informers.NewFactory,
// informers.NewPodFactory, rollout.New), starts them against a fake
// clientset and waits for their caches: every list and watch they make is
// granted, and every list and watch the ClusterRole grants is made, so
// stsroller lists nothing it does not use. The unit tests of rollout and
// dnsgate fill indexers instead of starting informers, so this is where
// their requests are seen.
func TestInformersListAndWatchWhatTheClusterRoleGrants(t *testing.T) {
	var r rbaccheck.Recorder
	client := fake.NewClientset()
	r.Watch(client)
	ctx := t.Context()
	factory := informers.NewFactory(client, "", 10*time.Minute)
	podFactory := informers.NewPodFactory(client, "", 10*time.Minute)
	if _, err := rollout.New(ctx, client, factory, rollout.Options{Recorder: record.NewFakeRecorder(100), PodFactory: podFactory}); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	podFactory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown)
	t.Cleanup(podFactory.Shutdown)
	for _, f := range []kinformers.SharedInformerFactory{factory, podFactory} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				t.Fatalf("the informer of %s did not sync", typ)
			}
		}
	}
	// An informer watches right after its list; the caches can sync first.
	want := grantedReads(t)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(r.Requests(), want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.Check(); err != nil {
		t.Error(err)
	}
	if got := r.Requests(); !slices.Equal(got, want) {
		t.Errorf("the informers made %v; the ClusterRole grants list and watch on %v", got, want)
	}
}

// grantedReads are the list and watch requests the ClusterRole grants, in
// Recorder.Requests' order.
func grantedReads(t *testing.T) []rbaccheck.Request {
	t.Helper()
	rules, err := rbaccheck.ClusterRoleRules()
	if err != nil {
		t.Fatal(err)
	}
	var out []rbaccheck.Request
	for _, ru := range rules {
		for _, verb := range ru.Verbs {
			if verb != "list" && verb != "watch" {
				continue
			}
			for _, g := range ru.APIGroups {
				for _, res := range ru.Resources {
					out = append(out, rbaccheck.Request{Verb: verb, Group: g, Resource: res})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b rbaccheck.Request) int { return strings.Compare(a.String(), b.String()) })
	return out
}
