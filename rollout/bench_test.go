package rollout

import (
	"context"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
)

// benchController is a controller over filled indexers: one StatefulSet of n
// pods, all updated and ready, a budget over them, other StatefulSets' pods in
// the namespace, the budgets of `others` other StatefulSets, and a status that
// will not change (a steady-state sync).
func benchController(b *testing.B, n, others int) (*Controller, *fake.Clientset) {
	b.Helper()
	sts := newSts("db", int32(n), nil)
	other := newSts("other", int32(n), nil)
	client := fake.NewClientset()
	factory := kinformers.NewSharedInformerFactory(client, 0)
	ctx := klog.NewContext(context.Background(), klog.Background().V(10))
	c, err := New(ctx, client, factory, Options{Recorder: record.NewFakeRecorder(1000),
		Clock: clocktesting.NewFakeClock(now), Metrics: metrics.New()})
	if err != nil {
		b.Fatal(err)
	}
	pods := factory.Core().V1().Pods().Informer().GetIndexer()
	var owned []*corev1.Pod
	for i := range n {
		p := newPod(sts, i, "new", true)
		owned = append(owned, p)
		if err := pods.Add(p); err != nil {
			b.Fatal(err)
		}
		if err := pods.Add(newPod(other, i, "new", true)); err != nil {
			b.Fatal(err)
		}
	}
	budgets := factory.Policy().V1().PodDisruptionBudgets().Informer().GetIndexer()
	if err := budgets.Add(budgetFor("db", "db")); err != nil {
		b.Fatal(err)
	}
	for i := range others {
		name := fmt.Sprintf("other-%d", i)
		if err := budgets.Add(budgetFor(name, name)); err != nil {
			b.Fatal(err)
		}
	}
	// The status the first sync writes, already in place.
	in, err := c.input(ctx, key(sts), sts)
	if err != nil {
		b.Fatal(err)
	}
	plan := policy.Compute(in.Input)
	sts.Annotations[policy.AnnotationStatus] = plan.Status.Encode()
	if err := factory.Apps().V1().StatefulSets().Informer().GetIndexer().Add(sts); err != nil {
		b.Fatal(err)
	}
	_ = owned
	return c, client
}

// BenchmarkSync: one steady-state sync of one StatefulSet through the shell
// (gather from the indexers, plan, status compare), and the planner alone on
// the same input, so the shell's share is the difference. With budgets=400
// the namespace holds 400 other StatefulSets' budgets too, as in make
// bench-scale.
//
//	go test -run XXX -bench BenchmarkSync -benchmem ./rollout/
func BenchmarkSync(b *testing.B) {
	for _, tc := range []struct{ n, others int }{{100, 0}, {5000, 0}, {5000, 400}} {
		n := tc.n
		c, client := benchController(b, n, tc.others)
		k := key(newSts("db", 0, nil))
		ctx := context.Background()
		size := fmt.Sprintf("pods=%d", n)
		if tc.others > 0 {
			size += fmt.Sprintf("/budgets=%d", tc.others+1)
		}
		b.Run("shell+planner/"+size, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.sync(ctx, k); err != nil {
					b.Fatal(err)
				}
			}
			if a := client.Actions(); len(a) != 0 {
				b.Fatalf("a steady-state sync acted: %v", describe(a))
			}
		})
		sts, _ := c.stsLister.StatefulSets(k.Namespace).Get(k.Name)
		b.Run("gather/"+size, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.input(ctx, k, sts); err != nil {
					b.Fatal(err)
				}
			}
		})
		in, _ := c.input(ctx, k, sts)
		b.Run("planner/"+size, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				policy.Compute(in.Input)
			}
		})
	}
}
