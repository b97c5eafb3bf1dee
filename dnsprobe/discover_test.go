package dnsprobe

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
	testingclock "k8s.io/utils/clock/testing"
)

const deepName = "pod-0.db.example.test."

// zoneRecords is the test zone example.test as a recursive resolver sees it:
// the pod lives two labels below the apex, so finding the zone means walking up.
var zoneRecords = []string{
	"example.test. 60 IN SOA ns1.example.test. hostmaster.example.test. 1 60 60 600 5",
	"example.test. 60 IN NS ns1.example.test.",
	"example.test. 60 IN NS ns2.example.test.",
	"ns1.example.test. 60 IN A 127.0.0.1",
	"ns2.example.test. 60 IN A 127.0.0.2",
	"pod-0.db.example.test. 5 IN A 10.0.0.7",
}

// fakeResolver answers like a recursive resolver from a list of records: the
// records of the name and type asked, NODATA (with the SOA) for a name that
// exists or has names below it, NXDOMAIN otherwise.
type fakeResolver struct {
	mu      sync.Mutex
	records []dns.RR
	glue    bool // add the NS hosts' addresses to NS answers
	refuse  func(q dns.Question) bool
	asked   atomic.Int32
}

func newFakeResolver(t testing.TB, records ...string) *fakeResolver {
	t.Helper()
	r := &fakeResolver{}
	r.setRecords(t, records...)
	return r
}

func (f *fakeResolver) setRecords(t testing.TB, records ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		rrs = append(rrs, rr)
	}
	f.mu.Lock()
	f.records = rrs
	f.mu.Unlock()
}

func (f *fakeResolver) handle(w dns.ResponseWriter, q *dns.Msg) {
	f.asked.Add(1)
	r := new(dns.Msg)
	r.SetReply(q)
	r.RecursionAvailable = true
	qq := q.Question[0]
	if f.refuse != nil && f.refuse(qq) {
		r.Rcode = dns.RcodeRefused
		_ = w.WriteMsg(r)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	exists := false
	for _, rr := range f.records {
		name := rr.Header().Name
		if strings.EqualFold(name, qq.Name) || strings.HasSuffix(strings.ToLower(name), "."+strings.ToLower(qq.Name)) {
			exists = true
		}
		if strings.EqualFold(name, qq.Name) && rr.Header().Rrtype == qq.Qtype {
			r.Answer = append(r.Answer, rr)
		}
	}
	if f.glue && qq.Qtype == dns.TypeNS {
		for _, ns := range r.Answer {
			for _, rr := range f.records {
				if t := rr.Header().Rrtype; strings.EqualFold(rr.Header().Name, ns.(*dns.NS).Ns) && (t == dns.TypeA || t == dns.TypeAAAA) {
					r.Extra = append(r.Extra, rr)
				}
			}
		}
	}
	if len(r.Answer) == 0 {
		if !exists {
			r.Rcode = dns.RcodeNameError
		}
		for _, rr := range f.records {
			if soa, ok := rr.(*dns.SOA); ok && dns.IsSubDomain(soa.Hdr.Name, qq.Name) {
				r.Ns = append(r.Ns, soa)
			}
		}
	}
	_ = w.WriteMsg(r)
}

// startZone starts the fake resolver and two authoritative servers for
// example.test, on 127.0.0.1 and 127.0.0.2 at the same port, and returns the
// resolver's address and the servers' port.
func startZone(t *testing.T, r *fakeResolver, ns1, ns2 auth) (string, int) {
	t.Helper()
	res := startFake(t, "127.0.0.1", 0, r.handle)
	a := startFake(t, "127.0.0.1", 0, ns1.handler(deepName))
	_, portStr, _ := net.SplitHostPort(a.addr)
	var port int
	fmt.Sscan(portStr, &port)
	startFake(t, "127.0.0.2", port, ns2.handler(deepName))
	return res.addr, port
}

func TestDiscovery(t *testing.T) {
	tests := []struct {
		name        string
		records     []string
		glue        bool
		refuse      func(q dns.Question) bool
		probe       string
		wantZone    string
		wantServers func(port int) []string
		wantReason  Reason
		wantMessage string // a part of the message
	}{
		{
			name:        "walks up to the SOA and resolves the NS hosts",
			records:     zoneRecords,
			probe:       deepName,
			wantZone:    "example.test.",
			wantServers: func(p int) []string { return []string{fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.2:%d", p)} },
			wantReason:  ReasonPropagated,
		},
		{
			name:        "uses glue when the NS hosts cannot be resolved",
			records:     zoneRecords,
			glue:        true,
			refuse:      func(q dns.Question) bool { return strings.HasPrefix(q.Name, "ns") },
			probe:       deepName,
			wantZone:    "example.test.",
			wantServers: func(p int) []string { return []string{fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.2:%d", p)} },
			wantReason:  ReasonPropagated,
		},
		{
			name:        "a name that does not exist yet still finds its zone",
			records:     zoneRecords,
			probe:       "pod-1.db.example.test.",
			wantZone:    "example.test.",
			wantServers: func(p int) []string { return []string{fmt.Sprintf("127.0.0.1:%d", p), fmt.Sprintf("127.0.0.2:%d", p)} },
			wantReason:  ReasonNXDomain,
		},
		{
			name:        "an NS host without an address is skipped",
			records:     slicesWithout(zoneRecords, "ns2.example.test. 60 IN A 127.0.0.2"),
			probe:       deepName,
			wantZone:    "example.test.",
			wantServers: func(p int) []string { return []string{fmt.Sprintf("127.0.0.1:%d", p)} },
			wantReason:  ReasonPropagated,
		},
		{
			name:        "no zone",
			records:     zoneRecords,
			probe:       "pod-0.nowhere.invalid.",
			wantReason:  ReasonNoServers,
			wantMessage: "no zone holds pod-0.nowhere.invalid.",
		},
		{
			name:        "zone without NS records",
			records:     []string{zoneRecords[0], zoneRecords[5]},
			probe:       deepName,
			wantZone:    "example.test.",
			wantReason:  ReasonNoServers,
			wantMessage: "zone example.test. has no NS records",
		},
		{
			name:        "NS hosts without addresses",
			records:     zoneRecords[:3],
			probe:       deepName,
			wantZone:    "example.test.",
			wantReason:  ReasonNoServers,
			wantMessage: "no address for the NS hosts ns1.example.test., ns2.example.test. of zone example.test.",
		},
		{
			name:        "resolver refuses",
			records:     zoneRecords,
			refuse:      func(dns.Question) bool { return true },
			probe:       deepName,
			wantReason:  ReasonNoServers,
			wantMessage: "answered REFUSED",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newFakeResolver(t, tc.records...)
			r.glue, r.refuse = tc.glue, tc.refuse
			resolver, port := startZone(t, r, auth{addrs: []string{"10.0.0.7"}}, auth{addrs: []string{"10.0.0.7"}})
			p, err := New(Options{Resolvers: []string{resolver}, NameserverPort: port, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}

			res := p.Probe(t.Context(), tc.probe, parseAddrs(t, "10.0.0.7"))

			if res.Reason != tc.wantReason {
				t.Errorf("Reason = %s, want %s (%s)", res.Reason, tc.wantReason, res.Message)
			}
			if res.Zone != tc.wantZone {
				t.Errorf("Zone = %q, want %q", res.Zone, tc.wantZone)
			}
			var wantServers []string
			if tc.wantServers != nil {
				wantServers = tc.wantServers(port)
			}
			if diff := cmp.Diff(wantServers, res.Servers); diff != "" {
				t.Errorf("Servers (-want +got):\n%s", diff)
			}
			if !strings.Contains(res.Message, tc.wantMessage) {
				t.Errorf("Message = %q, want it to contain %q", res.Message, tc.wantMessage)
			}
		})
	}
}

func slicesWithout(in []string, drop string) []string {
	var out []string
	for _, s := range in {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}

// TestDiscoveryQuestions checks the walk itself: SOA from the name up to the
// apex, then NS, then the NS hosts' addresses, all asking for recursion.
func TestDiscoveryQuestions(t *testing.T) {
	r := newFakeResolver(t, zoneRecords...)
	res := startFake(t, "127.0.0.1", 0, r.handle)
	p, err := New(Options{Resolvers: []string{res.addr}, Servers: nil, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	zone, servers, err := p.discover(t.Context(), deepName)
	if err != nil {
		t.Fatal(err)
	}
	if zone != "example.test." {
		t.Errorf("zone = %q, want example.test.", zone)
	}
	if diff := cmp.Diff([]string{"127.0.0.1:53", "127.0.0.2:53"}, servers); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	var got []string
	for _, q := range res.seen() {
		got = append(got, fmt.Sprintf("%s %s rd=%v", q.name, dns.TypeToString[q.qtype], q.rd))
	}
	want := []string{
		"pod-0.db.example.test. SOA rd=true",
		"db.example.test. SOA rd=true",
		"example.test. SOA rd=true",
		"example.test. NS rd=true",
		"ns1.example.test. A rd=true",
		"ns1.example.test. AAAA rd=true",
		"ns2.example.test. A rd=true",
		"ns2.example.test. AAAA rd=true",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("questions to the resolver (-want +got):\n%s", diff)
	}
}

// TestDiscoveryFallsBackToNextResolver checks that a failing resolver is
// skipped.
func TestDiscoveryFallsBackToNextResolver(t *testing.T) {
	broken := newFakeResolver(t, zoneRecords...)
	broken.refuse = func(dns.Question) bool { return true }
	b := startFake(t, "127.0.0.1", 0, broken.handle)
	good := newFakeResolver(t, zoneRecords...)
	resolver, port := startZone(t, good, auth{addrs: []string{"10.0.0.7"}}, auth{addrs: []string{"10.0.0.7"}})
	p, err := New(Options{Resolvers: []string{closedPort(t), b.addr, resolver}, NameserverPort: port, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Probe(t.Context(), deepName, parseAddrs(t, "10.0.0.7"))
	if !res.Propagated {
		t.Errorf("not propagated: %s", res.Message)
	}
	if broken.asked.Load() == 0 {
		t.Errorf("the refusing resolver was never asked")
	}
}

// TestDiscoveryCache checks that discovered servers are reused until
// DiscoveryTTL has passed on the injected clock, and then found anew.
func TestDiscoveryCache(t *testing.T) {
	r := newFakeResolver(t, zoneRecords...)
	resolver, port := startZone(t, r, auth{addrs: []string{"10.0.0.7"}}, auth{addrs: []string{"10.0.0.6"}})
	clk := testingclock.NewFakePassiveClock(time.Unix(1000, 0))
	p, err := New(Options{Resolvers: []string{resolver}, NameserverPort: port, DiscoveryTTL: time.Minute, Clock: clk, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := parseAddrs(t, "10.0.0.7")
	both := []string{fmt.Sprintf("127.0.0.1:%d", port), fmt.Sprintf("127.0.0.2:%d", port)}

	res := p.Probe(t.Context(), deepName, want)
	if diff := cmp.Diff(both, res.Servers); diff != "" {
		t.Fatalf("first probe servers (-want +got):\n%s", diff)
	}
	if res.Propagated || res.Reason != ReasonWrongAddress {
		t.Errorf("first probe: %v %s, want false %s: ns2 has the old address", res.Propagated, res.Reason, ReasonWrongAddress)
	}
	asked := r.asked.Load()
	if asked == 0 {
		t.Fatal("the resolver was never asked")
	}

	// The zone loses ns2: not seen until the cache expires.
	r.setRecords(t, slicesWithout(zoneRecords, "example.test. 60 IN NS ns2.example.test.")...)
	clk.SetTime(clk.Now().Add(59 * time.Second))
	for _, name := range []string{deepName, "pod-1.db.example.test."} {
		res = p.Probe(t.Context(), name, want)
		if diff := cmp.Diff(both, res.Servers); diff != "" {
			t.Errorf("%s before expiry: servers (-want +got):\n%s", name, diff)
		}
	}
	if got := r.asked.Load(); got != asked {
		t.Errorf("the resolver was asked %d more questions before the cache expired", got-asked)
	}

	clk.SetTime(clk.Now().Add(2 * time.Second))
	res = p.Probe(t.Context(), deepName, want)
	if diff := cmp.Diff(both[:1], res.Servers); diff != "" {
		t.Errorf("after expiry: servers (-want +got):\n%s", diff)
	}
	if !res.Propagated {
		t.Errorf("after expiry: not propagated: %s", res.Message)
	}
}

// TestDiscoveryDoesNotCacheFailures checks that a failed discovery is retried
// on the next probe.
func TestDiscoveryDoesNotCacheFailures(t *testing.T) {
	r := newFakeResolver(t, zoneRecords...)
	var refusing atomic.Bool
	refusing.Store(true)
	r.refuse = func(dns.Question) bool { return refusing.Load() }
	resolver, port := startZone(t, r, auth{addrs: []string{"10.0.0.7"}}, auth{addrs: []string{"10.0.0.7"}})
	p, err := New(Options{Resolvers: []string{resolver}, NameserverPort: port, Clock: testingclock.NewFakePassiveClock(time.Unix(1000, 0)), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res := p.Probe(t.Context(), deepName, parseAddrs(t, "10.0.0.7")); res.Reason != ReasonNoServers {
		t.Fatalf("Reason = %s, want %s", res.Reason, ReasonNoServers)
	}
	refusing.Store(false)
	if res := p.Probe(t.Context(), deepName, parseAddrs(t, "10.0.0.7")); !res.Propagated {
		t.Errorf("not propagated once the resolver answers: %s", res.Message)
	}
}

// TestDiscoveryIPv6Nameservers checks which addresses of the NS hosts become
// servers: IPv4 ones, IPv6 ones of hosts without IPv4, or all of them.
func TestDiscoveryIPv6Nameservers(t *testing.T) {
	records := append(slicesWithout(zoneRecords, "example.test. 60 IN NS ns2.example.test."),
		"ns1.example.test. 60 IN AAAA fd00::1",
		"example.test. 60 IN NS ns3.example.test.",
		"ns3.example.test. 60 IN AAAA fd00::3",
	)
	for _, tc := range []struct {
		ipv6 bool
		want []string
	}{
		{false, []string{"127.0.0.1:53", "[fd00::3]:53"}},
		{true, []string{"127.0.0.1:53", "[fd00::1]:53", "[fd00::3]:53"}},
	} {
		t.Run(fmt.Sprintf("IPv6Nameservers=%v", tc.ipv6), func(t *testing.T) {
			r := newFakeResolver(t, records...)
			resolver := startFake(t, "127.0.0.1", 0, r.handle)
			p, err := New(Options{Resolvers: []string{resolver.addr}, IPv6Nameservers: tc.ipv6, Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, servers, err := p.discover(t.Context(), deepName)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, servers); diff != "" {
				t.Errorf("servers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPickFamilies(t *testing.T) {
	tests := []struct {
		ipv6  bool
		addrs []string
		want  string
	}{
		{false, []string{"fd00::1", "10.0.0.1"}, "10.0.0.1"},
		{true, []string{"fd00::1", "10.0.0.1"}, "10.0.0.1, fd00::1"},
		{false, []string{"fd00::1"}, "fd00::1"},
		{false, []string{"::ffff:10.0.0.2", "fd00::1"}, "10.0.0.2"},
	}
	for _, tc := range tests {
		p := &Authoritative{ipv6Nameservers: tc.ipv6}
		if got := formatAddrs(p.pickFamilies(parseAddrs(t, tc.addrs...))); got != tc.want {
			t.Errorf("pickFamilies(%v, ipv6=%v) = %s, want %s", tc.addrs, tc.ipv6, got, tc.want)
		}
	}
}

func TestResolversFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	conf := "# test\nsearch example.test\nnameserver 127.0.0.53\nnameserver fd00::53\nnameserver not-an-ip\noptions ndots:2\n"
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := resolversFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.53:53", "[fd00::53]:53"}, got); diff != "" {
		t.Errorf("resolvers (-want +got):\n%s", diff)
	}

	// Without configured resolvers the file is read at discovery time.
	p, err := New(Options{ResolvConf: filepath.Join(dir, "missing.conf")})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Probe(t.Context(), deepName, parseAddrs(t, "10.0.0.7"))
	if res.Reason != ReasonNoServers || !strings.Contains(res.Message, "missing.conf") {
		t.Errorf("got %s %q, want %s naming missing.conf", res.Reason, res.Message, ReasonNoServers)
	}
}

func TestParent(t *testing.T) {
	for in, want := range map[string]string{
		"pod-0.db.example.test.": "db.example.test.",
		"example.test.":          "test.",
		"test.":                  ".",
		".":                      ".",
		`a\.b.example.test.`:     "example.test.",
	} {
		if got := parent(in); got != want {
			t.Errorf("parent(%q) = %q, want %q", in, got, want)
		}
	}
}
