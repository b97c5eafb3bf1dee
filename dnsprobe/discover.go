package dnsprobe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// discovery is a cached result of finding a name's authoritative servers.
type discovery struct {
	zone    string
	servers []string
	expires time.Time
}

// serversFor returns the servers to ask about name: the configured ones, or the
// addresses of the NS hosts of the zone that holds name, cached for
// discoveryTTL. Failures are not cached: the caller's backoff paces retries.
func (p *Authoritative) serversFor(ctx context.Context, name string) ([]string, string, error) {
	if len(p.servers) > 0 {
		return p.servers, "", nil
	}
	key := parent(name)
	p.mu.Lock()
	d, ok := p.cache[key]
	p.mu.Unlock()
	if ok && p.clock.Now().Before(d.expires) {
		return d.servers, d.zone, nil
	}

	zone, servers, err := p.discover(ctx, name)
	if err != nil {
		return nil, zone, err
	}
	p.mu.Lock()
	p.cache[key] = discovery{zone: zone, servers: servers, expires: p.clock.Now().Add(p.discoveryTTL)}
	p.mu.Unlock()
	return servers, zone, nil
}

// discover walks up from name, asking a resolver for SOA at each step, until it
// finds the zone apex; then it asks for the zone's NS records and their hosts'
// addresses.
func (p *Authoritative) discover(ctx context.Context, name string) (string, []string, error) {
	resolvers, err := p.bootstrapResolvers()
	if err != nil {
		return "", nil, err
	}
	zone, err := p.findZone(ctx, resolvers, name)
	if err != nil {
		return "", nil, err
	}
	hosts, glue, err := p.nameservers(ctx, resolvers, zone)
	if err != nil {
		return zone, nil, err
	}
	var servers []string
	var errs []error
	for _, h := range hosts {
		addrs := glue[h]
		if len(addrs) == 0 {
			addrs, err = p.hostAddrs(ctx, resolvers, h)
			if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		for _, a := range p.pickFamilies(addrs) {
			servers = append(servers, hostPort(a, p.nsPort))
		}
	}
	slices.Sort(servers)
	servers = slices.Compact(servers)
	if len(servers) == 0 {
		return zone, nil, fmt.Errorf("no address for the NS hosts %s of zone %s: %w", strings.Join(hosts, ", "), zone, errors.Join(errs...))
	}
	return zone, servers, nil
}

// bootstrapResolvers returns the configured resolvers or those of resolv.conf,
// read anew at each discovery so that a changed file is picked up.
func (p *Authoritative) bootstrapResolvers() ([]string, error) {
	if len(p.resolvers) > 0 {
		return p.resolvers, nil
	}
	return resolversFromFile(p.resolvConf)
}

// resolversFromFile reads the nameservers of a resolv.conf file as host:port.
func resolversFromFile(path string) ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading resolvers: %w", err)
	}
	var hostPorts []string
	for _, s := range cfg.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue // not an IP literal; never hand names to the OS resolver
		}
		port := DefaultNameserverPort
		if _, err := fmt.Sscan(cfg.Port, &port); err != nil {
			port = DefaultNameserverPort
		}
		hostPorts = append(hostPorts, hostPort(a, port))
	}
	if len(hostPorts) == 0 {
		return nil, fmt.Errorf("no nameserver in %s", path)
	}
	return hostPorts, nil
}

// findZone returns the closest ancestor of name (name included) that has an SOA
// record, excluding the root.
func (p *Authoritative) findZone(ctx context.Context, resolvers []string, name string) (string, error) {
	for cand := name; cand != "."; cand = parent(cand) {
		m, err := p.resolve(ctx, resolvers, cand, dns.TypeSOA)
		if err != nil {
			return "", fmt.Errorf("looking for the zone of %s: SOA %s: %w", name, cand, err)
		}
		if m.Rcode != dns.RcodeSuccess {
			continue // NXDOMAIN: the zone is further up
		}
		for _, rr := range m.Answer {
			if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, cand) {
				return strings.ToLower(cand), nil
			}
		}
	}
	return "", fmt.Errorf("no zone holds %s", name)
}

// nameservers returns the NS hosts of zone and any glue addresses for them.
func (p *Authoritative) nameservers(ctx context.Context, resolvers []string, zone string) ([]string, map[string][]netip.Addr, error) {
	m, err := p.resolve(ctx, resolvers, zone, dns.TypeNS)
	if err != nil {
		return nil, nil, fmt.Errorf("NS %s: %w", zone, err)
	}
	var hosts []string
	for _, rr := range m.Answer {
		if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, zone) {
			hosts = append(hosts, strings.ToLower(ns.Ns))
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	if len(hosts) == 0 {
		return nil, nil, fmt.Errorf("zone %s has no NS records", zone)
	}
	glue := map[string][]netip.Addr{}
	for _, rr := range m.Extra {
		h := strings.ToLower(rr.Header().Name)
		if !slices.Contains(hosts, h) {
			continue
		}
		if a, ok := rrAddr(rr); ok {
			glue[h] = append(glue[h], a)
		}
	}
	return hosts, glue, nil
}

// hostAddrs resolves an NS host's A and AAAA records through the resolvers.
func (p *Authoritative) hostAddrs(ctx context.Context, resolvers []string, host string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := p.resolve(ctx, resolvers, host, qt)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", dns.TypeToString[qt], host, err))
			continue
		}
		for _, rr := range m.Answer {
			if a, ok := rrAddr(rr); ok {
				addrs = append(addrs, a)
			}
		}
	}
	if len(addrs) == 0 {
		errs = append(errs, fmt.Errorf("NS host %s has no address", host))
		return nil, errors.Join(errs...)
	}
	return addrs, nil
}

// pickFamilies keeps IPv4 addresses, and IPv6 ones too if asked to or if there
// is no IPv4 address.
func (p *Authoritative) pickFamilies(addrs []netip.Addr) []netip.Addr {
	addrs = normaliseAddrs(addrs)
	if p.ipv6Nameservers {
		return addrs
	}
	v4 := slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return !a.Is4() })
	if len(v4) > 0 {
		return v4
	}
	return addrs
}

// resolve asks the resolvers in turn, with the RD bit on, until one gives an
// answer that is NOERROR or NXDOMAIN.
func (p *Authoritative) resolve(ctx context.Context, resolvers []string, name string, qtype uint16) (*dns.Msg, error) {
	var errs []error
	for _, s := range resolvers {
		r := p.ask(ctx, s, name, qtype, true)
		switch {
		case r.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", s, r.err))
		case r.msg.Rcode != dns.RcodeSuccess && r.msg.Rcode != dns.RcodeNameError:
			errs = append(errs, fmt.Errorf("%s: answered %s", s, dns.RcodeToString[r.msg.Rcode]))
		default:
			return r.msg, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

func rrAddr(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		return netip.AddrFromSlice(rr.A.To4())
	case *dns.AAAA:
		return netip.AddrFromSlice(rr.AAAA.To16())
	}
	return netip.Addr{}, false
}

// parent returns the name with its first label removed ("." for a TLD).
func parent(name string) string {
	i, end := dns.NextLabel(name, 0)
	if end || i >= len(name) {
		return "."
	}
	return name[i:]
}
