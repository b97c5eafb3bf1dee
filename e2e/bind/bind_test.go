//go:build e2e

package bind

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/e2e/proc"
)

const pod0 = "pod-0.example.test."

func startServers(t *testing.T, opts Options) *Servers {
	t.Helper()
	opts.Dir = t.TempDir()
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if pids := processesUsing(s.Dir); len(pids) > 0 {
			t.Errorf("processes still running after Stop: %v", pids)
		}
		if t.Failed() {
			for _, srv := range []*Server{s.Primary, s.Secondary} {
				t.Logf("%s log:\n%s", srv.Name, proc.LogTail(srv.LogPath, 40))
			}
		}
	})
	return s
}

func newProber(t *testing.T, servers ...string) *dnsprobe.Authoritative {
	t.Helper()
	p, err := dnsprobe.New(dnsprobe.Options{Servers: servers, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// waitPropagated probes until the name is propagated or the timeout passes, and
// returns every result seen.
func waitPropagated(t *testing.T, p dnsprobe.Prober, name string, want netip.Addr, timeout time.Duration) []dnsprobe.Result {
	t.Helper()
	var seen []dnsprobe.Result
	deadline := time.Now().Add(timeout)
	for {
		res := p.Probe(t.Context(), name, []netip.Addr{want})
		seen = append(seen, res)
		if res.Propagated {
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not propagated within %s: %s", name, timeout, res.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func reasons(res dnsprobe.Result) []dnsprobe.Reason {
	var out []dnsprobe.Reason
	for _, a := range res.Answers {
		out = append(out, a.Reason)
	}
	return out
}

// TestBIND starts a primary and a secondary, publishes a pod's name with a
// dynamic update, and follows it to both servers with dnsprobe.
func TestBIND(t *testing.T) {
	s := startServers(t, Options{})
	ctx := t.Context()
	p := newProber(t, s.Addrs()...)

	t.Run("both serve the zone", func(t *testing.T) {
		for _, srv := range []*Server{s.Primary, s.Secondary} {
			serial, err := s.Serial(ctx, srv)
			if err != nil || serial != 1 {
				t.Errorf("%s serial = %d, %v; want 1", srv.Name, serial, err)
			}
		}
	})

	t.Run("unsigned updates and transfers are refused", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetUpdate(s.Zone)
		m.Insert([]dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "intruder.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: addr("10.6.6.6").AsSlice()}})
		r, _, err := (&dns.Client{Net: "tcp", Timeout: 2 * time.Second}).ExchangeContext(ctx, m, s.Primary.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("unsigned update answered %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
		ax := new(dns.Msg)
		ax.SetAxfr(s.Zone)
		envs, err := (&dns.Transfer{}).In(ax, s.Primary.Addr)
		if err == nil {
			for env := range envs {
				if env.Error == nil && len(env.RR) > 0 {
					t.Errorf("unsigned AXFR gave %d records", len(env.RR))
				}
			}
		}
	})

	t.Run("signed transfer lists the zone", func(t *testing.T) {
		for _, srv := range []*Server{s.Primary, s.Secondary} {
			rrs, err := s.Transfer(ctx, srv)
			if err != nil {
				t.Fatalf("%s: %v", srv.Name, err)
			}
			if len(rrs) < 4 || rrs[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("%s: AXFR gave %v", srv.Name, rrs)
			}
		}
	})

	t.Run("a new name propagates to both servers", func(t *testing.T) {
		res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.7")})
		if res.Propagated || res.Reason != dnsprobe.ReasonNXDomain {
			t.Fatalf("before the update: %v %s, want NXDomain (%s)", res.Propagated, res.Reason, res.Message)
		}
		if err := s.SetAddresses(ctx, pod0, addr("10.0.0.7")); err != nil {
			t.Fatal(err)
		}
		seen := waitPropagated(t, p, pod0, addr("10.0.0.7"), 5*time.Second)
		for _, r := range seen[:len(seen)-1] {
			// Never half-propagated counted as propagated: the primary has it
			// at once, the secondary may still say NXDOMAIN.
			if got := reasons(r); got[0] != dnsprobe.ReasonPropagated || got[1] != dnsprobe.ReasonNXDomain {
				t.Errorf("on the way: %v (%s)", got, r.Message)
			}
		}
		t.Logf("propagated after %d probes", len(seen))
	})

	t.Run("a changed address is not propagated until both have it", func(t *testing.T) {
		if err := s.SetAddresses(ctx, pod0, addr("10.0.0.8")); err != nil {
			t.Fatal(err)
		}
		seen := waitPropagated(t, p, pod0, addr("10.0.0.8"), 5*time.Second)
		for _, r := range seen[:len(seen)-1] {
			if got := reasons(r); got[0] != dnsprobe.ReasonPropagated || got[1] != dnsprobe.ReasonWrongAddress {
				t.Errorf("on the way: %v (%s)", got, r.Message)
			}
		}
		// The old address is now wrong everywhere.
		if res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.7")}); res.Propagated || res.Reason != dnsprobe.ReasonWrongAddress {
			t.Errorf("old address: %v %s, want WrongAddress (%s)", res.Propagated, res.Reason, res.Message)
		}
	})

	t.Run("a paused secondary times out", func(t *testing.T) {
		if err := s.Secondary.Pause(); err != nil {
			t.Fatal(err)
		}
		res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.8")})
		if err := s.Secondary.Resume(); err != nil {
			t.Fatal(err)
		}
		if res.Propagated || res.Reason != dnsprobe.ReasonTimeout {
			t.Errorf("paused: %v %s, want Timeout (%s)", res.Propagated, res.Reason, res.Message)
		}
		if got := reasons(res); got[0] != dnsprobe.ReasonPropagated {
			t.Errorf("paused: the primary says %s", got[0])
		}
		waitPropagated(t, p, pod0, addr("10.0.0.8"), 5*time.Second)
	})

	t.Run("a stopped secondary is unreachable until started", func(t *testing.T) {
		if err := s.Secondary.Stop(); err != nil {
			t.Fatal(err)
		}
		if s.Secondary.Running() {
			t.Fatal("secondary still running after Stop")
		}
		res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.8")})
		if res.Propagated || res.Reason != dnsprobe.ReasonError {
			t.Errorf("stopped: %v %s, want Error (%s)", res.Propagated, res.Reason, res.Message)
		}
		// A change made while the secondary is down reaches it once it is back.
		if err := s.SetAddresses(ctx, pod0, addr("10.0.0.9"), addr("fd00::9")); err != nil {
			t.Fatal(err)
		}
		if err := s.Secondary.Start(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.9"), addr("fd00::9")})
			if res.Propagated {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not propagated after restart: %s", res.Message)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("discovery through the zone's NS records", func(t *testing.T) {
		// ns1.example.test is 127.0.0.1; the primary answers for its zone
		// even to questions asking for recursion, so it can stand in for
		// the resolver.
		d, err := dnsprobe.New(dnsprobe.Options{Resolvers: []string{s.Primary.Addr}, NameserverPort: s.Primary.Port, Timeout: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		res := d.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.9"), addr("fd00::9")})
		if !res.Propagated || res.Zone != s.Zone || len(res.Servers) != 1 || res.Servers[0] != s.Primary.Addr {
			t.Errorf("got %v, zone %q, servers %v (%s); want propagated, %s, [%s]", res.Propagated, res.Zone, res.Servers, res.Message, s.Zone, s.Primary.Addr)
		}
	})

	t.Run("deleted name", func(t *testing.T) {
		if err := s.SetAddresses(ctx, pod0); err != nil {
			t.Fatal(err)
		}
		res := p.Probe(ctx, pod0, []netip.Addr{addr("10.0.0.9")})
		if res.Propagated || res.Reason != dnsprobe.ReasonNXDomain {
			t.Errorf("after delete at the primary: %v %s, want NXDomain first (%s)", res.Propagated, res.Reason, res.Message)
		}
	})
}

// TestLaggingSecondary runs a secondary that hears of changes only by polling,
// and checks that a changed address is not propagated while the secondary
// still serves the old one, and is once it has the new one.
func TestLaggingSecondary(t *testing.T) {
	const refresh = 3 * time.Second
	s := startServers(t, Options{DisableNotify: true, Refresh: refresh})
	ctx := t.Context()
	p := newProber(t, s.Addrs()...)

	if err := s.SetAddresses(ctx, pod0, addr("10.0.0.7")); err != nil {
		t.Fatal(err)
	}
	waitPropagated(t, p, pod0, addr("10.0.0.7"), 2*refresh+2*time.Second)

	// The secondary may refresh between the update and the probe; then try
	// again. Its serial, read after the probe, says whether the probe met
	// the old zone.
	old := "10.0.0.7"
	for attempt := range 3 {
		next := []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"}[attempt]
		if err := s.SetAddresses(ctx, pod0, addr(next)); err != nil {
			t.Fatal(err)
		}
		res := p.Probe(ctx, pod0, []netip.Addr{addr(next)})
		primary, err1 := s.Serial(ctx, s.Primary)
		secondary, err2 := s.Serial(ctx, s.Secondary)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if secondary == primary {
			t.Logf("the secondary refreshed before the probe; again")
			old = next
			continue
		}
		if res.Propagated || res.Reason != dnsprobe.ReasonWrongAddress {
			t.Errorf("lagging: %v %s, want WrongAddress (%s)", res.Propagated, res.Reason, res.Message)
		}
		if got := res.Answers[1].Message; got != "answered "+old+", want "+next {
			t.Errorf("secondary: %q, want it to have answered the old %s", got, old)
		}
		if got := res.Answers[0].Reason; got != dnsprobe.ReasonPropagated {
			t.Errorf("primary: %s, want Propagated", got)
		}
		start := time.Now()
		waitPropagated(t, p, pod0, addr(next), 2*refresh+2*time.Second)
		t.Logf("the secondary caught up after %s", time.Since(start).Round(10*time.Millisecond))
		return
	}
	t.Fatal("the secondary refreshed before every probe")
}

// TestStartFailureLeavesNothing makes Start fail after named has started and
// checks that nothing of it remains.
func TestStartFailureLeavesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bind")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(t.Context(), Options{Dir: dir, StartTimeout: time.Nanosecond})
	if err == nil {
		t.Fatal("Start succeeded with a 1ns timeout")
	}
	if pids := processesUsing(dir); len(pids) > 0 {
		t.Errorf("processes left after a failed Start: %v", pids)
	}
}

// TestStopOnContextDone checks that the servers die with Start's context.
func TestStopOnContextDone(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	dir := t.TempDir()
	s, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(processesUsing(dir)) != 2 {
		t.Fatalf("want 2 processes using %s, got %v", dir, processesUsing(dir))
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for s.Primary.Running() || s.Secondary.Running() || len(processesUsing(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still running 10s after the context was cancelled: %v", processesUsing(dir))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop after the context: %v", err)
	}
}

// processesUsing lists the pids whose command line mentions dir.
func processesUsing(dir string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(dir)) && !strings.HasPrefix(string(cmdline), os.Args[0]) {
			pids = append(pids, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return pids
}
