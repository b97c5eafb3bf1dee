// Command stsroller runs the stsroller controller: it takes over pod deletion
// for StatefulSets that opt in with the stsroller.io/enabled annotation and
// updateStrategy OnDelete. See DESIGN.md for the annotations and behaviour.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/healthgate"
	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/metrics"
	"github.com/stsroller/stsroller/policy"
	"github.com/stsroller/stsroller/rollout"
)

// options are the command-line flags.
type options struct {
	kubeconfig     string
	namespace      string
	workers        int
	qps            float64
	burst          int
	resync         time.Duration
	metricsAddr    string
	healthAddr     string
	profiling      bool
	logFormat      string
	leaderElect    bool
	leaseNamespace string
	leaseName      string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	dnsServers     string
	dnsResolvers   string
	dnsTimeout     time.Duration
	dnsCheck       time.Duration
	dnsRecheck     time.Duration
	dnsConcurrency int
	dnsRounds      int
	lockKubeconfig string
	lockNamespace  string
	lockTTL        time.Duration
	clusterName    string
	prometheusURL  string
	healthInterval time.Duration
	healthTimeout  time.Duration
}

func main() {
	fs := flag.NewFlagSet("stsroller", flag.ExitOnError)
	o := bindFlags(fs)
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if err := setupLogging(o.logFormat); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	limitMemory(klog.FromContext(ctx), "/sys/fs/cgroup")
	if err := run(ctx, o); err != nil {
		klog.FromContext(ctx).Error(err, "stsroller failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func bindFlags(fs *flag.FlagSet) *options {
	o := &options{}
	fs.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "Path to a kubeconfig. Empty: in-cluster configuration.")
	fs.StringVar(&o.namespace, "namespace", "", "Only manage StatefulSets in this namespace. Empty: all namespaces.")
	fs.IntVar(&o.workers, "workers", 16, "StatefulSets planned concurrently.")
	fs.Float64Var(&o.qps, "kube-api-qps", 100, "Queries per second to the API server (removals, status patches, reads); Events and the Lease have a limit each of their own.")
	fs.IntVar(&o.burst, "kube-api-burst", 200, "Burst of queries to the API server.")
	fs.DurationVar(&o.resync, "resync-period", 10*time.Minute, "Informer resync period. Resyncs that carry no change are ignored: stsroller looks again by itself when a wait ends (minReadySeconds, progress deadline, DNS checks, a blocked eviction).")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus /metrics endpoint; \"0\" turns it off.")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz; \"0\" turns it off.")
	fs.BoolVar(&o.profiling, "profiling", false, "Serve Go's profiles (/debug/pprof/) beside /metrics.")
	fs.StringVar(&o.logFormat, "logging-format", "text", "Log format: text (klog) or json.")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "Hold a Lease so only one replica acts.")
	fs.StringVar(&o.leaseNamespace, "leader-elect-namespace", "", "Namespace of the Lease. Empty: $POD_NAMESPACE, else --namespace, else kube-system.")
	fs.StringVar(&o.leaseName, "leader-elect-name", "stsroller", "Name of the Lease.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "How long a lease lasts without renewal.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "How long the leader tries to renew before it gives up.")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often candidates try to acquire or renew.")
	fs.StringVar(&o.dnsServers, "dns-servers", "", "Authoritative DNS servers for the DNS gate, host:port,... Empty: found through the zone's NS records.")
	fs.StringVar(&o.dnsResolvers, "dns-resolvers", "", "Recursive resolvers used only to find the zone's NS records, host:port,... Empty: /etc/resolv.conf.")
	fs.DurationVar(&o.dnsTimeout, "dns-timeout", dnsprobe.DefaultTimeout, "Timeout of one DNS question to one server.")
	fs.DurationVar(&o.dnsCheck, "dns-check-timeout", dnsgate.DefaultCheckTimeout, "Timeout of one check of one name at every server.")
	fs.DurationVar(&o.dnsRecheck, "dns-recheck-interval", dnsgate.DefaultRecheck, "How often a propagated name is checked again.")
	fs.IntVar(&o.dnsConcurrency, "dns-concurrency", dnsgate.DefaultConcurrency, "DNS checks running at once.")
	fs.IntVar(&o.dnsRounds, "dns-rounds", 1, "Consecutive agreeing checks before a name counts as propagated.")
	fs.StringVar(&o.lockKubeconfig, "lock-kubeconfig", "", "Kubeconfig of the coordination cluster that holds the rollout locks' Leases (stsroller.io/rollout-lock). Empty: this cluster.")
	fs.StringVar(&o.lockNamespace, "lock-namespace", "", "Namespace of the rollout locks' Leases. Empty: stsroller's own namespace (as for --leader-elect-namespace).")
	fs.DurationVar(&o.lockTTL, "lock-ttl", rollout.DefaultLockTTL, "How long a rollout lock whose holder stops renewing it lasts before another may take it over.")
	fs.StringVar(&o.clusterName, "cluster-name", "", "This cluster's name in rollout lock holder identities (<cluster-name>/<namespace>/<statefulset>); required with --lock-kubeconfig. Empty: \"local\".")
	fs.StringVar(&o.prometheusURL, "prometheus-url", "", "Prometheus server of the health gate (stsroller.io/health-query), e.g. http://prometheus.monitoring:9090; a StatefulSet's stsroller.io/health-prometheus-url wins. Empty: only StatefulSets that name one can use the gate.")
	fs.DurationVar(&o.healthInterval, "health-interval", healthgate.DefaultInterval, "How often each StatefulSet's health query is evaluated.")
	fs.DurationVar(&o.healthTimeout, "health-timeout", healthgate.DefaultTimeout, "Timeout of one health query evaluation; one that times out holds the gate closed.")
	return o
}

// checkHealthFlags validates the health gate's flags.
func checkHealthFlags(o *options) error {
	if o.prometheusURL != "" && !policy.ValidPrometheusURL(o.prometheusURL) {
		return fmt.Errorf("--prometheus-url: %q is not an absolute http or https URL", o.prometheusURL)
	}
	if o.healthInterval < time.Second || o.healthTimeout <= 0 {
		return fmt.Errorf("--health-interval must be at least 1s and --health-timeout above 0 (got %s, %s)", o.healthInterval, o.healthTimeout)
	}
	return nil
}

// lockOptions builds the rollout locks' options from the flags.
func lockOptions(o *options, cfg *rest.Config) (*rollout.LockOptions, error) {
	lo := &rollout.LockOptions{Namespace: o.lockNamespace, Cluster: o.clusterName, TTL: o.lockTTL}
	if lo.Namespace == "" {
		lo.Namespace = leaseNamespace(&options{namespace: o.namespace})
	}
	if o.lockTTL < 3*time.Second {
		return nil, fmt.Errorf("--lock-ttl: %s is less than 3s", o.lockTTL)
	}
	lockCfg := rest.CopyConfig(cfg)
	if o.lockKubeconfig != "" {
		if o.clusterName == "" {
			return nil, fmt.Errorf("--cluster-name is required with --lock-kubeconfig")
		}
		c, err := clientcmd.BuildConfigFromFlags("", o.lockKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--lock-kubeconfig: %w", err)
		}
		c.UserAgent = "stsroller"
		lockCfg = c
	}
	client, err := kubernetes.NewForConfig(lockCfg)
	if err != nil {
		return nil, err
	}
	lo.Client = client.CoordinationV1()
	return lo, nil
}

// setupLogging routes klog through a JSON logger when asked.
func setupLogging(format string) error {
	switch format {
	case "text":
		return nil
	case "json":
		klog.SetLogger(funcr.NewJSON(func(obj string) { fmt.Fprintln(os.Stderr, obj) },
			funcr.Options{LogTimestamp: true, Verbosity: verbosity()}))
		return nil
	}
	return fmt.Errorf("--logging-format: %q is not text or json", format)
}

// verbosity reads klog's -v back, for the JSON logger.
func verbosity() int {
	for v := 10; v > 0; v-- {
		if klog.V(klog.Level(v)).Enabled() {
			return v
		}
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// tune sets how stsroller's clients talk to the API server.
func tune(cfg *rest.Config, o *options) {
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	cfg.UserAgent = "stsroller"
	// Protobuf, as the built-in controllers speak: every type stsroller reads
	// or writes is a built-in one, and a LIST of thousands of pods decodes in
	// a fraction of the memory and CPU that JSON takes.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	// No gzip, as kube-controller-manager and kube-scheduler ask: since
	// Kubernetes 1.37 the API server compresses a watch that starts with its
	// list (WatchListCompression) for its whole life, and on the cluster's
	// network compressing every pod event costs the API server and stsroller
	// CPU and latency that the bytes saved do not repay.
	cfg.DisableCompression = true
}

func run(ctx context.Context, o *options) error {
	logger := klog.FromContext(ctx)
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	tune(cfg, o)
	m := metrics.New()
	m.Instrument(cfg)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	// Events and the Lease get a client, and so a rate limiter, each of
	// their own: a burst of removals must neither delay the renewal of the
	// Lease (and lose it) nor wait behind a burst of events, and a burst of
	// events must not delay the Lease either.
	// (Instrument's token bucket is shared by every client of cfg: each of
	// these drops it and gets one of the same QPS and burst.)
	own := func() *rest.Config {
		c := rest.CopyConfig(cfg)
		c.RateLimiter = nil
		return c
	}
	eventClient, err := kubernetes.NewForConfig(own())
	if err != nil {
		return err
	}
	leaseClient, err := kubernetes.NewForConfig(own())
	if err != nil {
		return err
	}
	prober, err := dnsprobe.New(dnsprobe.Options{
		Servers:   splitList(o.dnsServers),
		Resolvers: splitList(o.dnsResolvers),
		Timeout:   o.dnsTimeout,
	})
	if err != nil {
		return fmt.Errorf("--dns-servers/--dns-resolvers: %w", err)
	}
	locks, err := lockOptions(o, cfg)
	if err != nil {
		return err
	}
	if err := checkHealthFlags(o); err != nil {
		return err
	}
	m.RegisterWorkqueueProvider()

	var ready atomic.Bool
	servers, err := serve(ctx, o, m, &ready)
	if err != nil {
		return err
	}
	defer servers()

	lead := func(ctx context.Context) error {
		m.Leader.Set(1)
		defer m.Leader.Set(0)
		return runController(ctx, o, client, eventClient, prober, m, &ready, locks)
	}
	if !o.leaderElect {
		return lead(ctx)
	}
	return runLeaderElection(ctx, o, leaseClient, lead, logger)
}

func runController(ctx context.Context, o *options, client, eventClient kubernetes.Interface, prober dnsprobe.Prober, m *metrics.Metrics, ready *atomic.Bool, locks *rollout.LockOptions) error {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "stsroller"})

	factory := informers.NewFactory(client, o.namespace, o.resync)
	podFactory := informers.NewPodFactory(client, o.namespace, o.resync)
	var c *rollout.Controller
	gate := dnsgate.New(ctx, prober, client, func(k cache.ObjectName) { c.Enqueue(k) }, dnsgate.Options{
		Concurrency: o.dnsConcurrency, CheckTimeout: o.dnsCheck, Recheck: o.dnsRecheck, Rounds: o.dnsRounds,
		Metrics: m,
	})
	health := healthgate.New(ctx, func(k cache.ObjectName) { c.Enqueue(k) }, healthgate.Options{
		DefaultURL: o.prometheusURL, Interval: o.healthInterval, Timeout: o.healthTimeout, OnEvaluation: m.ObserveHealthEvaluation,
	})
	c, err := rollout.New(ctx, client, factory, rollout.Options{Recorder: recorder, Gate: gate, Health: health, Metrics: m, PodFactory: podFactory, Locks: locks})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	podFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer podFactory.Shutdown()
	go func() {
		for _, f := range []interface {
			WaitForCacheSync(<-chan struct{}) map[reflect.Type]bool
		}{factory, podFactory} {
			for _, ok := range f.WaitForCacheSync(ctx.Done()) {
				if !ok {
					return
				}
			}
		}
		ready.Store(true)
	}()
	err = c.Run(ctx, o.workers)
	gate.Wait()
	health.Wait()
	return err
}

func runLeaderElection(ctx context.Context, o *options, client kubernetes.Interface, lead func(context.Context) error, logger klog.Logger) error {
	ns := leaseNamespace(o)
	host, _ := os.Hostname()
	id := host + "_" + string(uuid.NewUUID())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: o.leaseName},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	// le.Run releases the lease when its context ends. That context ends only
	// after the controller has finished the work in hand, so no other replica
	// starts deleting while this one still does.
	var runErr error
	electionCtx, endElection := context.WithCancel(context.WithoutCancel(ctx))
	defer endElection()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Name:            o.leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leading context.Context) {
				logger.Info("Became leader", "identity", id)
				// The controller stops on SIGTERM (ctx) or a lost lease (leading).
				runCtx, stopRun := context.WithCancel(leading)
				stop := context.AfterFunc(ctx, stopRun)
				runErr = lead(runCtx)
				stop()
				stopRun()
				endElection()
			},
			OnStoppedLeading: func() {
				if ctx.Err() == nil && electionCtx.Err() == nil {
					// Another replica may lead already: stop at once, as
					// kube-controller-manager does, rather than act on.
					logger.Error(nil, "Lost the leader lease; exiting", "identity", id)
					klog.FlushAndExit(klog.ExitFlushTimeout, 1)
				}
				logger.Info("Stopped leading", "identity", id)
			},
			OnNewLeader: func(identity string) {
				if identity != id {
					logger.Info("Another replica leads", "leader", identity)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	// Until this replica leads, SIGTERM ends the wait for the lease.
	stopWaiting := context.AfterFunc(ctx, func() {
		if !le.IsLeader() {
			endElection()
		}
	})
	defer stopWaiting()
	logger.Info("Waiting for the leader lease", "lease", klog.KRef(ns, o.leaseName), "identity", id)
	le.Run(electionCtx)
	return runErr
}

// leaseNamespace is where the Lease lives: the flag; else the pod's own
// namespace (deploy/ sets POD_NAMESPACE); else, out of a cluster, the
// namespace stsroller is scoped to; else kube-system, which every cluster has.
func leaseNamespace(o *options) string {
	for _, ns := range []string{o.leaseNamespace, os.Getenv("POD_NAMESPACE"), o.namespace} {
		if ns != "" {
			return ns
		}
	}
	return "kube-system"
}

// serve starts the metrics and health endpoints; the returned func stops them.
func serve(ctx context.Context, o *options, m *metrics.Metrics, ready *atomic.Bool) (func(), error) {
	var servers []*http.Server
	start := func(addr string, mux *http.ServeMux) error {
		if addr == "" || addr == "0" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		s := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go func() { _ = s.Serve(ln) }()
		return nil
	}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	healthMux := http.NewServeMux()
	if o.profiling {
		mux := metricsMux
		if o.metricsAddr == o.healthAddr {
			mux = healthMux
		}
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	healthMux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	healthMux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		// A standby replica is ready: it serves metrics and waits for the lease.
		if o.leaderElect || ready.Load() {
			_, _ = w.Write([]byte("ok"))
			return
		}
		http.Error(w, "caches not synced", http.StatusServiceUnavailable)
	})
	if o.metricsAddr == o.healthAddr {
		healthMux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
		if err := start(o.healthAddr, healthMux); err != nil {
			return nil, err
		}
	} else {
		if err := start(o.metricsAddr, metricsMux); err != nil {
			return nil, fmt.Errorf("--metrics-bind-address: %w", err)
		}
		if err := start(o.healthAddr, healthMux); err != nil {
			return nil, fmt.Errorf("--health-probe-bind-address: %w", err)
		}
	}
	klog.FromContext(ctx).Info("Serving", "metrics", o.metricsAddr, "health", o.healthAddr)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}, nil
}
