//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/invariants"
	"github.com/stsroller/stsroller/policy"
)

// dnsChecker attaches an invariants.Checker to a DNS rollout's namespace and
// fails t on a violation.
func dnsChecker(t *testing.T, r *dnsRollout) *invariants.Checker {
	t.Helper()
	c, err := invariants.Watch(r.ctx, r.client, r.ns)
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
		if err := c.Complete("db"); err == nil {
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
}
