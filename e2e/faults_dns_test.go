//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/stsroller/stsroller/e2e/bind"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/invariants"
	"github.com/stsroller/stsroller/policy"
)

// dnsChecker attaches an invariants.Checker to a DNS rollout's namespace and
// fails t on a violation.
func dnsChecker(t *testing.T, r *dnsRollout) *invariants.Checker {
	t.Helper()
	c, err := invariants.Watch(r.ctx, r.client, r.ns)
	if errors.Is(err, invariants.ErrNoAuditLog) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Resolve(true)
		for _, v := range c.Violations() {
			t.Errorf("invariant violated: %s", v)
		}
		st := c.Stats()
		recordStats(FaultStats{Test: t.Name(), Checks: st.Checks, Violations: st.Violations, Deletions: st.Deletions,
			Completed: st.Completed, Failed: t.Failed()})
	})
	return c
}

// TestFaultDNS: the authoritative servers fail in the ways DNS fails; the
// gate holds, the status says why, the rollout recovers when the fault
// clears, and an outage never turns every running pod NotReady at once.
func TestFaultDNS(t *testing.T) {
	t.Parallel()
	// primary-down: the primary is stopped mid-rollout (questions to it are
	// refused), then started again.
	t.Run("primary-down", func(t *testing.T) {
		t.Parallel()
		servers := ownDNSServers(t)
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 4, maxUnavailable: 1, servers: servers})
		c := dnsChecker(t, r)
		rev := r.newRevision("2")
		r.waitDeletions(1)
		if err := servers.Primary.Stop(); err != nil {
			t.Fatal(err)
		}
		st := r.waitStatus(policy.PhaseBlocked, policy.ReasonDNSUnreachable, time.Minute)
		if !strings.Contains(st.Message, servers.Primary.Addr) {
			t.Errorf("status message %q does not name the stopped server %s", st.Message, servers.Primary.Addr)
		}
		r.boundedFor(5 * time.Second)
		if err := servers.Primary.Start(r.ctx); err != nil {
			t.Fatal(err)
		}
		r.waitRolledOut(rev, 4)
		// The checker's watch may lag the test's; the soak fails on a test
		// with 0 completed rollouts.
		if err := framework.Eventually(r.ctx, 10*time.Second, 100*time.Millisecond, func(context.Context) error {
			return c.Complete("db")
		}); err == nil {
			c.CountCompleted()
		}
	})
	// outage: once rolled out, both servers are stopped for a while. The
	// pods already propagated must not all turn NotReady at once.
	t.Run("outage", func(t *testing.T) {
		t.Parallel()
		servers := ownDNSServers(t)
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 1, servers: servers})
		c := dnsChecker(t, r)
		rev := r.newRevision("2")
		r.waitRolledOut(rev, 3)
		c.CountCompleted()
		if err := servers.Primary.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := servers.Secondary.Stop(); err != nil {
			t.Fatal(err)
		}
		minReady := 3
		err := framework.Consistently(r.ctx, pick(15*time.Second, 40*time.Second), 200*time.Millisecond, func(context.Context) error {
			ready := 0
			for _, p := range r.pods() {
				if p.DeletionTimestamp == nil && framework.PodReady(&p) {
					ready++
				}
			}
			minReady = min(minReady, ready)
			if ready == 0 {
				return fmt.Errorf("every pod is NotReady during a DNS outage")
			}
			return nil
		})
		t.Logf("during the outage at least %d of 3 pods stayed Ready", minReady)
		if err != nil {
			t.Error(err)
		}
		if err := servers.Primary.Start(r.ctx); err != nil {
			t.Fatal(err)
		}
		if err := servers.Secondary.Start(r.ctx); err != nil {
			t.Fatal(err)
		}
		r.waitAllReady(3)
	})
	// stale: external-dns stops, so the replacements' names keep their old
	// addresses; the gate holds and names the pods; then it recovers.
	t.Run("stale-ip", func(t *testing.T) {
		t.Parallel()
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 1})
		c := dnsChecker(t, r)
		r.stopExternalDNS()
		rev := r.newRevision("2")
		r.waitDeletions(1)
		st := r.waitStatus(policy.PhaseRolling, policy.ReasonWaitingForDNS, time.Minute)
		if len(st.WaitingForDNS) == 0 {
			t.Errorf("status %+v names no pod waiting for DNS", st)
		}
		r.boundedFor(5 * time.Second)
		r.startExternalDNS()
		r.waitRolledOut(rev, 3)
		c.CountCompleted()
	})
	// lagging-secondary: the primary sends no NOTIFY and the secondary
	// refreshes every 10 s, so each replacement's address reaches it late.
	// The gate waits for it: no pod turns propagated while the secondary
	// still answers the old address, and the rollout completes.
	t.Run("lagging-secondary", func(t *testing.T) {
		t.Parallel()
		servers := ownDNSServersWith(t, bind.Options{Zone: dnsZone, DisableNotify: true, Refresh: 10 * time.Second})
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 1, servers: servers})
		c := dnsChecker(t, r)
		rev := r.newRevision("2")
		r.waitRolledOut(rev, 3)
		c.CountCompleted()
		r.checkVouchedOnlyWhenServed()
	})
	// nxdomain: external-dns stops and every record of the StatefulSet is
	// removed. The running pods, propagated before, stay Ready (the choice of
	// docs/behaviour.md: a vouched pod keeps its condition while its IPs
	// stay); the replacement's name does not exist, so the gate holds it and
	// nothing more is deleted; external-dns back, the rollout completes.
	t.Run("nxdomain", func(t *testing.T) {
		t.Parallel()
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 1})
		servers := r.servers
		c := dnsChecker(t, r)
		r.stopExternalDNS()
		for _, p := range r.pods() {
			if err := servers.SetAddresses(r.ctx, p.Name+"."+r.domain); err != nil {
				t.Fatal(err)
			}
		}
		rev := r.newRevision("2")
		r.waitDeletions(1)
		st := r.waitStatus(policy.PhaseRolling, policy.ReasonWaitingForDNS, time.Minute)
		if len(st.WaitingForDNS) == 0 {
			t.Errorf("status %+v names no pod waiting for DNS", st)
		}
		r.boundedFor(5 * time.Second)
		r.oldPodsStayReady(rev, 2)
		r.startExternalDNS()
		r.waitRolledOut(rev, 3)
		c.CountCompleted()
		r.checkVouchedOnlyWhenServed()
	})
	// flipping: external-dns stops, and the replacement's name flips every
	// 300 ms between a wrong address and no record at all. The gate never
	// vouches for it; once the flipping stops and external-dns is back, the
	// rollout completes.
	t.Run("flipping", func(t *testing.T) {
		t.Parallel()
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 1})
		servers := r.servers
		c := dnsChecker(t, r)
		r.stopExternalDNS()
		rev := r.newRevision("2")
		r.waitDeletions(1)
		victim := r.watch.Deletions()[0].Pod
		ctx, stop := context.WithCancel(r.ctx)
		flipped := make(chan int)
		go func() {
			n := 0
			defer func() { flipped <- n }()
			wrong := netip.MustParseAddr("192.0.2.1") // TEST-NET-1: no pod has it
			for i := 0; ctx.Err() == nil; i++ {
				var addrs []netip.Addr
				if i%2 == 0 {
					addrs = append(addrs, wrong)
				}
				if err := servers.SetAddresses(ctx, victim+"."+r.domain, addrs...); err == nil {
					n++
				}
				select {
				case <-ctx.Done():
				case <-time.After(300 * time.Millisecond):
				}
			}
		}()
		r.waitStatus(policy.PhaseRolling, policy.ReasonWaitingForDNS, time.Minute)
		r.boundedFor(6 * time.Second)
		stop()
		if n := <-flipped; n < 5 {
			t.Errorf("the record flipped only %d times", n)
		}
		r.startExternalDNS()
		r.waitRolledOut(rev, 3)
		c.CountCompleted()
		r.checkVouchedOnlyWhenServed()
	})
}

// ownDNSServersWith is ownDNSServers with options of the test's own.
func ownDNSServersWith(t *testing.T, o bind.Options) *bind.Servers {
	t.Helper()
	s, err := bind.Start(t.Context(), o)
	if err != nil {
		t.Fatalf("starting BIND: %v", err)
	}
	t.Cleanup(func() {
		logBindOnFailure(t, s)
		if err := s.Stop(); err != nil {
			t.Errorf("stopping BIND: %v", err)
		}
	})
	return s
}

// checkVouchedOnlyWhenServed fails the test for a pod whose dns-propagated
// condition turned True while the servers, asked that moment, did not both
// answer with its IP.
func (r *dnsRollout) checkVouchedOnlyWhenServed() {
	r.t.Helper()
	pods, _ := r.rec.snapshot()
	for _, p := range pods {
		if p.propagatedAt.IsZero() {
			continue
		}
		if p.atFlip == nil || !p.atFlip.Propagated {
			msg := "no answer recorded"
			if p.atFlip != nil {
				msg = p.atFlip.Message
			}
			r.t.Errorf("pod %s turned dns-propagated for %s while the servers said: %s", p.name, p.ip, msg)
		}
	}
}

// oldPodsStayReady checks, for a few seconds, that at least n pods of other
// revisions than rev are still there and Ready.
func (r *dnsRollout) oldPodsStayReady(rev string, n int) {
	r.t.Helper()
	err := framework.Consistently(r.ctx, 3*time.Second, 200*time.Millisecond, func(context.Context) error {
		ready := 0
		for _, p := range r.pods() {
			if p.DeletionTimestamp == nil && p.Labels[appsv1.ControllerRevisionHashLabelKey] != rev && framework.PodReady(&p) {
				ready++
			}
		}
		if ready < n {
			return fmt.Errorf("%d old pods Ready, want %d: their records are gone, but their IPs did not change", ready, n)
		}
		return nil
	})
	if err != nil {
		r.t.Error(err)
	}
}
