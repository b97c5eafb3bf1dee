// Package dnsprobe tells whether a pod's stable DNS name has propagated: whether
// every authoritative server of the name's zone answers, authoritatively, with
// exactly the pod's current addresses.
//
// It asks the servers themselves (never a caching resolver), with the RD bit off,
// over UDP with a fall back to TCP when the UDP answer is truncated. Anything
// other than a clean, authoritative, exact answer from every server means "not
// propagated", with a [Reason] the caller can show: the DNS gate fails closed.
//
// A [Prober] answers about one moment. A caller that wants several consecutive
// agreeing answers before it trusts a name (to ride out anycast or load-balanced
// servers that answer from different copies of the zone) counts them itself:
// requeue, probe again, and reset the count whenever a probe is not propagated.
// That keeps the waiting in the caller's workqueue rather than in a sleep here.
package dnsprobe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"k8s.io/utils/clock"
)

// Prober tells whether name resolves, at every authoritative server, to exactly
// the addresses in want. It never returns Propagated when an answer could not be
// had. Implementations are safe for concurrent use.
type Prober interface {
	Probe(ctx context.Context, name string, want []netip.Addr) Result
}

// Reason says, in one word, why a name is or is not propagated. It is meant for
// conditions, events and metric labels.
type Reason string

const (
	// ReasonPropagated: every server answered authoritatively with exactly the
	// wanted addresses.
	ReasonPropagated Reason = "Propagated"
	// ReasonNXDomain: a server answered that the name does not exist.
	ReasonNXDomain Reason = "NXDomain"
	// ReasonNoData: a server answered that the name exists but has no A or AAAA
	// records (NODATA), for instance because it is a CNAME.
	ReasonNoData Reason = "NoData"
	// ReasonWrongAddress: a server answered with none of the wanted addresses,
	// or with some wanted ones missing and others not wanted (a stale answer).
	ReasonWrongAddress Reason = "WrongAddress"
	// ReasonExtraAddress: a server answered with every wanted address and more.
	ReasonExtraAddress Reason = "ExtraAddress"
	// ReasonMissingAddress: a server answered with only some of the wanted
	// addresses and nothing else.
	ReasonMissingAddress Reason = "MissingAddress"
	// ReasonNotAuthoritative: a server answered without the AA bit: it is not
	// (or no longer) authoritative for the zone, or it referred us elsewhere.
	ReasonNotAuthoritative Reason = "NotAuthoritative"
	// ReasonErrorRcode: a server answered with an error code other than NXDOMAIN,
	// such as SERVFAIL or REFUSED.
	ReasonErrorRcode Reason = "ErrorRcode"
	// ReasonTimeout: a server did not answer within the timeout.
	ReasonTimeout Reason = "Timeout"
	// ReasonError: a server could not be asked, or its answer could not be read
	// or did not match the question.
	ReasonError Reason = "Error"
	// ReasonCanceled: the caller's context was canceled before an answer came.
	ReasonCanceled Reason = "Canceled"
	// ReasonNoServers: there is no server to ask: none configured and none found
	// through the zone's NS records.
	ReasonNoServers Reason = "NoServers"
	// ReasonInvalidInput: the name is not a domain name, or no address is wanted.
	ReasonInvalidInput Reason = "InvalidInput"
)

// Result is the outcome of one probe of one name.
type Result struct {
	// Name is the fully qualified name asked about, in lower case.
	Name string
	// Want is the wanted address set, normalised and sorted.
	Want []netip.Addr
	// Propagated is true only if every server answered authoritatively with
	// exactly Want.
	Propagated bool
	// Reason is ReasonPropagated, or the reason of the first server (in Servers
	// order) that disagreed, or a reason that applies to the whole probe
	// (ReasonNoServers, ReasonInvalidInput).
	Reason Reason
	// Message says the same for people: which servers disagree and what they
	// answered.
	Message string
	// Zone is the zone whose NS records gave Servers; empty when the servers
	// were configured.
	Zone string
	// Servers are the servers asked, as host:port, in the order of Answers.
	Servers []string
	// Answers holds what each server said.
	Answers []ServerAnswer
}

// ServerAnswer is what one server said about one name. Both A and AAAA are asked;
// the answer combines them.
type ServerAnswer struct {
	// Server is the host:port asked.
	Server string
	// Reason is ReasonPropagated if this server agrees with Want.
	Reason Reason
	// Message says what the server answered, for people.
	Message string
	// Addrs are the A and AAAA records the server gave for the exact name,
	// sorted. Empty when there was no usable answer.
	Addrs []netip.Addr
	// Rcode is the response code of the answer that decided Reason ("NOERROR",
	// "NXDOMAIN", "REFUSED", ...), empty when no answer came.
	Rcode string
	// Authoritative is true if every answer had the AA bit set.
	Authoritative bool
	// TCP is true if a UDP answer was truncated and the question was asked
	// again over TCP; the TCP answer is the one that counts.
	TCP bool
	// RTT is the longest round trip of this server's questions.
	RTT time.Duration
}

// Options configures an Authoritative prober. The zero value is usable: it
// discovers servers through /etc/resolv.conf and uses the defaults below.
type Options struct {
	// Servers are the authoritative servers to ask, as host:port with an IP
	// literal host (a bare IP means port 53). When empty, servers are discovered
	// from the zone's NS records.
	Servers []string
	// Timeout bounds each question to each server, the TCP retry included.
	// Default 2s.
	Timeout time.Duration
	// UDPSize is the EDNS0 UDP buffer size advertised. Default 1232.
	UDPSize uint16

	// Resolvers are the recursive resolvers (host:port, IP literal) used only to
	// discover servers: to find the zone's SOA and NS records and the NS hosts'
	// addresses. When empty, the nameservers of ResolvConf are used.
	Resolvers []string
	// ResolvConf is read for resolvers when Resolvers is empty. Default
	// /etc/resolv.conf.
	ResolvConf string
	// NameserverPort is the port of discovered servers. Default 53.
	NameserverPort int
	// IPv6Nameservers makes discovery use the IPv6 addresses of NS hosts as well
	// as their IPv4 ones. By default an NS host's IPv6 addresses are used only
	// when it has no IPv4 address, so that a cluster without IPv6 reachability
	// does not count reachable servers as unreachable.
	IPv6Nameservers bool
	// DiscoveryTTL is how long discovered servers are reused. Default 5m.
	DiscoveryTTL time.Duration
	// Clock tells time for the discovery cache. Default the real clock.
	Clock clock.PassiveClock
}

// Defaults of Options.
const (
	DefaultTimeout        = 2 * time.Second
	DefaultUDPSize        = 1232
	DefaultResolvConf     = "/etc/resolv.conf"
	DefaultNameserverPort = 53
	DefaultDiscoveryTTL   = 5 * time.Minute
)

// Authoritative is a Prober that asks the authoritative servers directly.
type Authoritative struct {
	servers         []string
	timeout         time.Duration
	udpSize         uint16
	resolvers       []string
	resolvConf      string
	nsPort          int
	ipv6Nameservers bool
	discoveryTTL    time.Duration
	clock           clock.PassiveClock

	mu    sync.Mutex
	cache map[string]discovery // by the name's parent domain
}

var _ Prober = (*Authoritative)(nil)

// New returns an Authoritative prober. It fails only on malformed options.
func New(opts Options) (*Authoritative, error) {
	servers, err := normaliseServers(opts.Servers)
	if err != nil {
		return nil, fmt.Errorf("servers: %w", err)
	}
	resolvers, err := normaliseServers(opts.Resolvers)
	if err != nil {
		return nil, fmt.Errorf("resolvers: %w", err)
	}
	p := &Authoritative{
		servers:         servers,
		timeout:         opts.Timeout,
		udpSize:         opts.UDPSize,
		resolvers:       resolvers,
		resolvConf:      opts.ResolvConf,
		nsPort:          opts.NameserverPort,
		ipv6Nameservers: opts.IPv6Nameservers,
		discoveryTTL:    opts.DiscoveryTTL,
		clock:           opts.Clock,
		cache:           map[string]discovery{},
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.udpSize < dns.MinMsgSize {
		p.udpSize = DefaultUDPSize
	}
	if p.resolvConf == "" {
		p.resolvConf = DefaultResolvConf
	}
	if p.nsPort <= 0 {
		p.nsPort = DefaultNameserverPort
	}
	if p.nsPort > 65535 {
		return nil, fmt.Errorf("nameserver port %d out of range", p.nsPort)
	}
	if p.discoveryTTL <= 0 {
		p.discoveryTTL = DefaultDiscoveryTTL
	}
	if p.clock == nil {
		p.clock = clock.RealClock{}
	}
	return p, nil
}

// normaliseServers checks that each entry is an IP literal with an optional
// port, so that no name is ever handed to the OS resolver.
func normaliseServers(in []string) ([]string, error) {
	var out []string
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(a, DefaultNameserverPort).String())
			continue
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address with an optional port", s)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("%q has port 0", s)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

// Probe asks every server, concurrently, for the A and AAAA records of name and
// compares them with want. Both families are always asked, so that an address of
// a family the pod does not have also counts against propagation.
func (p *Authoritative) Probe(ctx context.Context, name string, want []netip.Addr) Result {
	res := Result{Name: strings.ToLower(dns.Fqdn(name)), Want: normaliseAddrs(want)}
	if _, ok := dns.IsDomainName(res.Name); !ok || res.Name == "." {
		return res.fail(ReasonInvalidInput, fmt.Sprintf("%q is not a domain name", name))
	}
	if len(res.Want) == 0 {
		return res.fail(ReasonInvalidInput, fmt.Sprintf("%s: no address wanted", res.Name))
	}
	for _, a := range res.Want {
		if !a.IsValid() {
			return res.fail(ReasonInvalidInput, fmt.Sprintf("%s: invalid address wanted", res.Name))
		}
	}

	servers, zone, err := p.serversFor(ctx, res.Name)
	res.Servers, res.Zone = servers, zone
	if err != nil {
		return res.fail(ReasonNoServers, fmt.Sprintf("%s: no authoritative servers: %v", res.Name, err))
	}
	if len(servers) == 0 {
		return res.fail(ReasonNoServers, fmt.Sprintf("%s: no authoritative servers", res.Name))
	}

	res.Answers = make([]ServerAnswer, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { res.Answers[i] = p.probeServer(ctx, s, res.Name, res.Want) })
	}
	wg.Wait()
	return res.summarise()
}

func (r Result) fail(reason Reason, msg string) Result {
	r.Propagated, r.Reason, r.Message = false, reason, msg
	return r
}

// summarise sets the overall verdict from the per-server answers.
func (r Result) summarise() Result {
	var bad []string
	r.Reason = ReasonPropagated
	for _, a := range r.Answers {
		if a.Reason == ReasonPropagated {
			continue
		}
		if len(bad) == 0 {
			r.Reason = a.Reason
		}
		bad = append(bad, a.Server+": "+a.Message)
	}
	if len(bad) == 0 {
		r.Propagated = true
		r.Message = fmt.Sprintf("%s resolves to %s at all %d servers", r.Name, formatAddrs(r.Want), len(r.Answers))
		return r
	}
	r.Message = fmt.Sprintf("%s not propagated at %d of %d servers: %s", r.Name, len(bad), len(r.Answers), strings.Join(bad, "; "))
	return r
}

// normaliseAddrs unmaps IPv4-mapped IPv6 addresses (a pod IP given as
// ::ffff:10.0.0.7 is the IPv4 address 10.0.0.7), removes duplicates and sorts.
func normaliseAddrs(in []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(in))
	for _, a := range in {
		out = append(out, a.Unmap().WithZone(""))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func formatAddrs(addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return "nothing"
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// hostPort joins an address and a port the way the --dns-servers flag spells it.
func hostPort(a netip.Addr, port int) string {
	return net.JoinHostPort(a.String(), fmt.Sprint(port))
}
