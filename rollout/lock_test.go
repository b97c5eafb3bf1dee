package rollout

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/policy"
)

// The Lease shell against a fake coordination cluster (not watched by
// rbaccheck: its rules are the overlay's, get/create/update on Leases).
func newTestLocks(t *testing.T) (*leaseLocks, *fake.Clientset, *clocktesting.FakeClock) {
	t.Helper()
	client := fake.NewClientset()
	clk := clocktesting.NewFakeClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	return newLeaseLocks(LockOptions{Client: client.CoordinationV1(), Namespace: "locks", Cluster: "eu", TTL: 30 * time.Second}, clk), client, clk
}

func lease(t *testing.T, client *fake.Clientset) *coordinationv1.Lease {
	t.Helper()
	l, err := client.CoordinationV1().Leases("locks").Get(context.Background(), policy.LeaseName("db"), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading the Lease: %v", err)
	}
	return l
}

func TestLeaseTakeRenewRelease(t *testing.T) {
	ctx := context.Background()
	l, client, clk := newTestLocks(t)
	if rec, err := l.record(ctx, "db", "eu/ns/web"); err != nil || rec.Exists {
		t.Fatalf("record before any Lease: %+v, %v", rec, err)
	}
	if ok, err := l.take(ctx, "db", "eu/ns/web"); !ok || err != nil {
		t.Fatalf("take: %v, %v", ok, err)
	}
	got := lease(t, client)
	if ptr.Deref(got.Spec.HolderIdentity, "") != "eu/ns/web" || ptr.Deref(got.Spec.LeaseDurationSeconds, 0) != 30 {
		t.Fatalf("Lease after take: %+v", got.Spec)
	}
	first := got.Spec.RenewTime.Time
	clk.Step(11 * time.Second)
	if ok, err := l.renew(ctx, "db", "eu/ns/web"); !ok || err != nil {
		t.Fatalf("renew: %v, %v", ok, err)
	}
	if got := lease(t, client); !got.Spec.RenewTime.Time.After(first) {
		t.Errorf("renewal did not move renewTime: %v", got.Spec.RenewTime)
	}
	if err := l.release(ctx, "db", "eu/ns/web"); err != nil {
		t.Fatalf("release: %v", err)
	}
	if got := lease(t, client); got.Spec.HolderIdentity != nil {
		t.Errorf("released Lease still has a holder: %v", *got.Spec.HolderIdentity)
	}
	if held := l.heldBy("eu/ns/web"); len(held) != 0 {
		t.Errorf("still held after release: %v", held)
	}
}

func TestLeaseConflicts(t *testing.T) {
	ctx := context.Background()
	l, client, _ := newTestLocks(t)
	// Another region creates the Lease between our read and our create.
	if _, err := l.record(ctx, "db", "eu/ns/web"); err != nil {
		t.Fatal(err)
	}
	client.PrependReactor("create", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewAlreadyExists(coordinationv1.Resource("leases"), policy.LeaseName("db"))
	})
	if ok, err := l.take(ctx, "db", "eu/ns/web"); ok || err != nil {
		t.Fatalf("take over a create race: %v, %v; want false, nil", ok, err)
	}
	// An update that conflicts is no error either: read again, later.
	_, _ = client.CoordinationV1().Leases("locks").Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: policy.LeaseName("db"), Namespace: "locks"}}, metav1.CreateOptions{})
	if _, err := l.record(ctx, "db", "eu/ns/web"); err != nil {
		t.Fatal(err)
	}
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), policy.LeaseName("db"), nil)
	})
	if ok, err := l.take(ctx, "db", "eu/ns/web"); ok || err != nil {
		t.Fatalf("take on a conflict: %v, %v; want false, nil", ok, err)
	}
	if _, seen := l.seen["db"]; seen {
		t.Errorf("a conflict keeps the stale Lease instead of reading it again")
	}
}

func TestLeaseTakeOverAfterTTL(t *testing.T) {
	ctx := context.Background()
	l, client, clk := newTestLocks(t)
	now := metav1.NewMicroTime(clk.Now())
	_, _ = client.CoordinationV1().Leases("locks").Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: policy.LeaseName("db"), Namespace: "locks", ResourceVersion: "1"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("us/ns/web"), LeaseDurationSeconds: ptr.To(int32(30)),
			AcquireTime: &now, RenewTime: &now}}, metav1.CreateOptions{})
	decide := func() policy.LockDecision {
		rec, err := l.record(ctx, "db", "eu/ns/web")
		if err != nil {
			t.Fatal(err)
		}
		return policy.DecideLock(policy.LockInput{Name: "db", Self: "eu/ns/web", Need: policy.NeedTake, Record: rec, TTL: l.opts.TTL, Now: clk.Now()})
	}
	if d := decide(); d.Action != policy.LockWait || d.Holder != "us/ns/web" {
		t.Fatalf("while the holder's lease runs: %+v", d)
	}
	clk.Step(31 * time.Second) // the holder renewed nothing meanwhile
	d := decide()
	if d.Action != policy.LockTake || d.TakenFrom != "us/ns/web" {
		t.Fatalf("after the TTL: %+v", d)
	}
	if ok, err := l.take(ctx, "db", "eu/ns/web"); !ok || err != nil {
		t.Fatalf("take over: %v, %v", ok, err)
	}
	got := lease(t, client)
	if ptr.Deref(got.Spec.HolderIdentity, "") != "eu/ns/web" || ptr.Deref(got.Spec.LeaseTransitions, 0) != 1 {
		t.Errorf("after the take-over: %+v", got.Spec)
	}
}
