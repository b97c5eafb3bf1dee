package dnsprobe

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

const podName = "pod-0.example.test."

// answerView is the part of a ServerAnswer a test can predict.
type answerView struct {
	Reason        Reason
	Message       string
	Addrs         string
	Rcode         string
	Authoritative bool
	TCP           bool
}

func view(as []ServerAnswer) []answerView {
	var out []answerView
	for _, a := range as {
		out = append(out, answerView{a.Reason, a.Message, formatAddrs(a.Addrs), a.Rcode, a.Authoritative, a.TCP})
	}
	return out
}

func TestProbe(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ok := func(addrs string) answerView {
		return answerView{ReasonPropagated, "answered " + addrs, addrs, "NOERROR", true, false}
	}
	tests := []struct {
		name        string
		servers     []auth
		want        []string
		wantReason  Reason
		wantAnswers []answerView
		// wantMessage builds the expected overall message from the servers' addresses.
		wantMessage func(s []string) string
	}{
		{
			name:        "up-to-date primary",
			servers:     []auth{{addrs: []string{"10.0.0.7"}}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{ok("10.0.0.7")},
			wantMessage: func([]string) string { return "pod-0.example.test. resolves to 10.0.0.7 at all 1 servers" },
		},
		{
			name:        "primary and secondary agree",
			servers:     []auth{{addrs: []string{"10.0.0.7"}}, {addrs: []string{"10.0.0.7"}}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{ok("10.0.0.7"), ok("10.0.0.7")},
		},
		{
			name:       "lagging secondary still has the old IP",
			servers:    []auth{{addrs: []string{"10.0.0.7"}}, {addrs: []string{"10.0.0.6"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonWrongAddress,
			wantAnswers: []answerView{
				ok("10.0.0.7"),
				{ReasonWrongAddress, "answered 10.0.0.6, want 10.0.0.7", "10.0.0.6", "NOERROR", true, false},
			},
			wantMessage: func(s []string) string {
				return "pod-0.example.test. not propagated at 1 of 2 servers: " + s[1] + ": answered 10.0.0.6, want 10.0.0.7"
			},
		},
		{
			name:       "wrong IP at every server names them all",
			servers:    []auth{{addrs: []string{"10.9.9.9"}}, {addrs: []string{"10.0.0.6"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonWrongAddress,
			wantAnswers: []answerView{
				{ReasonWrongAddress, "answered 10.9.9.9, want 10.0.0.7", "10.9.9.9", "NOERROR", true, false},
				{ReasonWrongAddress, "answered 10.0.0.6, want 10.0.0.7", "10.0.0.6", "NOERROR", true, false},
			},
			wantMessage: func(s []string) string {
				return "pod-0.example.test. not propagated at 2 of 2 servers: " + s[0] + ": answered 10.9.9.9, want 10.0.0.7; " +
					s[1] + ": answered 10.0.0.6, want 10.0.0.7"
			},
		},
		{
			name:       "first disagreeing server gives the reason",
			servers:    []auth{{addrs: []string{"10.0.0.7"}}, {nxdomain: true}, {addrs: []string{"10.0.0.6"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonNXDomain,
			wantAnswers: []answerView{
				ok("10.0.0.7"),
				{ReasonNXDomain, "answered NXDOMAIN", "nothing", "NXDOMAIN", true, false},
				{ReasonWrongAddress, "answered 10.0.0.6, want 10.0.0.7", "10.0.0.6", "NOERROR", true, false},
			},
		},
		{
			name:       "extra IP",
			servers:    []auth{{addrs: []string{"10.0.0.7", "10.0.0.6"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonExtraAddress,
			wantAnswers: []answerView{
				{ReasonExtraAddress, "answered 10.0.0.6, 10.0.0.7, want 10.0.0.7 (extra 10.0.0.6)", "10.0.0.6, 10.0.0.7", "NOERROR", true, false},
			},
		},
		{
			name:       "missing IP",
			servers:    []auth{{addrs: []string{"10.0.0.7"}}},
			want:       []string{"10.0.0.7", "10.0.0.8"},
			wantReason: ReasonMissingAddress,
			wantAnswers: []answerView{
				{ReasonMissingAddress, "answered 10.0.0.7, want 10.0.0.7, 10.0.0.8 (missing 10.0.0.8)", "10.0.0.7", "NOERROR", true, false},
			},
		},
		{
			name:       "one right, one wrong",
			servers:    []auth{{addrs: []string{"10.0.0.7", "10.0.0.9"}}},
			want:       []string{"10.0.0.7", "10.0.0.8"},
			wantReason: ReasonWrongAddress,
			wantAnswers: []answerView{
				{ReasonWrongAddress, "answered 10.0.0.7, 10.0.0.9, want 10.0.0.7, 10.0.0.8", "10.0.0.7, 10.0.0.9", "NOERROR", true, false},
			},
		},
		{
			name:        "NXDOMAIN",
			servers:     []auth{{nxdomain: true}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonNXDomain,
			wantAnswers: []answerView{{ReasonNXDomain, "answered NXDOMAIN", "nothing", "NXDOMAIN", true, false}},
		},
		{
			name:        "NODATA",
			servers:     []auth{{nodata: true}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonNoData,
			wantAnswers: []answerView{{ReasonNoData, "answered no A or AAAA records", "nothing", "NOERROR", true, false}},
		},
		{
			name:        "CNAME is not an address",
			servers:     []auth{{cname: "elsewhere.example.test."}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonNoData,
			wantAnswers: []answerView{{ReasonNoData, "answered no A or AAAA records (CNAME to elsewhere.example.test.)", "nothing", "NOERROR", true, false}},
		},
		{
			name:       "non-authoritative answer with the right IP",
			servers:    []auth{{addrs: []string{"10.0.0.7"}, notAuthoritative: true}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonNotAuthoritative,
			wantAnswers: []answerView{
				{ReasonNotAuthoritative, "answered A without the authoritative (AA) bit", "10.0.0.7", "NOERROR", false, false},
			},
		},
		{
			name:        "REFUSED",
			servers:     []auth{{rcode: dns.RcodeRefused, notAuthoritative: true}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonErrorRcode,
			wantAnswers: []answerView{{ReasonErrorRcode, "answered REFUSED to A", "nothing", "REFUSED", false, false}},
		},
		{
			name:        "SERVFAIL",
			servers:     []auth{{rcode: dns.RcodeServerFailure}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonErrorRcode,
			wantAnswers: []answerView{{ReasonErrorRcode, "answered SERVFAIL to A", "nothing", "SERVFAIL", true, false}},
		},
		{
			name:        "truncated UDP answer: the TCP answer counts (right)",
			servers:     []auth{{truncateUDP: true, addrs: []string{"10.0.0.6"}, tcpAddrs: []string{"10.0.0.7"}}},
			want:        []string{"10.0.0.7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{{ReasonPropagated, "answered 10.0.0.7", "10.0.0.7", "NOERROR", true, true}},
		},
		{
			name:       "truncated UDP answer: the TCP answer counts (stale)",
			servers:    []auth{{truncateUDP: true, addrs: []string{"10.0.0.7"}, tcpAddrs: []string{"10.0.0.6"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonWrongAddress,
			wantAnswers: []answerView{
				{ReasonWrongAddress, "answered 10.0.0.6, want 10.0.0.7", "10.0.0.6", "NOERROR", true, true},
			},
		},
		{
			name:       "server that never answers",
			servers:    []auth{{addrs: []string{"10.0.0.7"}}, {silent: true}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonTimeout,
			wantAnswers: []answerView{
				ok("10.0.0.7"),
				{ReasonTimeout, "no answer to A within 200ms", "nothing", "", false, false},
			},
			wantMessage: func(s []string) string {
				return "pod-0.example.test. not propagated at 1 of 2 servers: " + s[1] + ": no answer to A within 200ms"
			},
		},
		{
			name:        "IPv6 only",
			servers:     []auth{{addrs: []string{"fd00::7"}}},
			want:        []string{"fd00::7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{ok("fd00::7")},
		},
		{
			name:        "dual stack",
			servers:     []auth{{addrs: []string{"fd00::7", "10.0.0.7"}}},
			want:        []string{"10.0.0.7", "fd00::7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{ok("10.0.0.7, fd00::7")},
		},
		{
			name:       "dual stack, stale AAAA",
			servers:    []auth{{addrs: []string{"fd00::6", "10.0.0.7"}}},
			want:       []string{"10.0.0.7", "fd00::7"},
			wantReason: ReasonWrongAddress,
			wantAnswers: []answerView{
				{ReasonWrongAddress, "answered 10.0.0.7, fd00::6, want 10.0.0.7, fd00::7", "10.0.0.7, fd00::6", "NOERROR", true, false},
			},
		},
		{
			name:       "IPv4 pod, extra AAAA record",
			servers:    []auth{{addrs: []string{"10.0.0.7", "fd00::7"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonExtraAddress,
			wantAnswers: []answerView{
				{ReasonExtraAddress, "answered 10.0.0.7, fd00::7, want 10.0.0.7 (extra fd00::7)", "10.0.0.7, fd00::7", "NOERROR", true, false},
			},
		},
		{
			name:       "IPv4 pod, AAAA holding the IPv4-mapped address",
			servers:    []auth{{addrs: []string{"10.0.0.7", "::ffff:10.0.0.7"}}},
			want:       []string{"10.0.0.7"},
			wantReason: ReasonExtraAddress,
			wantAnswers: []answerView{
				{ReasonExtraAddress, "answered 10.0.0.7, ::ffff:10.0.0.7, want 10.0.0.7 (extra ::ffff:10.0.0.7)", "10.0.0.7, ::ffff:10.0.0.7", "NOERROR", true, false},
			},
		},
		{
			name:        "wanted IPv4-mapped address is the IPv4 address",
			servers:     []auth{{addrs: []string{"10.0.0.7"}}},
			want:        []string{"::ffff:10.0.0.7"},
			wantReason:  ReasonPropagated,
			wantAnswers: []answerView{ok("10.0.0.7")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var servers []string
			for _, a := range tc.servers {
				servers = append(servers, startFake(t, "127.0.0.1", 0, a.handler(podName)).addr)
			}
			p, err := New(Options{Servers: servers, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}

			res := p.Probe(t.Context(), "Pod-0.Example.Test", parseAddrs(t, tc.want...))

			if got, want := res.Propagated, tc.wantReason == ReasonPropagated; got != want {
				t.Errorf("Propagated = %v, want %v (message %q)", got, want, res.Message)
			}
			if res.Reason != tc.wantReason {
				t.Errorf("Reason = %s, want %s", res.Reason, tc.wantReason)
			}
			if diff := cmp.Diff(servers, res.Servers); diff != "" {
				t.Errorf("Servers (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantAnswers, view(res.Answers)); diff != "" {
				t.Errorf("Answers (-want +got):\n%s", diff)
			}
			for i, a := range res.Answers {
				if a.Server != servers[i] {
					t.Errorf("Answers[%d].Server = %s, want %s", i, a.Server, servers[i])
				}
			}
			if tc.wantMessage != nil {
				if want := tc.wantMessage(servers); res.Message != want {
					t.Errorf("Message = %q\nwant %q", res.Message, want)
				}
			}
			if res.Name != podName {
				t.Errorf("Name = %q, want %q", res.Name, podName)
			}
		})
	}
}

// TestProbeAsksAuthoritatively checks the questions themselves: A and AAAA for
// the exact name, RD bit off, over UDP, and over TCP only after truncation.
func TestProbeAsksAuthoritatively(t *testing.T) {
	plain := startFake(t, "127.0.0.1", 0, auth{addrs: []string{"10.0.0.7"}}.handler(podName))
	trunc := startFake(t, "127.0.0.1", 0, auth{truncateUDP: true, addrs: []string{"10.0.0.7"}, tcpAddrs: []string{"10.0.0.7"}}.handler(podName))
	p, err := New(Options{Servers: []string{plain.addr, trunc.addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res := p.Probe(t.Context(), podName, parseAddrs(t, "10.0.0.7")); !res.Propagated {
		t.Fatalf("not propagated: %s", res.Message)
	}

	count := func(qs []seenQuery) map[string]int {
		m := map[string]int{}
		for _, q := range qs {
			m[fmt.Sprintf("%s %s %s rd=%v", q.network, q.name, dns.TypeToString[q.qtype], q.rd)]++
		}
		return m
	}
	wantPlain := map[string]int{
		"udp pod-0.example.test. A rd=false":    1,
		"udp pod-0.example.test. AAAA rd=false": 1,
	}
	if diff := cmp.Diff(wantPlain, count(plain.seen())); diff != "" {
		t.Errorf("questions to the plain server (-want +got):\n%s", diff)
	}
	wantTrunc := map[string]int{
		"udp pod-0.example.test. A rd=false":    1,
		"udp pod-0.example.test. AAAA rd=false": 1,
		"tcp pod-0.example.test. A rd=false":    1,
		"tcp pod-0.example.test. AAAA rd=false": 1,
	}
	if diff := cmp.Diff(wantTrunc, count(trunc.seen())); diff != "" {
		t.Errorf("questions to the truncating server (-want +got):\n%s", diff)
	}
}

func TestProbeUnreachableServer(t *testing.T) {
	good := startFake(t, "127.0.0.1", 0, auth{addrs: []string{"10.0.0.7"}}.handler(podName))
	closed := closedPort(t)
	p, err := New(Options{Servers: []string{good.addr, closed}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	res := p.Probe(t.Context(), podName, parseAddrs(t, "10.0.0.7"))
	if res.Propagated || res.Reason != ReasonError {
		t.Fatalf("Propagated = %v, Reason = %s, want false, %s", res.Propagated, res.Reason, ReasonError)
	}
	if got := res.Answers[1].Message; !strings.HasPrefix(got, "A: ") || !strings.Contains(got, "refused") {
		t.Errorf("Answers[1].Message = %q, want an A question error saying the connection was refused", got)
	}
	if !strings.Contains(res.Message, closed+": A: ") {
		t.Errorf("Message %q does not name the unreachable server %s", res.Message, closed)
	}
}

func TestProbeInvalidInput(t *testing.T) {
	good := startFake(t, "127.0.0.1", 0, auth{addrs: []string{"10.0.0.7"}}.handler(podName))
	p, err := New(Options{Servers: []string{good.addr}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		probe    string
		want     []netip.Addr
		wantText string
	}{
		{"no address wanted", podName, nil, "no address wanted"},
		{"invalid address", podName, []netip.Addr{{}}, "invalid address"},
		{"not a domain name", "pod..example.test", parseAddrs(t, "10.0.0.7"), "not a domain name"},
		{"root", ".", parseAddrs(t, "10.0.0.7"), "not a domain name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := p.Probe(t.Context(), tc.probe, tc.want)
			if res.Propagated || res.Reason != ReasonInvalidInput || !strings.Contains(res.Message, tc.wantText) {
				t.Errorf("got %v %s %q, want false %s and a message containing %q", res.Propagated, res.Reason, res.Message, ReasonInvalidInput, tc.wantText)
			}
			if len(good.seen()) != 0 {
				t.Errorf("asked the server %d questions for invalid input", len(good.seen()))
			}
		})
	}
}

func TestNewRejectsBadServers(t *testing.T) {
	tests := []struct {
		servers []string
		want    []string // nil: New must fail
	}{
		{[]string{"127.0.0.1:5353", " 10.0.0.1 ", "[fd00::1]:53", "fd00::2", ""}, []string{"127.0.0.1:5353", "10.0.0.1:53", "[fd00::1]:53", "[fd00::2]:53"}},
		{[]string{"ns1.example.test:53"}, nil},
		{[]string{"127.0.0.1:0"}, nil},
		{[]string{"127.0.0.1:http"}, nil},
	}
	for _, tc := range tests {
		p, err := New(Options{Servers: tc.servers})
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("New(%q) succeeded, want an error", tc.servers)
		case tc.want != nil && err != nil:
			t.Errorf("New(%q): %v", tc.servers, err)
		case tc.want != nil:
			if diff := cmp.Diff(tc.want, p.servers); diff != "" {
				t.Errorf("New(%q) servers (-want +got):\n%s", tc.servers, diff)
			}
		}
	}
}

// TestProbeHonoursCancellation checks that cancelling the context ends a probe of
// a silent server long before its timeout.
func TestProbeHonoursCancellation(t *testing.T) {
	silent := startFake(t, "127.0.0.1", 0, auth{silent: true}.handler(podName))
	p, err := New(Options{Servers: []string{silent.addr}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	res := p.Probe(ctx, podName, parseAddrs(t, "10.0.0.7"))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Probe took %s after cancellation", elapsed)
	}
	if res.Propagated || res.Reason != ReasonCanceled {
		t.Errorf("got %v %s (%s), want false %s", res.Propagated, res.Reason, res.Message, ReasonCanceled)
	}
}

// TestProbeContextDeadline checks that a caller's deadline shorter than the
// timeout counts as a timeout.
func TestProbeContextDeadline(t *testing.T) {
	silent := startFake(t, "127.0.0.1", 0, auth{silent: true}.handler(podName))
	p, err := New(Options{Servers: []string{silent.addr}, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := p.Probe(ctx, podName, parseAddrs(t, "10.0.0.7"))
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Probe took %s past the deadline", elapsed)
	}
	if res.Propagated || res.Reason != ReasonTimeout {
		t.Errorf("got %v %s (%s), want false %s", res.Propagated, res.Reason, res.Message, ReasonTimeout)
	}
	if want := "no answer to A before the probe's deadline"; len(res.Answers) != 1 || res.Answers[0].Message != want {
		t.Errorf("Answers = %+v, want one with message %q", res.Answers, want)
	}
}

// TestProbeAsksConcurrently checks that servers and questions are asked at the
// same time: four silent servers, two questions each, one timeout in total.
func TestProbeAsksConcurrently(t *testing.T) {
	const timeout = 400 * time.Millisecond
	var servers []string
	for range 4 {
		servers = append(servers, startFake(t, "127.0.0.1", 0, auth{silent: true}.handler(podName)).addr)
	}
	p, err := New(Options{Servers: servers, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := p.Probe(t.Context(), podName, parseAddrs(t, "10.0.0.7"))
	elapsed := time.Since(start)
	// Asked one after another, the eight questions would take 8 × timeout; one
	// server's two questions one after the other, 2 × timeout.
	if elapsed >= timeout*7/4 {
		t.Errorf("Probe took %s, want about %s", elapsed, timeout)
	}
	if res.Reason != ReasonTimeout {
		t.Errorf("Reason = %s, want %s", res.Reason, ReasonTimeout)
	}
	for _, a := range res.Answers {
		if a.Reason != ReasonTimeout {
			t.Errorf("%s: Reason = %s, want %s", a.Server, a.Reason, ReasonTimeout)
		}
	}
}

// TestProbeConcurrentUse probes different names from many goroutines with one
// prober; run with -race.
func TestProbeConcurrentUse(t *testing.T) {
	handler := func(w dns.ResponseWriter, q *dns.Msg) {
		// pod-N.example.test has 10.0.0.N.
		r := new(dns.Msg)
		r.SetReply(q)
		r.Authoritative = true
		var n int
		if _, err := fmt.Sscanf(q.Question[0].Name, "pod-%d.example.test.", &n); err != nil {
			r.Rcode = dns.RcodeNameError
		} else {
			r.Answer = addressRRs(q.Question[0].Name, q.Question[0].Qtype, []string{fmt.Sprintf("10.0.0.%d", n)})
		}
		_ = w.WriteMsg(r)
	}
	a := startFake(t, "127.0.0.1", 0, handler)
	b := startFake(t, "127.0.0.1", 0, handler)
	p, err := New(Options{Servers: []string{a.addr, b.addr}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			n := i % 20
			want := fmt.Sprintf("10.0.0.%d", n)
			if i >= 20 {
				want = fmt.Sprintf("10.0.1.%d", n) // wrong on purpose
			}
			res := p.Probe(t.Context(), fmt.Sprintf("pod-%d.example.test", n), parseAddrs(t, want))
			if res.Propagated != (i < 20) {
				t.Errorf("pod-%d want %s: Propagated = %v (%s)", n, want, res.Propagated, res.Message)
			}
		})
	}
	wg.Wait()
}

func BenchmarkProbe(b *testing.B) {
	h := auth{addrs: []string{"10.0.0.7", "fd00::7"}}.handler(podName)
	a := startFake(b, "127.0.0.1", 0, h)
	c := startFake(b, "127.0.0.1", 0, h)
	p, err := New(Options{Servers: []string{a.addr, c.addr}})
	if err != nil {
		b.Fatal(err)
	}
	want := parseAddrs(b, "10.0.0.7", "fd00::7")
	ctx := context.Background()
	for b.Loop() {
		if res := p.Probe(ctx, podName, want); !res.Propagated {
			b.Fatal(res.Message)
		}
	}
}
