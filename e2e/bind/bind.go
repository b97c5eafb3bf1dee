// Package bind runs real BIND (named) servers as local processes for the DNS
// gate's e2e tests: a primary, authoritative for a test zone, that takes
// TSIG-signed dynamic updates (RFC 2136) and zone transfers, and a secondary
// that transfers the zone from it (on NOTIFY and on a short refresh), so the
// secondary lags the primary a little, as real secondaries do.
//
// Both listen on free ports on 127.0.0.1 (or Options.Host), over UDP and TCP, and keep everything
// (configuration, zone files, journals, logs, pid files) in one directory; no
// path of the system's BIND installation (/etc/bind, /var/cache/bind) is used,
// and no rndc control channel is opened. named needs Debian's bind9 package;
// this package compiles and its non-e2e parts work without it.
//
// Every named runs in the foreground in its own process group and dies with
// the test binary (Pdeathsig). Stop, a cancelled Start context and a failed
// Start all kill it; no named is left behind.
//
// The same package launches external-dns against the primary: see
// StartExternalDNS.
package bind

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/stsroller/stsroller/e2e/proc"
)

// Options configure Start. The zero value is usable.
type Options struct {
	// Zone is the zone both servers serve. Default "example.test".
	Zone string
	// Dir holds everything of both servers. Default: a new temporary
	// directory, removed by Stop unless KeepDir.
	Dir string
	// KeepDir keeps a temporary Dir after Stop, to read the logs.
	KeepDir bool
	// Named is the named binary. Default: named on $PATH, else /usr/sbin/named.
	Named string
	// KeyName is the TSIG key's name. Default "stsroller-e2e.".
	KeyName string
	// Refresh is the zone's SOA refresh (whole seconds, at least 1s): how long
	// the secondary may lag when it misses a NOTIFY. Its retry is half that.
	// Default 2s.
	Refresh time.Duration
	// DisableNotify stops the primary from sending NOTIFY to the secondary,
	// which then learns of changes only by polling every Refresh: a secondary
	// that reliably lags.
	DisableNotify bool
	// StartTimeout bounds the wait for each server to serve the zone.
	// Default 30s.
	StartTimeout time.Duration
	// Host is the IPv4 address both servers listen on (and the secondary
	// transfers from). Default 127.0.0.1; the deployed mode uses the real
	// node's host address, which its pods reach.
	Host string
}

// Defaults of Options.
const (
	DefaultZone    = "example.test"
	DefaultKeyName = "stsroller-e2e."
	DefaultRefresh = 2 * time.Second
	// RecordTTL is the TTL of the records SetAddresses writes and of the
	// zone's negative answers, in seconds.
	RecordTTL = 5
)

// TSIGKey is the key that signs dynamic updates and zone transfers, spelt as
// BIND and external-dns's --rfc2136-tsig-* flags want it.
type TSIGKey struct {
	// Name is the key's name, fully qualified ("stsroller-e2e.").
	Name string
	// Secret is the base64 secret.
	Secret string
	// Algorithm is "hmac-sha256".
	Algorithm string
}

// DNSAlgorithm is the algorithm as miekg/dns names it ("hmac-sha256.").
func (k TSIGKey) DNSAlgorithm() string { return dns.Fqdn(k.Algorithm) }

// Servers are a running primary and secondary.
type Servers struct {
	// Zone is the zone, fully qualified ("example.test.").
	Zone string
	// Primary takes updates; Secondary transfers the zone from it.
	Primary, Secondary *Server
	// TSIG is the key for updates and transfers.
	TSIG TSIGKey
	// Dir holds everything of both servers.
	Dir string

	removeDir bool
	stopOnce  sync.Once
	stopErr   error
	stopWatch func() bool
}

// Server is one named process. Its methods are safe for concurrent use.
type Server struct {
	// Name is "primary" or "secondary".
	Name string
	// Addr is host:port, as dnsprobe and --dns-servers want it.
	Addr string
	// Host is the address (127.0.0.1 by default); Port is the UDP and TCP port.
	Host string
	Port int
	// Dir is named's working directory: named.conf, zone file, journal, pid.
	Dir string
	// LogPath is named's log (its stderr).
	LogPath string

	named        string
	conf         string
	zone         string
	startTimeout time.Duration

	mu   sync.Mutex
	proc *proc.Process // nil when stopped
}

// Start writes the configuration of both servers, starts them and returns
// once both serve the zone's SOA authoritatively. They run until Stop or until
// ctx is done.
func Start(ctx context.Context, opts Options) (*Servers, error) {
	named, err := findNamed(opts.Named)
	if err != nil {
		return nil, err
	}
	zone := opts.Zone
	if zone == "" {
		zone = DefaultZone
	}
	zone = strings.ToLower(dns.Fqdn(zone))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "." {
		return nil, fmt.Errorf("zone %q is not a domain name", opts.Zone)
	}
	keyName := opts.KeyName
	if keyName == "" {
		keyName = DefaultKeyName
	}
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || ip.To4() == nil {
		return nil, fmt.Errorf("host %q is not an IPv4 address", opts.Host)
	}
	refresh := max(1, int(opts.Refresh.Round(time.Second)/time.Second))
	if opts.Refresh == 0 {
		refresh = int(DefaultRefresh / time.Second)
	}
	startTimeout := opts.StartTimeout
	if startTimeout <= 0 {
		startTimeout = 30 * time.Second
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}

	s := &Servers{
		Zone: zone,
		TSIG: TSIGKey{Name: dns.Fqdn(keyName), Secret: base64.StdEncoding.EncodeToString(secret), Algorithm: "hmac-sha256"},
		Dir:  opts.Dir,
	}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "stsroller-bind-"); err != nil {
			return nil, err
		}
		s.removeDir = !opts.KeepDir
	}
	if s.Dir, err = filepath.Abs(s.Dir); err != nil {
		return nil, err
	}

	// A port found free may be taken before named binds it; named then exits,
	// and Start tries again with other ports.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err = s.startOnce(ctx, named, host, refresh, !opts.DisableNotify, startTimeout)
		if err == nil {
			break
		}
		s.stopServers()
		if attempt == attempts || ctx.Err() != nil || !errors.Is(err, errExited) {
			s.cleanDir()
			return nil, err
		}
	}
	s.stopWatch = context.AfterFunc(ctx, func() { _ = s.Stop() })
	return s, nil
}

// startOnce configures and starts both servers on fresh ports.
func (s *Servers) startOnce(ctx context.Context, named, host string, refresh int, notify bool, startTimeout time.Duration) error {
	ports, err := freePorts(host, 2)
	if err != nil {
		return err
	}
	s.Primary = newServer("primary", named, s.Dir, s.Zone, host, ports[0], startTimeout)
	s.Secondary = newServer("secondary", named, s.Dir, s.Zone, host, ports[1], startTimeout)
	for _, srv := range []*Server{s.Primary, s.Secondary} {
		if err := os.RemoveAll(srv.Dir); err != nil {
			return err
		}
		if err := os.MkdirAll(srv.Dir, 0o755); err != nil {
			return err
		}
	}
	zoneFile := filepath.Join(s.Primary.Dir, "zone.db")
	if err := os.WriteFile(zoneFile, []byte(zoneText(s.Zone, refresh)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(s.Primary.conf, []byte(s.primaryConf(zoneFile, notify)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(s.Secondary.conf, []byte(s.secondaryConf(refresh)), 0o644); err != nil {
		return err
	}
	if err := s.Primary.Start(ctx); err != nil {
		return err
	}
	return s.Secondary.Start(ctx)
}

// Stop kills both servers and removes Dir if Start made it (and KeepDir is
// unset). It is safe to call more than once.
func (s *Servers) Stop() error {
	s.stopOnce.Do(func() {
		if s.stopWatch != nil {
			s.stopWatch()
		}
		s.stopErr = s.stopServers()
		s.cleanDir()
	})
	return s.stopErr
}

func (s *Servers) stopServers() error {
	var errs []error
	for _, srv := range []*Server{s.Secondary, s.Primary} {
		if srv != nil {
			errs = append(errs, srv.Stop())
		}
	}
	return errors.Join(errs...)
}

func (s *Servers) cleanDir() {
	if s.removeDir {
		_ = os.RemoveAll(s.Dir)
	}
}

// Addrs returns the host:port of both servers, primary first: the value of
// stsroller's --dns-servers flag for these servers.
func (s *Servers) Addrs() []string { return []string{s.Primary.Addr, s.Secondary.Addr} }

func newServer(name, named, dir, zone, host string, port int, startTimeout time.Duration) *Server {
	d := filepath.Join(dir, name)
	return &Server{
		Name:         name,
		Host:         host,
		Port:         port,
		Addr:         net.JoinHostPort(host, strconv.Itoa(port)),
		Dir:          d,
		LogPath:      filepath.Join(d, "named.log"),
		named:        named,
		conf:         filepath.Join(d, "named.conf"),
		zone:         zone,
		startTimeout: startTimeout,
	}
}

// errExited marks a named that exited before serving the zone.
var errExited = errors.New("named exited")

// Start starts the server (again, after Stop) on its port and waits until it
// serves the zone's SOA. A restarted secondary serves the zone it had on disk
// until its next refresh. ctx bounds only the wait.
func (srv *Server) Start(ctx context.Context) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.proc != nil {
		return fmt.Errorf("%s is already running", srv.Name)
	}
	// -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker thread.
	p, err := startProcess("named-"+srv.Name, srv.named, []string{"-g", "-4", "-n", "1", "-c", srv.conf}, srv.Dir, srv.LogPath)
	if err != nil {
		return err
	}
	if err := srv.waitServing(ctx, p); err != nil {
		_ = p.Stop(0)
		hint := ""
		if tail := proc.LogTail(srv.LogPath, 15); tail != "" {
			hint = "\n" + tail
			if strings.Contains(strings.ToLower(tail), "permission denied") {
				hint += "\n(is an AppArmor profile confining named to /etc/bind?)"
			}
		}
		return fmt.Errorf("%s named on %s: %w; log %s:%s", srv.Name, srv.Addr, err, srv.LogPath, hint)
	}
	srv.proc = p
	return nil
}

// waitServing polls the server for the zone's SOA until it answers
// authoritatively, the process exits, or the start timeout passes.
func (srv *Server) waitServing(ctx context.Context, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, srv.startTimeout)
	defer cancel()
	var last error
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%w: %v", errExited, err)
		}
		_, err := querySOA(ctx, srv.Addr, srv.zone)
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving %s: %w (last answer: %v)", srv.zone, ctx.Err(), last)
		case <-p.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop kills the server (SIGTERM, then SIGKILL) and waits for it to exit. Its
// files stay, so Start can bring it back; until then questions to it fail
// with "connection refused". Stopping a stopped server does nothing.
func (srv *Server) Stop() error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.proc == nil {
		return nil
	}
	err := srv.proc.Stop(5 * time.Second)
	srv.proc = nil
	return err
}

// Pause stops the server with SIGSTOP and returns once every thread of it has
// stopped: it still holds its port, so questions to it time out rather than
// fail. Resume undoes it; Stop works either way.
func (srv *Server) Pause() error {
	if err := srv.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return waitStopped(srv.proc, 5*time.Second)
}

// Resume continues a paused server.
func (srv *Server) Resume() error { return srv.signal(syscall.SIGCONT) }

func (srv *Server) signal(sig syscall.Signal) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.proc == nil {
		return fmt.Errorf("%s is not running", srv.Name)
	}
	return srv.proc.Signal(sig)
}

// Running reports whether the server's process is running (paused counts).
func (srv *Server) Running() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.proc == nil {
		return false
	}
	done, _ := srv.proc.Exited()
	return !done
}

func findNamed(named string) (string, error) {
	if named != "" {
		return exec.LookPath(named)
	}
	if p, err := exec.LookPath("named"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/named"); err == nil {
		return "/usr/sbin/named", nil
	}
	return "", errors.New("named not found on $PATH or in /usr/sbin: install BIND (Debian: apt-get install bind9 bind9-utils)")
}

// freePorts returns n distinct ports that are free on host for both UDP
// and TCP right now.
func freePorts(host string, n int) ([]int, error) {
	var ports []int
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 50 {
			return nil, fmt.Errorf("no free port on %s for both UDP and TCP", host)
		}
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		closers = append(closers, pc.Close)
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			continue // taken for TCP; keep the UDP one held so it is not picked again
		}
		closers = append(closers, l.Close)
		ports = append(ports, pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

// zoneText is the zone as the primary starts with it: SOA, NS and the NS
// host's address, and nothing else.
func zoneText(zone string, refresh int) string {
	return fmt.Sprintf(`$ORIGIN %[1]s
$TTL %[2]d
@	IN SOA	ns1.%[1]s hostmaster.%[1]s 1 %[3]d %[4]d 3600 %[2]d
@	IN NS	ns1.%[1]s
ns1	IN A	127.0.0.1
`, zone, RecordTTL, refresh, max(1, refresh/2))
}

// commonConf is the part of named.conf both servers share: everything in
// srv.Dir, no recursion, no rndc, srv.Host only.
func (s *Servers) commonConf(srv *Server) string {
	return fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	bindkeys-file "%[1]s/bind.keys";
	dump-file "%[1]s/named_dump.db";
	statistics-file "%[1]s/named.stats";
	memstatistics-file "%[1]s/named.memstats";
	listen-on port %[2]d { %[6]s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	automatic-interface-scan no;
	querylog no;
	version none;
	hostname none;
	server-id none;
};
controls { };
key "%[3]s" {
	algorithm %[4]s;
	secret "%[5]s";
};
`, srv.Dir, srv.Port, s.TSIG.Name, s.TSIG.Algorithm, s.TSIG.Secret, srv.Host)
}

func (s *Servers) primaryConf(zoneFile string, notify bool) string {
	notifyConf := "notify no;"
	if notify {
		notifyConf = fmt.Sprintf("notify explicit;\n\talso-notify { %s port %d; };\n\tnotify-delay 0;", s.Secondary.Host, s.Secondary.Port)
	}
	return s.commonConf(s.Primary) + fmt.Sprintf(`zone "%[1]s" {
	type primary;
	file "%[2]s";
	allow-update { key "%[3]s"; };
	allow-transfer { key "%[3]s"; };
	%[4]s
};
`, s.Zone, zoneFile, s.TSIG.Name, notifyConf)
}

func (s *Servers) secondaryConf(refresh int) string {
	return s.commonConf(s.Secondary) + fmt.Sprintf(`zone "%[1]s" {
	type secondary;
	primaries { %[2]s port %[3]d key "%[4]s"; };
	file "%[5]s/zone.db";
	masterfile-format text;
	allow-notify { %[2]s; };
	allow-transfer { key "%[4]s"; };
	notify no;
	min-refresh-time 1;
	max-refresh-time %[6]d;
	min-retry-time 1;
	max-retry-time %[6]d;
};
`, s.Zone, s.Primary.Host, s.Primary.Port, s.TSIG.Name, s.Secondary.Dir, refresh)
}
