package dnsprobe

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// fakeServer is an in-process DNS server listening on UDP and TCP on the same
// port, recording the questions it gets.
type fakeServer struct {
	addr string

	mu      sync.Mutex
	queries []seenQuery
}

type seenQuery struct {
	name    string
	qtype   uint16
	rd      bool
	network string
}

// startFake serves handler on host (e.g. "127.0.0.1") at port, or at a free port
// when port is 0, until the test ends.
func startFake(t testing.TB, host string, port int, handler func(w dns.ResponseWriter, q *dns.Msg)) *fakeServer {
	t.Helper()
	var pc net.PacketConn
	var l net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			continue
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if port != 0 {
			break
		}
	}
	if err != nil {
		t.Fatalf("listening on %s:%d: %v", host, port, err)
	}
	f := &fakeServer{addr: pc.LocalAddr().String()}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		if len(q.Question) == 1 {
			f.mu.Lock()
			f.queries = append(f.queries, seenQuery{
				name:    strings.ToLower(q.Question[0].Name),
				qtype:   q.Question[0].Qtype,
				rd:      q.RecursionDesired,
				network: w.RemoteAddr().Network(),
			})
			f.mu.Unlock()
		}
		handler(w, q)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return f
}

func (f *fakeServer) seen() []seenQuery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenQuery(nil), f.queries...)
}

// auth models one authoritative server's view of the test name.
type auth struct {
	addrs            []string // A and AAAA records of the name
	tcpAddrs         []string // with truncateUDP: the records answered over TCP
	truncateUDP      bool     // answer UDP with TC set (and addrs), TCP with tcpAddrs
	nxdomain         bool
	nodata           bool // the name exists but has no address records
	cname            string
	notAuthoritative bool
	rcode            int  // an error rcode to answer with
	silent           bool // never answer
}

// handler answers questions for name as a modelled in a.
func (a auth) handler(name string) func(w dns.ResponseWriter, q *dns.Msg) {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		if a.silent {
			return
		}
		r := new(dns.Msg)
		r.SetReply(q)
		r.Authoritative = !a.notAuthoritative
		qq := q.Question[0]
		tcp := w.RemoteAddr().Network() == "tcp"
		switch {
		case a.rcode != 0:
			r.Rcode = a.rcode
		case !strings.EqualFold(qq.Name, name) || a.nxdomain:
			r.Rcode = dns.RcodeNameError
		case a.nodata:
		case a.cname != "":
			r.Answer = append(r.Answer, &dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: a.cname})
		default:
			addrs := a.addrs
			if a.truncateUDP && tcp {
				addrs = a.tcpAddrs
			}
			r.Answer = addressRRs(name, qq.Qtype, addrs)
			r.Truncated = a.truncateUDP && !tcp
		}
		_ = w.WriteMsg(r)
	}
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 5}
}

// addressRRs returns the records of addrs that answer qtype.
func addressRRs(name string, qtype uint16, addrs []string) []dns.RR {
	var rrs []dns.RR
	for _, s := range addrs {
		a := netip.MustParseAddr(s)
		switch {
		case a.Is4() && qtype == dns.TypeA:
			rrs = append(rrs, &dns.A{Hdr: hdr(name, dns.TypeA), A: a.AsSlice()})
		case a.Is6() && qtype == dns.TypeAAAA:
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
		}
	}
	return rrs
}

func parseAddrs(t testing.TB, ss ...string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// closedPort returns a 127.0.0.1 UDP address where nothing listens.
func closedPort(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}
