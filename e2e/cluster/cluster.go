// Package cluster runs a real, local Kubernetes control plane for e2e tests:
// etcd, kube-apiserver (RBAC on), kube-controller-manager, kube-scheduler, and
// kwok playing the kubelets of a few fake nodes. Everything listens on free
// loopback ports and lives in one work directory; nothing needs root, Docker
// or network.
//
// Pods on the fake nodes follow the stages of package e2e/kwok: they get an
// IP, become Ready after a delay once every readiness gate is True, and are
// removed a little after their deletion.
//
// Every component runs in its own process group and dies with the test binary
// (Pdeathsig). Stop, a cancelled context, a failed Start and SIGINT/SIGTERM of
// the test binary all stop the components; Start also reaps what a killed
// earlier run may have left behind.
package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/stsroller/stsroller/e2e/kwok"
)

// Options configure a local cluster. The zero value is usable.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler and kwok. Default: $STSROLLER_BIN_DIR, else the output of
	// hack/tools.sh bindir in the module root.
	BinDir string
	// Nodes is the number of kwok nodes. Default 3.
	Nodes int
	// PodReadyDelay is the time from a pod running (with an IP) to its
	// containers being ready. Default 500ms; negative means none.
	PodReadyDelay time.Duration
	// PodDeleteDelay is the time from a pod's deletion to its removal.
	// Default 500ms; negative means none.
	PodDeleteDelay time.Duration
	// WorkDir holds certificates, kubeconfigs, etcd data, pid files and the
	// component logs (logs/<component>.log). Default: a new temporary
	// directory, removed by Stop unless KeepWorkDir.
	WorkDir string
	// KeepWorkDir keeps a temporary WorkDir after Stop, to read the logs.
	KeepWorkDir bool
	// Log receives progress messages. Default: discarded.
	Log io.Writer
	// StartTimeout bounds Start. Default 3 minutes.
	StartTimeout time.Duration
	// RealNode, if set, adds a real node (kubelet, containerd) for pods that
	// ask for it; see RealNodeOptions. Default: kwok nodes only.
	RealNode *RealNodeOptions
}

// Cluster is a running local cluster.
type Cluster struct {
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// Config is the same admin identity as a client config.
	Config *rest.Config
	// WorkDir is where everything of the cluster lives.
	WorkDir string
	// Nodes are the names of the kwok nodes.
	Nodes []string
	// AuditLog is the kube-apiserver's audit log: JSON lines of
	// audit.k8s.io/v1 Events for every pod delete, pods/eviction create and
	// pod patch (see auditPolicy).
	AuditLog string
	// ControllerKubeconfig is the kubeconfig of stsroller's own identity, a
	// client certificate for the user ControllerUser in no group. It has no
	// rights until bound to a role (e2e/framework binds deploy/'s
	// ClusterRole).
	ControllerKubeconfig string

	opts       Options
	removeWork bool
	procs      []*process // in start order
	pki        *pki
	ports      ports
	stopOnce   sync.Once
	stopped    chan struct{}
	node       *realNode // nil without Options.RealNode
}

// Component names, which are also the names of their logs and pid files.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	KubeScheduler         = "kube-scheduler"
	Kwok                  = "kwok"
)

var binaries = []string{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kwok}

// workDirEntries is everything Start writes into the work directory.
var workDirEntries = []string{
	"owner.pid", "pids", "logs", "etcd", "home", "pki", KubeControllerManager, KubeScheduler,
	"kubeconfig", "kube-controller-manager.kubeconfig", "kube-scheduler.kubeconfig", "kwok.kubeconfig",
	"kwok-stages.yaml", "node", "audit-policy.yaml", ControllerIdentity + ".kubeconfig",
}

// Address ranges of the cluster.
const (
	serviceCIDR = "10.96.0.0/16"
	clusterCIDR = "10.244.0.0/16"
)

var serviceIP = net.IPv4(10, 96, 0, 1) // first address of serviceCIDR: the kubernetes Service

type ports struct {
	etcdClient, etcdPeer, apiserver, controllerManager, scheduler int
}

// Start runs a cluster and returns once it serves: the apiserver is ready, every
// node is Ready with a pod CIDR, and the default ServiceAccount exists. On any
// error everything started so far is stopped again. Cancelling ctx later
// stops the cluster too.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if err := opts.complete(); err != nil {
		return nil, err
	}
	began := time.Now()
	c := &Cluster{opts: opts, stopped: make(chan struct{})}
	logf := c.logf

	if reaped := reapStale(os.TempDir()); len(reaped) > 0 {
		logf("reaped leftovers of an earlier run: %s", strings.Join(reaped, ", "))
	}
	if opts.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", workDirPrefix); err != nil {
			return nil, err
		}
		c.removeWork = !opts.KeepWorkDir
	} else {
		if c.WorkDir, err = filepath.Abs(opts.WorkDir); err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(c.WorkDir, "owner.pid")); err == nil && ownerAlive(c.WorkDir) {
			return nil, fmt.Errorf("work dir %s is in use by a running test binary (see its owner.pid)", c.WorkDir)
		}
		if reaped := reapDir(c.WorkDir, false); len(reaped) > 0 {
			logf("reaped leftovers of an earlier run: %s", strings.Join(reaped, ", "))
		}
		// A reused directory starts afresh: old etcd data would bring back
		// the old cluster's objects.
		for _, name := range workDirEntries {
			if err := os.RemoveAll(filepath.Join(c.WorkDir, name)); err != nil {
				return nil, err
			}
		}
	}
	register(c)
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.LogTails(15))
			c.Stop()
		}
	}()
	for _, d := range []string{"pids", "logs", "etcd", "home", "pki", KubeControllerManager, KubeScheduler} {
		if err := os.MkdirAll(filepath.Join(c.WorkDir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := writeOwner(c.WorkDir); err != nil {
		return nil, err
	}

	startCtx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := c.start(startCtx); err != nil {
		return nil, fmt.Errorf("starting local cluster in %s: %w", c.WorkDir, err)
	}
	logf("cluster up in %s (%d nodes, work dir %s)", time.Since(began).Round(time.Millisecond), len(c.Nodes), c.WorkDir)

	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-c.stopped:
		}
	}()
	go c.watchExits()
	return c, nil
}

func (o *Options) complete() error {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 0 {
		return fmt.Errorf("Nodes is %d", o.Nodes)
	}
	o.PodReadyDelay = delayOrDefault(o.PodReadyDelay)
	o.PodDeleteDelay = delayOrDefault(o.PodDeleteDelay)
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.BinDir == "" {
		o.BinDir = os.Getenv("STSROLLER_BIN_DIR")
	}
	if o.BinDir == "" {
		dir, err := toolsBinDir()
		if err != nil {
			return fmt.Errorf("no BinDir, no STSROLLER_BIN_DIR, and %w", err)
		}
		o.BinDir = dir
	}
	var missing []string
	for _, b := range binaries {
		if st, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil || st.IsDir() {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s missing in %s (run: make tools)", strings.Join(missing, ", "), o.BinDir)
	}
	return nil
}

func delayOrDefault(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return 500 * time.Millisecond
	case d < 0:
		return 0
	}
	return d
}

// toolsBinDir runs hack/tools.sh bindir in the root of this module.
func toolsBinDir() (string, error) {
	dir, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(dir, "hack", "tools.sh"), "bindir").Output()
	if err != nil {
		return "", fmt.Errorf("hack/tools.sh bindir: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// moduleRoot finds the root of this module by walking up from the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/stsroller/stsroller\n")) {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no module root of github.com/stsroller/stsroller above the working directory")
		}
		dir = parent
	}
	return dir, nil
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "cluster: "+format+"\n", args...)
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.WorkDir}, elem...)...)
}

func (c *Cluster) start(ctx context.Context) error {
	var err error
	step := time.Now()
	lap := func(what string) {
		c.logf("%s in %s", what, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}
	var nodeIPs []net.IP
	if c.opts.RealNode != nil {
		if c.node, err = reserveSlot(); err != nil {
			return err
		}
		nodeIPs = append(nodeIPs, c.node.hostIP)
	}
	if c.pki, err = newPKI(c.path("pki"), serviceIP, nodeIPs...); err != nil {
		return err
	}
	free, err := freePorts(5)
	if err != nil {
		return err
	}
	c.ports = ports{free[0], free[1], free[2], free[3], free[4]}
	lap("certificates and ports")

	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	lap("etcd ready")
	if err := c.startAPIServer(ctx); err != nil {
		return err
	}
	lap("kube-apiserver ready")
	if err := c.writeKubeconfigs(); err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	if err := c.createNodes(ctx, client); err != nil {
		return err
	}
	if err := c.startControllers(); err != nil {
		return err
	}
	if err := c.waitServing(ctx, client); err != nil {
		return err
	}
	lap("controllers, scheduler, kwok and nodes ready")
	if c.node != nil {
		return c.startRealNode(ctx, client)
	}
	return nil
}

func (c *Cluster) run(name string, args ...string) (*process, error) {
	if name == KubeAPIServer && c.node != nil {
		args = append(args, c.node.apiServerArgs(c)...) // later flags win
	}
	env := []string{"HOME=" + c.path("home"), "PATH=" + os.Getenv("PATH"), "TMPDIR=" + c.path("home")}
	p, err := startProcess(name, filepath.Join(c.opts.BinDir, name), args, env, c.path("logs", name+".log"), c.path("pids"))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	client := fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdClient)
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdPeer)
	p, err := c.run(Etcd,
		"--name=e2e",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer,
		"--initial-cluster-state=new",
		// Throwaway data: no fsync; this matters on slow disks.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	return waitHTTP(ctx, p, http.DefaultClient, client+"/health", func(body []byte) bool {
		return bytes.Contains(body, []byte(`"health":"true"`))
	})
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	audit, err := c.auditArgs()
	if err != nil {
		return err
	}
	p, err := c.run(KubeAPIServer, append([]string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.ports.apiserver),
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", c.ports.etcdClient),
		"--tls-cert-file=" + c.pki.serving,
		"--tls-private-key-file=" + c.pki.servingKey,
		"--client-ca-file=" + c.pki.caCert,
		"--requestheader-client-ca-file=" + c.pki.frontProxyCA,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + c.pki.frontProxyClient,
		"--proxy-client-key-file=" + c.pki.frontProxyKey,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.pki.saPub,
		"--service-account-signing-key-file=" + c.pki.saKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--allow-privileged=true",
		// The Endpoints of the kubernetes Service cannot hold a loopback
		// address; do not try to reconcile them.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--cert-dir=" + c.path("pki"),
	}, audit...)...)
	if err != nil {
		return err
	}
	client, err := c.adminHTTPClient()
	if err != nil {
		return err
	}
	return waitHTTP(ctx, p, client, c.apiserverURL()+"/readyz", nil)
}

func (c *Cluster) apiserverURL() string {
	return fmt.Sprintf("https://127.0.0.1:%d", c.ports.apiserver)
}

func (c *Cluster) adminHTTPClient() (*http.Client, error) {
	ca, err := os.ReadFile(c.pki.caCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	admin := c.pki.clients["admin"]
	cert, err := tls.LoadX509KeyPair(admin[0], admin[1])
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// writeKubeconfigs writes one kubeconfig per identity, with the certificates
// embedded, and sets Kubeconfig and Config to the admin one.
func (c *Cluster) writeKubeconfigs() error {
	ca, err := os.ReadFile(c.pki.caCert)
	if err != nil {
		return err
	}
	for name, files := range c.pki.clients {
		cert, err := os.ReadFile(files[0])
		if err != nil {
			return err
		}
		key, err := os.ReadFile(files[1])
		if err != nil {
			return err
		}
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["stsroller-e2e"] = &clientcmdapi.Cluster{Server: c.apiserverURL(), CertificateAuthorityData: ca}
		cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
		cfg.Contexts["stsroller-e2e"] = &clientcmdapi.Context{Cluster: "stsroller-e2e", AuthInfo: name}
		cfg.CurrentContext = "stsroller-e2e"
		if err := clientcmd.WriteToFile(*cfg, c.kubeconfigOf(name)); err != nil {
			return err
		}
	}
	c.Kubeconfig = c.kubeconfigOf("admin")
	c.ControllerKubeconfig = c.kubeconfigOf(ControllerIdentity)
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	return nil
}

func (c *Cluster) kubeconfigOf(name string) string {
	if name == "admin" {
		return c.path("kubeconfig")
	}
	return c.path(name + ".kubeconfig")
}

// createNodes registers the fake nodes, the way a kubelet would, for kwok to
// manage. Their pod CIDRs come from the controller manager's node IPAM.
func (c *Cluster) createNodes(ctx context.Context, client kubernetes.Interface) error {
	for i := range c.opts.Nodes {
		name := fmt.Sprintf("kwok-node-%d", i)
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("32"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("250"),
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwok.NodeAnnotation: kwok.NodeAnnotationValue},
				Labels: map[string]string{
					"type":                   "kwok",
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
				},
			},
			Status: corev1.NodeStatus{
				Capacity:    capacity,
				Allocatable: capacity,
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.31.%d.%d", i/250, i%250+1)},
					{Type: corev1.NodeHostName, Address: name},
				},
			},
		}
		if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", name, err)
		}
		c.Nodes = append(c.Nodes, name)
	}
	return nil
}

func (c *Cluster) startControllers() error {
	stages, err := kwok.Stages(kwok.StageOptions{ReadyDelay: c.opts.PodReadyDelay, DeleteDelay: c.opts.PodDeleteDelay})
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.path("kwok-stages.yaml"), stages, 0o644); err != nil {
		return err
	}
	if _, err := c.run(KubeControllerManager,
		"--kubeconfig="+c.kubeconfigOf(KubeControllerManager),
		"--authentication-kubeconfig="+c.kubeconfigOf(KubeControllerManager),
		"--authorization-kubeconfig="+c.kubeconfigOf(KubeControllerManager),
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.ports.controllerManager),
		"--cert-dir="+c.path(KubeControllerManager),
		"--controllers=*",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.pki.saKey,
		"--root-ca-file="+c.pki.caCert,
		"--cluster-signing-cert-file="+c.pki.caCert,
		"--cluster-signing-key-file="+c.pki.caKey,
		"--allocate-node-cidrs=true",
		"--cluster-cidr="+clusterCIDR,
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+serviceCIDR,
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	); err != nil {
		return err
	}
	if _, err := c.run(KubeScheduler,
		"--kubeconfig="+c.kubeconfigOf(KubeScheduler),
		"--authentication-kubeconfig="+c.kubeconfigOf(KubeScheduler),
		"--authorization-kubeconfig="+c.kubeconfigOf(KubeScheduler),
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.ports.scheduler),
		"--cert-dir="+c.path(KubeScheduler),
		"--leader-elect=false",
		"--profiling=false",
	); err != nil {
		return err
	}
	_, err = c.run(Kwok,
		"--kubeconfig="+c.kubeconfigOf(Kwok),
		"--config="+c.path("kwok-stages.yaml"),
		"--manage-nodes-with-annotation-selector="+kwok.NodeAnnotation+"="+kwok.NodeAnnotationValue,
		"--node-lease-duration-seconds=40",
		"--server-address=",
	)
	return err
}

// waitServing waits until the controller manager and scheduler are healthy,
// every node is Ready with a pod CIDR and without a not-ready taint, and the
// default ServiceAccount exists, so that pods can be created and scheduled.
func (c *Cluster) waitServing(ctx context.Context, client kubernetes.Interface) error {
	insecure := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	if err := waitHTTP(ctx, c.proc(KubeControllerManager), insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.ports.controllerManager), nil); err != nil {
		return err
	}
	if err := waitHTTP(ctx, c.proc(KubeScheduler), insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.ports.scheduler), nil); err != nil {
		return err
	}
	return c.poll(ctx, func() error {
		nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(nodes.Items) != c.opts.Nodes {
			return fmt.Errorf("%d nodes, want %d", len(nodes.Items), c.opts.Nodes)
		}
		for _, n := range nodes.Items {
			if !nodeReady(&n) {
				return fmt.Errorf("node %s is not Ready", n.Name)
			}
			if n.Spec.PodCIDR == "" {
				return fmt.Errorf("node %s has no pod CIDR", n.Name)
			}
			for _, t := range n.Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
					return fmt.Errorf("node %s has taint %s", n.Name, t.Key)
				}
			}
		}
		if _, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return errors.New("no ServiceAccount default/default yet")
			}
			return err
		}
		return nil
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *Cluster) proc(name string) *process {
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// poll calls check every 100ms until it returns nil, a component exits, or
// ctx ends; the error then says what check last found wrong.
func (c *Cluster) poll(ctx context.Context, check func() error) error {
	for {
		err := check()
		if err == nil {
			return nil
		}
		for _, p := range c.procs {
			if exited, exitErr := p.exited(); exited {
				return fmt.Errorf("%s exited (%v) while waiting: %v", p.name, exitErr, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w while waiting: %v", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitHTTP waits until url answers 200 (and ok accepts the body, if set),
// failing early if p exits.
func waitHTTP(ctx context.Context, p *process, client *http.Client, url string, ok func(body []byte) bool) error {
	var last error
	for {
		if exited, err := p.exited(); exited {
			return fmt.Errorf("%s exited (%v) before %s answered", p.name, err, url)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && (ok == nil || ok(body)) {
				return nil
			}
			err = fmt.Errorf("%s: %s: %s", url, resp.Status, lastLines(string(body), 5))
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", p.name, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct free loopback ports. They are free when
// returned; a component binds them a moment later.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// watchExits reports a component that exits while the cluster runs.
func (c *Cluster) watchExits() {
	for _, p := range c.procs {
		go func() {
			select {
			case <-p.done:
				select {
				case <-c.stopped:
				default:
					c.logf("%s exited unexpectedly (%v); see %s", p.name, p.err, c.path("logs", p.name+".log"))
				}
			case <-c.stopped:
			}
		}()
	}
}

// Stop stops every component, newest first, and removes a temporary work
// directory unless KeepWorkDir. It is safe to call more than once and from
// several goroutines; it returns once every component has been reaped.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		close(c.stopped)
		if c.node != nil {
			c.stopRealNode()
		}
		// kwok, the scheduler and the controller manager in parallel, then
		// the apiserver, then etcd.
		var clients, servers []*process
		for _, p := range c.procs {
			if p.name == KubeAPIServer || p.name == Etcd {
				servers = append(servers, p)
			} else {
				clients = append(clients, p)
			}
		}
		var wg sync.WaitGroup
		for _, p := range clients {
			wg.Go(func() { p.stop(3 * time.Second) })
		}
		wg.Wait()
		for i := len(servers) - 1; i >= 0; i-- {
			servers[i].stop(5 * time.Second)
		}
		unregister(c)
		if c.removeWork {
			_ = os.RemoveAll(c.WorkDir)
		} else if c.WorkDir != "" {
			_ = os.Remove(filepath.Join(c.WorkDir, "owner.pid"))
			c.logf("stopped; logs kept in %s", c.path("logs"))
		}
	})
}

// KeepWorkDir makes Stop keep the work directory, logs included; call it when
// a test failed.
func (c *Cluster) KeepWorkDir() { c.removeWork = false }

// LogTails returns the last n lines of every component's log, for a failure
// message.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for _, name := range append(binaries, nodeComponents...) {
		data, err := os.ReadFile(c.path("logs", name+".log"))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "--- last %d lines of %s:\n%s\n", n, c.path("logs", name+".log"), lastLines(string(data), n))
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Usage is what a component uses, read from /proc.
type Usage struct {
	Name   string
	PID    int
	RSSKiB int64
}

// Usage reports the resident memory of every running component.
func (c *Cluster) Usage() []Usage {
	var out []Usage
	for _, p := range c.procs {
		if exited, _ := p.exited(); exited {
			continue
		}
		rss, _ := rssKiB(p.cmd.Process.Pid)
		out = append(out, Usage{Name: p.name, PID: p.cmd.Process.Pid, RSSKiB: rss})
	}
	return out
}
