//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/cluster"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// The rollout lock across clusters (stsroller.io/rollout-lock, issue 19) on
// two real control planes: region 1 is the cluster of the other tests, and
// the coordination cluster; region 2 is a second, smaller local cluster
// (its own etcd, kube-apiserver, kube-controller-manager, scheduler and kwok)
// started once for these tests. Each region runs its own stsroller, and both
// hold the lock through a ServiceAccount of deploy/coordination in region 1,
// with only its Role's rights.

var region2 struct {
	once    sync.Once
	cluster *cluster.Cluster
	client  kubernetes.Interface
	err     error
}

// secondRegion returns the second cluster's admin client and kubeconfig,
// starting the cluster on first use; it stops after the last test.
func secondRegion(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	if framework.Deployed() {
		t.Skip("the lock tests run their own stsroller processes, one per cluster")
	}
	region2.once.Do(func() {
		start := time.Now()
		c, err := cluster.Start(context.Background(), cluster.Options{Nodes: 1, KeepWorkDir: os.Getenv("STSROLLER_E2E_KEEP") != ""})
		if err != nil {
			region2.err = err
			return
		}
		onExit(c.Stop)
		region2.cluster = c
		region2.client, region2.err = kubernetes.NewForConfig(c.Config)
		fmt.Fprintf(os.Stderr, "e2e: second cluster (region 2) serving in %s\n", time.Since(start).Round(time.Millisecond))
	})
	if region2.err != nil {
		if os.Getenv(framework.EnvControllerKubeconfig) == "" {
			// Not the local cluster of e2e/cluster (kind, say): the
			// binaries for a second one may be missing.
			t.Skipf("no second local cluster beside KUBECONFIG's (set STSROLLER_BIN_DIR to the binaries of hack/tools.sh): %v", region2.err)
		}
		t.Fatalf("starting the second cluster: %v", region2.err)
	}
	return region2.client, region2.cluster.Kubeconfig
}

// lockRegions is one StatefulSet per region under one rollout lock, each
// with its own stsroller.
type lockRegions struct {
	t       *testing.T
	r       [2]*rollout
	ctl     [2]*framework.Controller
	lock    string
	lockNS  string
	coordKC string
}

// newLockRegions creates the coordination namespace in region 1 from
// deploy/coordination, a StatefulSet of n pods in each region annotated with
// the lock, and starts both controllers with extra args.
func newLockRegions(t *testing.T, n int32, maxUnavailable string, args ...string) *lockRegions {
	t.Helper()
	client2, kc2 := secondRegion(t)
	client1 := framework.Client(t)
	l := &lockRegions{t: t, lock: "db-" + strings.ToLower(strings.TrimPrefix(t.Name(), "TestRolloutLock"))}
	l.lockNS = framework.Namespace(t.Context(), t, client1)
	objs, err := deploy.Coordination(l.lockNS)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		// The Namespace exists already: the test's own.
		if ok, err := createObject(t.Context(), client1, o); err != nil || !ok {
			t.Fatalf("deploy/coordination's %T: %v", o, err)
		}
	}
	l.coordKC = tokenKubeconfig(t, client1, l.lockNS, deploy.LockServiceAccount)
	ann := map[string]string{policy.AnnotationMaxUnavailable: maxUnavailable, policy.AnnotationRolloutLock: l.lock}
	l.r[0] = newRolloutIn(t, client1, rolloutOptions{replicas: n, annotations: ann, noControllerYet: true})
	l.r[1] = newRolloutIn(t, client2, rolloutOptions{replicas: n, annotations: ann, noControllerYet: true})
	for i, kc := range []string{"", kc2} {
		l.ctl[i] = framework.StartController(t, l.r[i].client, framework.ControllerOptions{
			Binary: binary(t), Namespace: l.r[i].ns, Kubeconfig: kc, Name: fmt.Sprintf("stsroller-region-%d", i+1),
			Args: append([]string{"--lock-kubeconfig=" + l.coordKC, "--lock-namespace=" + l.lockNS,
				fmt.Sprintf("--cluster-name=region-%d", i+1)}, args...),
		})
		l.r[i].controller = l.ctl[i]
	}
	return l
}

// regionState is what a poll of one region saw: pods at the old revision,
// pods updated and Ready, pods in all.
type regionState struct{ old, updatedReady, total int }

func (s regionState) started(n int) bool { return s.old < n }
func (s regionState) done(n int) bool    { return s.updatedReady == n && s.total == n }

// poll reads a region's pods without failing the test (it runs beside it).
func (l *lockRegions) poll(ctx context.Context, i int, oldRev, newRev string) (regionState, error) {
	r := l.r[i]
	pods, err := r.client.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil {
		return regionState{}, err
	}
	var s regionState
	for _, p := range pods.Items {
		s.total++
		switch rev := p.Labels[appsv1.ControllerRevisionHashLabelKey]; {
		case rev == oldRev && p.DeletionTimestamp == nil:
			s.old++
		case rev == newRev && p.DeletionTimestamp == nil && framework.PodReady(&p):
			s.updatedReady++
		}
	}
	return s, nil
}

// watchOverlap polls both regions until ctx ends and reports the first time
// both were rolling at once: started (a pod at the old revision replaced) and
// not done (every pod updated and Ready).
func (l *lockRegions) watchOverlap(ctx context.Context, revs [2][2]string) <-chan error {
	out := make(chan error, 1)
	n := int(*l.r[0].sts.Spec.Replicas)
	go func() {
		defer close(out)
		for ctx.Err() == nil {
			var rolling [2]bool
			var seen [2]regionState
			for i := range l.r {
				s, err := l.poll(ctx, i, revs[i][0], revs[i][1])
				if err != nil {
					continue // the next poll
				}
				seen[i] = s
				rolling[i] = s.started(n) && !s.done(n)
			}
			if rolling[0] && rolling[1] {
				out <- fmt.Errorf("both regions roll at once: region 1 %+v, region 2 %+v", seen[0], seen[1])
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return out
}

// TestRolloutLockOneRegionAtATime: both regions' templates change at once;
// they roll one after the other, never at the same time, and both complete.
func TestRolloutLockOneRegionAtATime(t *testing.T) {
	t.Parallel()
	l := newLockRegions(t, 4, "2")
	old := [2]string{l.r[0].current().Status.UpdateRevision, l.r[1].current().Status.UpdateRevision}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var revs [2][2]string
	var wg sync.WaitGroup
	for i := range l.r {
		wg.Go(func() { revs[i] = [2]string{old[i], l.r[i].newRevision("2")} })
	}
	wg.Wait()
	overlap := l.watchOverlap(ctx, revs)
	for i := range l.r {
		l.r[i].waitRolledOut(revs[i][1], 4)
	}
	stop()
	if err := <-overlap; err != nil {
		t.Fatal(err)
	}
	// The second to roll waited for the lock, and said for whom.
	waited := 0
	for i := range l.r {
		if len(l.r[i].events(policy.ReasonLockAcquired)) == 0 || len(l.r[i].events(policy.ReasonLockReleased)) == 0 {
			t.Errorf("region %d: want %s and %s events", i+1, policy.ReasonLockAcquired, policy.ReasonLockReleased)
		}
		waited += len(l.r[i].events(policy.ReasonWaitingForLock))
	}
	if waited == 0 {
		t.Errorf("neither region has a %s event: they did not contend for the lock", policy.ReasonWaitingForLock)
	}
}

// TestRolloutLockBrokenRegionHolds: region 1's new revision is broken, so its
// rollout is stuck; it keeps the lock, and region 2, changed too, starts
// nothing for 30 s and says it waits for region 1. After the revert region 1
// completes at the old revision and releases the lock; then region 2 rolls.
func TestRolloutLockBrokenRegionHolds(t *testing.T) {
	t.Parallel()
	l := newLockRegions(t, 4, "2")
	r1, r2 := l.r[0], l.r[1]
	old1 := r1.current().Status.UpdateRevision
	var broken string
	r1.watch.SetBroken(func(p *corev1.Pod) bool {
		return broken != "" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == broken
	})
	broken = r1.newRevision("2")
	r1.waitDeletions(2) // region 1 holds the lock: its first batch is out
	rev2 := r2.newRevision("2")
	err := framework.Consistently(t.Context(), 30*time.Second, 500*time.Millisecond, func(context.Context) error {
		if up, _ := r2.counts(rev2); up > 0 || len(r2.watch.Deletions()) > 0 {
			return fmt.Errorf("region 2 rolls (%d pods updated, %d deleted) while region 1 is broken and holds the lock", up, len(r2.watch.Deletions()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st := r2.status()
	if st == nil || st.Phase != policy.PhaseRolling || st.Reason != policy.ReasonWaitingForLock || !strings.Contains(st.Message, "region-1/"+r1.ns+"/db") {
		t.Errorf("region 2's status %+v: want Rolling/%s naming region-1/%s/db", st, policy.ReasonWaitingForLock, r1.ns)
	}
	if up, _ := r1.counts(broken); up != 2 {
		t.Errorf("region 1: %d pods at the broken revision, want max-unavailable 2", up)
	}
	// The revert: region 1 repairs its broken pods, completes, releases.
	if rev := r1.newRevision("1"); rev != old1 {
		t.Fatalf("the revert made revision %s, want the old %s", rev, old1)
	}
	r1.waitRolledOut(old1, 4)
	r1.waitEvent(policy.ReasonLockReleased, corev1.EventTypeNormal)
	r2.waitRolledOut(rev2, 4)
}

// TestRolloutLockTakeOver: region 1's stsroller is killed while it holds the
// lock (a stuck rollout, so it never completes). Region 2 waits for the TTL
// (10 s), then takes the lock over with a Warning LockTakenOver naming
// region 1's holder, and rolls.
func TestRolloutLockTakeOver(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	l := newLockRegions(t, 3, "1", "--lock-ttl="+ttl.String())
	r1, r2 := l.r[0], l.r[1]
	var broken string
	r1.watch.SetBroken(func(p *corev1.Pod) bool {
		return broken != "" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == broken
	})
	broken = r1.newRevision("2")
	r1.waitDeletions(1)
	r1.waitEvent(policy.ReasonLockAcquired, corev1.EventTypeNormal)
	l.ctl[0].Kill()
	killed := time.Now()
	rev2 := r2.newRevision("2")
	// Nothing before the TTL has run out since region 1's last renewal (at
	// most the kill; renewals come every TTL/3, so the lock ends between
	// TTL*2/3 and TTL after it).
	err := framework.Eventually(t.Context(), 2*time.Minute, 200*time.Millisecond, func(context.Context) error {
		if len(r2.watch.Deletions()) == 0 {
			return errors.New("region 2 has not started")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if first := r2.watch.Deletions()[0].At; first.Sub(killed) < ttl*2/3 {
		t.Errorf("region 2 removed its first pod %s after region 1 was killed, before the lock's TTL %s could run out", first.Sub(killed), ttl)
	}
	ev := r2.waitEvent(policy.ReasonLockTakenOver, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, "region-1/"+r1.ns+"/db") {
		t.Errorf("%s event %q does not name region 1's holder region-1/%s/db", policy.ReasonLockTakenOver, ev.Message, r1.ns)
	}
	r2.waitRolledOut(rev2, 3)
}
