package bind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stsroller/stsroller/e2e/proc"
)

// ExternalDNSOptions configure StartExternalDNS.
type ExternalDNSOptions struct {
	// Binary is the external-dns binary (v0.22.0 flags). Required. The e2e
	// tests build it with `hack/tools.sh build external-dns`; it is then
	// $(hack/tools.sh bindir)/external-dns.
	Binary string
	// Kubeconfig is the cluster whose Services external-dns publishes.
	// Required.
	Kubeconfig string
	// Servers are the BIND servers; external-dns updates the primary and reads
	// the zone from it by AXFR. Required.
	Servers *Servers
	// Sources are external-dns's --source values. Default ["service"].
	Sources []string
	// Interval is the time between two full synchronisations. Default 2s.
	Interval time.Duration
	// MinEventSyncInterval is the least time between two synchronisations
	// triggered by Kubernetes events (--events is always on). Default 1s.
	MinEventSyncInterval time.Duration
	// AnnotationPrefix, if set, replaces external-dns's
	// "external-dns.kubernetes.io/" annotation prefix.
	AnnotationPrefix string
	// Namespace, if set, limits the Services watched to one namespace.
	Namespace string
	// OwnerID is the TXT registry's owner id. Default "stsroller-e2e".
	OwnerID string
	// LogLevel is external-dns's --log-level. Default "info".
	LogLevel string
	// ExtraArgs are appended to the command line.
	ExtraArgs []string
	// LogPath receives external-dns's output. Default external-dns.log in
	// Servers.Dir.
	LogPath string
	// StartTimeout bounds the wait for the health endpoint. Default 30s.
	StartTimeout time.Duration
}

// ExternalDNS is a running external-dns.
type ExternalDNS struct {
	// Args is the command line, without the binary.
	Args []string
	// LogPath is where its output goes.
	LogPath string
	// MetricsAddr is the host:port of its metrics and /healthz endpoint.
	MetricsAddr string

	proc      *proc.Process
	stopOnce  sync.Once
	stopErr   error
	stopWatch func() bool
}

// ExternalDNSArgs returns external-dns's flags for publishing into the zone
// through the primary: RFC 2136 updates signed with the TSIG key, and AXFR
// (signed too) to read the records back, which --policy=sync needs to update
// and delete records. In v0.22.0 --rfc2136-tsig-axfr is a deprecated alias of
// --rfc2136-axfr; the latter is used.
func (s *Servers) ExternalDNSArgs() []string {
	return []string{
		"--provider=rfc2136",
		"--rfc2136-host=" + s.Primary.Host,
		"--rfc2136-port=" + strconv.Itoa(s.Primary.Port),
		"--rfc2136-zone=" + strings.TrimSuffix(s.Zone, "."),
		"--rfc2136-tsig-keyname=" + s.TSIG.Name,
		"--rfc2136-tsig-secret=" + s.TSIG.Secret,
		"--rfc2136-tsig-secret-alg=" + s.TSIG.Algorithm,
		"--rfc2136-axfr",
	}
}

// StartExternalDNS runs external-dns publishing the cluster's Services into the
// zone of opts.Servers, and returns once its health endpoint answers. That
// comes before its first synchronisation: wait for records in DNS, not for
// this. It runs until Stop or until ctx is done, in its own process group,
// dying with the test binary.
func StartExternalDNS(ctx context.Context, opts ExternalDNSOptions) (*ExternalDNS, error) {
	switch {
	case opts.Binary == "":
		return nil, errors.New("external-dns: no binary")
	case opts.Kubeconfig == "":
		return nil, errors.New("external-dns: no kubeconfig")
	case opts.Servers == nil || opts.Servers.Primary == nil:
		return nil, errors.New("external-dns: no BIND servers")
	}
	ports, err := freePorts("127.0.0.1", 1)
	if err != nil {
		return nil, err
	}
	e := &ExternalDNS{
		Args:        externalDNSArgs(opts, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))),
		LogPath:     opts.LogPath,
		MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
	}
	if e.LogPath == "" {
		e.LogPath = filepath.Join(opts.Servers.Dir, "external-dns.log")
	}
	e.proc, err = startProcess("external-dns", opts.Binary, e.Args, opts.Servers.Dir, e.LogPath)
	if err != nil {
		return nil, err
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if err := waitHealthy(ctx, e.proc, "http://"+e.MetricsAddr+"/healthz", timeout); err != nil {
		_ = e.proc.Stop(0)
		return nil, fmt.Errorf("external-dns: %w; log %s:\n%s", err, e.LogPath, proc.LogTail(e.LogPath, 15))
	}
	e.stopWatch = context.AfterFunc(ctx, func() { _ = e.Stop() })
	return e, nil
}

// externalDNSArgs builds the command line.
func externalDNSArgs(opts ExternalDNSOptions, metricsAddr string) []string {
	sources := opts.Sources
	if len(sources) == 0 {
		sources = []string{"service"}
	}
	interval := opts.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	minEvent := opts.MinEventSyncInterval
	if minEvent <= 0 {
		minEvent = time.Second
	}
	owner := opts.OwnerID
	if owner == "" {
		owner = "stsroller-e2e"
	}
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "info"
	}
	var args []string
	for _, s := range sources {
		args = append(args, "--source="+s)
	}
	args = append(args, opts.Servers.ExternalDNSArgs()...)
	args = append(args,
		"--policy=sync",
		"--registry=txt",
		"--txt-owner-id="+owner,
		"--domain-filter="+strings.TrimSuffix(opts.Servers.Zone, "."),
		"--interval="+interval.String(),
		"--min-event-sync-interval="+minEvent.String(),
		"--events",
		"--kubeconfig="+opts.Kubeconfig,
		"--metrics-address="+metricsAddr,
		"--log-level="+logLevel,
	)
	if opts.AnnotationPrefix != "" {
		args = append(args, "--annotation-prefix="+opts.AnnotationPrefix)
	}
	if opts.Namespace != "" {
		args = append(args, "--namespace="+opts.Namespace)
	}
	return append(args, opts.ExtraArgs...)
}

// waitHealthy polls url until it answers 200, the process exits, or timeout.
func waitHealthy(ctx context.Context, p *proc.Process, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	var last error
	for {
		if done, err := p.Exited(); done {
			return fmt.Errorf("exited before it was healthy: %v", err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", url, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w (last: %v)", ctx.Err(), last)
		case <-p.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop kills external-dns (SIGTERM, then SIGKILL) and waits for it to exit.
// It is safe to call more than once.
func (e *ExternalDNS) Stop() error {
	e.stopOnce.Do(func() {
		if e.stopWatch != nil {
			e.stopWatch()
		}
		e.stopErr = e.proc.Stop(5 * time.Second)
	})
	return e.stopErr
}

// Running reports whether external-dns is still running.
func (e *ExternalDNS) Running() bool {
	done, _ := e.proc.Exited()
	return !done
}
