package bind

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// SetAddresses replaces the A and AAAA records of name (fully qualified or
// not, inside the zone) at the primary with addrs, in one TSIG-signed dynamic
// update (RFC 2136). With no addrs it deletes them. The secondary has the
// change after its next transfer.
func (s *Servers) SetAddresses(ctx context.Context, name string, addrs ...netip.Addr) error {
	name = strings.ToLower(dns.Fqdn(name))
	if !dns.IsSubDomain(s.Zone, name) {
		return fmt.Errorf("%s is not in zone %s", name, s.Zone)
	}
	m := new(dns.Msg)
	m.SetUpdate(s.Zone)
	m.RemoveRRset([]dns.RR{
		&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET}},
		&dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET}},
	})
	var rrs []dns.RR
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			rrs = append(rrs, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: RecordTTL}, A: a.AsSlice()})
		} else {
			rrs = append(rrs, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: RecordTTL}, AAAA: a.AsSlice()})
		}
	}
	if len(rrs) > 0 {
		m.Insert(rrs)
	}
	r, err := s.exchangeSigned(ctx, m)
	if err != nil {
		return fmt.Errorf("updating %s: %w", name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("updating %s: primary answered %s", name, dns.RcodeToString[r.Rcode])
	}
	return nil
}

// Transfer returns the zone's records as the server gives them in a
// TSIG-signed AXFR, the way external-dns (--rfc2136-axfr) reads them.
func (s *Servers) Transfer(ctx context.Context, srv *Server) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetAxfr(s.Zone)
	m.SetTsig(s.TSIG.Name, s.TSIG.DNSAlgorithm(), 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{s.TSIG.Name: s.TSIG.Secret}}
	if d, ok := ctx.Deadline(); ok {
		tr.DialTimeout, tr.ReadTimeout = time.Until(d), time.Until(d)
	}
	envs, err := tr.In(m, srv.Addr)
	if err != nil {
		return nil, err
	}
	var rrs []dns.RR
	for env := range envs {
		if env.Error != nil {
			return nil, env.Error
		}
		rrs = append(rrs, env.RR...)
	}
	return rrs, nil
}

// Serial returns the SOA serial the server serves for the zone.
func (s *Servers) Serial(ctx context.Context, srv *Server) (uint32, error) {
	soa, err := querySOA(ctx, srv.Addr, s.Zone)
	if err != nil {
		return 0, err
	}
	return soa.Serial, nil
}

func (s *Servers) exchangeSigned(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	m.SetTsig(s.TSIG.Name, s.TSIG.DNSAlgorithm(), 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{s.TSIG.Name: s.TSIG.Secret}, Timeout: 5 * time.Second}
	r, _, err := c.ExchangeContext(ctx, m, s.Primary.Addr)
	return r, err
}

// querySOA asks addr for the SOA of zone, without recursion, and accepts only
// an authoritative answer holding it.
func querySOA(ctx context.Context, addr, zone string) (*dns.SOA, error) {
	q := new(dns.Msg)
	q.SetQuestion(zone, dns.TypeSOA)
	q.RecursionDesired = false
	c := &dns.Client{Timeout: 500 * time.Millisecond}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err != nil {
		return nil, err
	}
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return nil, fmt.Errorf("answered %s, authoritative=%v", dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	for _, rr := range r.Answer {
		if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, zone) {
			return soa, nil
		}
	}
	return nil, errors.New("no SOA in the answer")
}
