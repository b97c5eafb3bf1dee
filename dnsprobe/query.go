package dnsprobe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// reply is the outcome of one question to one server.
type reply struct {
	qtype uint16
	msg   *dns.Msg // nil when err is set
	tcp   bool
	rtt   time.Duration
	err   error
}

// probeServer asks one server for A and AAAA of name, concurrently, and judges
// the answers against want.
func (p *Authoritative) probeServer(ctx context.Context, server, name string, want []netip.Addr) ServerAnswer {
	qtypes := []uint16{dns.TypeA, dns.TypeAAAA}
	replies := make([]reply, len(qtypes))
	var wg sync.WaitGroup
	for i, qt := range qtypes {
		wg.Go(func() { replies[i] = p.ask(ctx, server, name, qt, false) })
	}
	wg.Wait()
	return judge(ctx, server, name, want, replies, p.timeout)
}

// ask puts one question to one server: over UDP, then over TCP if the UDP answer
// was truncated. The whole question, retry included, gets p.timeout. recurse
// sets the RD bit; it is off when asking authoritative servers.
func (p *Authoritative) ask(ctx context.Context, server, name string, qtype uint16, recurse bool) reply {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = recurse
	q.SetEdns0(p.udpSize, false)

	r := reply{qtype: qtype}
	r.msg, r.rtt, r.err = exchange(ctx, "udp", server, q)
	if r.err == nil && r.msg.Truncated {
		var rtt time.Duration
		r.tcp = true
		r.msg, rtt, r.err = exchange(ctx, "tcp", server, q)
		r.rtt += rtt
		if r.err == nil && r.msg.Truncated {
			r.err = errors.New("answer truncated over TCP")
		}
	}
	if r.err == nil {
		r.err = checkReply(q, r.msg)
	}
	if r.err != nil {
		r.msg = nil
	}
	return r
}

// exchange sends q to server over network and reads the reply. The context's
// deadline bounds it, and cancelling the context interrupts it (miekg/dns only
// honours deadlines, so cancellation sets the connection's deadline to now).
func exchange(ctx context.Context, network, server string, q *dns.Msg) (*dns.Msg, time.Duration, error) {
	c := &dns.Client{Net: network}
	if d, ok := ctx.Deadline(); ok {
		c.Timeout = time.Until(d)
	}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, 0, ctxErr(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	r, rtt, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, rtt, ctxErr(ctx, err)
	}
	return r, rtt, nil
}

// ctxErr prefers the context's error, so that a deadline or a cancellation is
// reported as such rather than as the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// deadlinePassed reports whether ctx's deadline is behind us. The
// connection's deadline is the context's, and its I/O timeout can fire
// before the context's own timer has set ctx.Err(); the clock says which.
func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// checkReply rejects a message that is not an answer to q.
func checkReply(q, r *dns.Msg) error {
	if !r.Response {
		return errors.New("reply is not a response")
	}
	if r.Opcode != dns.OpcodeQuery {
		return fmt.Errorf("reply has opcode %s", dns.OpcodeToString[r.Opcode])
	}
	if len(r.Question) == 0 && r.Rcode != dns.RcodeSuccess {
		return nil // some servers drop the question from error replies
	}
	want := q.Question[0]
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, want.Name) ||
		r.Question[0].Qtype != want.Qtype || r.Question[0].Qclass != want.Qclass {
		return fmt.Errorf("reply does not match the question %s %s", want.Name, dns.TypeToString[want.Qtype])
	}
	return nil
}

// judge combines one server's replies into a verdict. The order of the checks
// decides which reason wins when the replies disagree: no answer at all, then an
// error code, then a missing AA bit, then NXDOMAIN, then the address set.
func judge(ctx context.Context, server, name string, want []netip.Addr, replies []reply, timeout time.Duration) ServerAnswer {
	sa := ServerAnswer{Server: server, Authoritative: true}
	for _, r := range replies {
		sa.RTT = max(sa.RTT, r.rtt)
		sa.TCP = sa.TCP || r.tcp
	}

	for _, r := range replies {
		if r.err == nil {
			continue
		}
		qt := dns.TypeToString[r.qtype]
		sa.Authoritative = false
		switch {
		case errors.Is(r.err, context.Canceled) && ctx.Err() != nil:
			sa.Reason, sa.Message = ReasonCanceled, fmt.Sprintf("%s question canceled", qt)
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || deadlinePassed(ctx):
			sa.Reason, sa.Message = ReasonTimeout, fmt.Sprintf("no answer to %s before the probe's deadline", qt)
		case errors.Is(r.err, context.DeadlineExceeded) || isTimeout(r.err):
			sa.Reason, sa.Message = ReasonTimeout, fmt.Sprintf("no answer to %s within %s", qt, timeout)
		default:
			sa.Reason, sa.Message = ReasonError, fmt.Sprintf("%s: %v", qt, r.err)
		}
		return sa
	}

	for _, r := range replies {
		if r.msg.Rcode != dns.RcodeSuccess && r.msg.Rcode != dns.RcodeNameError {
			sa.Rcode = dns.RcodeToString[r.msg.Rcode]
			sa.Authoritative = r.msg.Authoritative
			sa.Reason, sa.Message = ReasonErrorRcode, fmt.Sprintf("answered %s to %s", sa.Rcode, dns.TypeToString[r.qtype])
			return sa
		}
	}

	for _, r := range replies {
		if !r.msg.Authoritative {
			sa.Rcode = dns.RcodeToString[r.msg.Rcode]
			sa.Authoritative = false
			sa.Addrs = addrsOf(name, replies)
			sa.Reason, sa.Message = ReasonNotAuthoritative, fmt.Sprintf("answered %s without the authoritative (AA) bit", dns.TypeToString[r.qtype])
			return sa
		}
	}

	for _, r := range replies {
		if r.msg.Rcode == dns.RcodeNameError {
			sa.Rcode = dns.RcodeToString[r.msg.Rcode]
			sa.Reason, sa.Message = ReasonNXDomain, "answered NXDOMAIN"
			return sa
		}
	}

	sa.Rcode = dns.RcodeToString[dns.RcodeSuccess]
	sa.Addrs = addrsOf(name, replies)
	if len(sa.Addrs) == 0 {
		sa.Reason, sa.Message = ReasonNoData, "answered no A or AAAA records"
		if target := cnameOf(name, replies); target != "" {
			sa.Message += " (CNAME to " + target + ")"
		}
		return sa
	}
	missing := difference(want, sa.Addrs)
	extra := difference(sa.Addrs, want)
	got := "answered " + formatAddrs(sa.Addrs)
	switch {
	case len(missing) == 0 && len(extra) == 0:
		sa.Reason, sa.Message = ReasonPropagated, got
	case len(missing) == 0:
		sa.Reason, sa.Message = ReasonExtraAddress, fmt.Sprintf("%s, want %s (extra %s)", got, formatAddrs(want), formatAddrs(extra))
	case len(extra) == 0:
		sa.Reason, sa.Message = ReasonMissingAddress, fmt.Sprintf("%s, want %s (missing %s)", got, formatAddrs(want), formatAddrs(missing))
	default:
		sa.Reason, sa.Message = ReasonWrongAddress, fmt.Sprintf("%s, want %s", got, formatAddrs(want))
	}
	return sa
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// addrsOf collects the A and AAAA records owned by exactly name, sorted and
// without duplicates. An AAAA record holding an IPv4-mapped address stays an
// IPv6 address: it is not the A record the pod needs.
func addrsOf(name string, replies []reply) []netip.Addr {
	var out []netip.Addr
	for _, r := range replies {
		if r.msg == nil {
			continue
		}
		for _, rr := range r.msg.Answer {
			if !strings.EqualFold(rr.Header().Name, name) {
				continue
			}
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
					out = append(out, a)
				}
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func cnameOf(name string, replies []reply) string {
	for _, r := range replies {
		if r.msg == nil {
			continue
		}
		for _, rr := range r.msg.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				return c.Target
			}
		}
	}
	return ""
}

// difference returns the addresses of a that are not in b; both are sorted.
func difference(a, b []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, x := range a {
		if _, found := slices.BinarySearchFunc(b, x, netip.Addr.Compare); !found {
			out = append(out, x)
		}
	}
	return out
}
