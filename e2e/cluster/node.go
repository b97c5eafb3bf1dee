package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// RealNodeOptions ask for one real node beside the kwok nodes: a kubelet and
// kube-proxy (built from the pinned Kubernetes source like the control plane),
// containerd and runc (Debian's packages), and the CNI bridge and host-local
// plugins (Debian's containernetworking-plugins), so that pods on it run as
// real containers.
//
// The node lives in a network and a mount namespace of its own that the
// cluster creates: its bridge, its pods, its iptables rules (kube-proxy's and
// the CNI's) and every mount of containerd and the kubelet are inside and
// vanish with them. The host side sees one veth pair (RealNodeHostIP on the
// host, the node's IP on the other end) and a route to the node's pod subnet
// through it; the node has no other way out, so nothing it runs reaches
// beyond this machine, and nothing is ever pulled: the pause image is built
// here, and Images are imported into containerd.
//
// The node is tainted with RealNodeTaint and labelled RealNodeLabel=true, so
// that only pods that ask land on it; kwok keeps all the others. A
// namespace annotated with RealNodeNamespaceAnnotations sends all its pods
// there (the PodNodeSelector and PodTolerationRestriction admission plugins,
// on when a real node is), without a change to the pods.
//
// It needs root, cgroup v1 or v2 hierarchies that root may write,
// containerd, containerd-shim-runc-v2, runc, ctr, nsenter, ip and iptables on
// PATH, and the CNI plugins in /usr/lib/cni.
type RealNodeOptions struct {
	// Images are OCI image tarballs (as hack/image writes them) to import into
	// the node's containerd before the kubelet starts.
	Images []string
}

// Names of the real node and its components (also their log names).
const (
	RealNodeName = "real-node"
	Kubelet      = "kubelet"
	KubeProxy    = "kube-proxy"
	Containerd   = "containerd"
	nodeHolder   = "node-namespaces"

	// RealNodeLabel is set to "true" on the real node.
	RealNodeLabel = "stsroller.io/e2e-real-node"
	// RealNodeTaint (effect NoSchedule) keeps other pods off the real node.
	RealNodeTaint = "stsroller.io/e2e-real-node"
	// PauseImage is the sandbox image of the real node, built by the cluster.
	PauseImage = "stsroller.invalid/pause:e2e"
)

var nodeComponents = []string{nodeHolder, Containerd, Kubelet, KubeProxy}

// RealNodeNamespaceAnnotations send every pod of a namespace to the real
// node: a node selector and a toleration of its taint, added by the
// admission plugins.
func RealNodeNamespaceAnnotations() map[string]string {
	return map[string]string{
		"scheduler.alpha.kubernetes.io/node-selector":      RealNodeLabel + "=true",
		"scheduler.alpha.kubernetes.io/defaultTolerations": `[{"key":"` + RealNodeTaint + `","operator":"Exists","effect":"NoSchedule"}]`,
	}
}

// Addresses of the real node, by slot (see reserveSlot): the veth pair is
// 10.201.<slot>.0/30, the pods' bridge subnet 10.202.<slot>.0/24. Slots keep
// the real nodes of clusters that run at once on one machine apart.
const maxSlots = 32

// realNode is the state of the real node of a cluster.
type realNode struct {
	slot     int
	lock     *os.File // holds the slot
	hostIP   net.IP   // the veth's host end: the API server as the node sees it
	nodeIP   net.IP   // the veth's node end: the node's InternalIP
	podCIDR  *net.IPNet
	bridgeIP net.IP
	veth     string
	dir      string
	cgroup   string // relative path of the node's cgroups in every hierarchy
	holder   *process
	fwd      net.Listener
	fwdWG    sync.WaitGroup
}

// reserveSlot picks the first free slot, holding an exclusive lock on its
// file in the temporary directory for as long as the cluster runs.
func reserveSlot() (*realNode, error) {
	for slot := range maxSlots {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), fmt.Sprintf("stsroller-e2e-node-slot-%d.lock", slot)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		n := &realNode{
			slot:     slot,
			lock:     f,
			hostIP:   net.IPv4(10, 201, byte(slot), 1).To4(),
			nodeIP:   net.IPv4(10, 201, byte(slot), 2).To4(),
			podCIDR:  &net.IPNet{IP: net.IPv4(10, 202, byte(slot), 0).To4(), Mask: net.CIDRMask(24, 32)},
			bridgeIP: net.IPv4(10, 202, byte(slot), 1).To4(),
			veth:     fmt.Sprintf("stsroller%d", slot),
		}
		// A leftover of a killed run that still holds the link would make
		// every step below fail obscurely.
		if _, err := net.InterfaceByName(n.veth); err == nil {
			f.Close()
			continue
		}
		return n, nil
	}
	return nil, fmt.Errorf("all %d real-node slots are in use (%s/stsroller-e2e-node-slot-*.lock)", maxSlots, os.TempDir())
}

func (n *realNode) release() {
	if n.lock != nil {
		n.lock.Close()
		n.lock = nil
	}
}

// apiServerArgs are the API server's flags for a cluster with a real node:
// it is reached at hostIP (through a forwarder to its loopback port), which
// is therefore the endpoint of the kubernetes Service.
func (n *realNode) apiServerArgs(c *Cluster) []string {
	admin := c.pki.clients["admin"]
	return []string{
		"--advertise-address=" + n.hostIP.String(),
		"--endpoint-reconciler-type=lease",
		"--enable-admission-plugins=PodNodeSelector,PodTolerationRestriction",
		// For logs and port-forward through the kubelet.
		"--kubelet-client-certificate=" + admin[0],
		"--kubelet-client-key=" + admin[1],
		"--kubelet-preferred-address-types=InternalIP",
	}
}

func (c *Cluster) nodePath(elem ...string) string {
	return c.path(append([]string{"node"}, elem...)...)
}

// startRealNode brings the real node up and waits until it is Ready.
func (c *Cluster) startRealNode(ctx context.Context, client kubernetes.Interface) error {
	n := c.node
	n.dir = c.nodePath()
	n.cgroup = filepath.Base(c.WorkDir)
	step := time.Now()
	lap := func(what string) {
		c.logf("real node: %s in %s", what, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}
	for _, d := range []string{"", "cni", "kubelet", "pod-logs", "containerd", "images"} {
		if err := os.MkdirAll(c.nodePath(d), 0o700); err != nil {
			return err
		}
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ip", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("real node: %w (install containerd, runc, iptables, iproute2 and util-linux; see .ci/run)", err)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		return fmt.Errorf("real node: no CNI bridge plugin: %w (install containernetworking-plugins)", err)
	}
	pause, err := buildPauseImage(c.nodePath("images"))
	if err != nil {
		return err
	}
	lap("pause image built")
	if err := makeCgroups(n.cgroup); err != nil {
		return err
	}
	if err := c.startNamespaces(); err != nil {
		return err
	}
	if err := c.startForwarder(); err != nil {
		return err
	}
	lap("namespaces, veth and API server forwarder")
	if err := c.writeNodeFiles(); err != nil {
		return err
	}
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	lap("containerd ready")
	for _, img := range append([]string{pause}, c.opts.RealNode.Images...) {
		if out, err := c.ctr("images", "import", img); err != nil {
			return fmt.Errorf("importing %s: %v: %s", img, err, out)
		}
	}
	lap("images imported")
	if err := c.startKubelet(); err != nil {
		return err
	}
	if err := c.poll(ctx, func() error {
		node, err := client.CoreV1().Nodes().Get(ctx, RealNodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !nodeReady(node) {
			return fmt.Errorf("node %s is not Ready", RealNodeName)
		}
		return nil
	}); err != nil {
		return err
	}
	c.Nodes = append(c.Nodes, RealNodeName)
	lap("kubelet and kube-proxy ready")
	return nil
}

// startNamespaces starts the process that holds the node's network and mount
// namespaces (the pause binary, which sleeps), gives the mount namespace its
// own /run and /var/lib, and connects the network namespace to the host by a
// veth pair.
func (c *Cluster) startNamespaces() error {
	n := c.node
	cmd := exec.Command(filepath.Join(c.nodePath("images"), "pause"), c.nodePath())
	// The mount namespace starts as a private copy (Go makes / rprivate).
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:      true,
		Pdeathsig:    syscall.SIGKILL,
		Unshareflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
	}
	p, err := c.spawn(nodeHolder, cmd)
	if err != nil {
		return err
	}
	n.holder = p
	if err := joinCgroup(n.cgroup, p.cmd.Process.Pid); err != nil {
		return err
	}
	pid := strconv.Itoa(p.cmd.Process.Pid)
	inNode := func(args ...string) []string {
		return append([]string{"nsenter", "--target=" + pid, "--net", "--mount", "--"}, args...)
	}
	cidr := func(ip net.IP, bits int) string { return fmt.Sprintf("%s/%d", ip, bits) }
	steps := [][]string{
		// Shim sockets, netns mounts and iptables' lock go to /run, the CNI's
		// state to /var/lib/cni: fresh, private ones.
		inNode("mount", "-t", "tmpfs", "-o", "mode=0755", "stsroller-node-run", "/run"),
		inNode("mount", "-t", "tmpfs", "-o", "mode=0755", "stsroller-node-var-lib", "/var/lib"),
		inNode("ip", "link", "set", "lo", "up"),
		inNode("sysctl", "-q", "-w", "net.ipv4.ip_forward=1"),
		{"ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0", "netns", "/proc/" + pid + "/ns/net"},
		{"ip", "addr", "add", cidr(n.hostIP, 30), "dev", n.veth},
		{"ip", "link", "set", n.veth, "up"},
		inNode("ip", "addr", "add", cidr(n.nodeIP, 30), "dev", "eth0"),
		inNode("ip", "link", "set", "eth0", "up"),
		// The API server's service proxy reaches the pods through the node.
		{"ip", "route", "add", n.podCIDR.String(), "via", n.nodeIP.String(), "dev", n.veth},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("real node: %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}

// startForwarder forwards hostIP:<API server port> to the API server's
// loopback address, so that the node and its pods reach it.
func (c *Cluster) startForwarder() error {
	n := c.node
	l, err := net.Listen("tcp", net.JoinHostPort(n.hostIP.String(), strconv.Itoa(c.ports.apiserver)))
	if err != nil {
		return fmt.Errorf("real node: API server forwarder: %w", err)
	}
	n.fwd = l
	target := fmt.Sprintf("127.0.0.1:%d", c.ports.apiserver)
	n.fwdWG.Go(func() {
		var conns sync.WaitGroup
		defer conns.Wait()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				go func() {
					<-c.stopped
					in.Close()
					out.Close()
				}()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); in.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			})
		}
	})
	return nil
}

func (c *Cluster) nodeAPIServerURL() string {
	return "https://" + net.JoinHostPort(c.node.hostIP.String(), strconv.Itoa(c.ports.apiserver))
}

// writeNodeFiles writes the configuration of containerd, the CNI, the
// kubelet and kube-proxy, and their kubeconfigs.
func (c *Cluster) writeNodeFiles() error {
	n := c.node
	for name, cn := range map[string][2]string{
		Kubelet:   {"system:node:" + RealNodeName, "system:nodes"},
		KubeProxy: {"system:kube-proxy", ""},
	} {
		cert, key, err := c.pki.issueClient(name, cn[0], cn[1])
		if err != nil {
			return err
		}
		if err := c.writeKubeconfig(c.nodePath(name+".kubeconfig"), c.nodeAPIServerURL(), name, cert, key); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd.toml":               containerdConfig(c.nodePath()),
		"cni/10-stsroller-e2e.conflist": cniConfig(n),
		"kubelet.yaml":                  kubeletConfig(c.nodePath(), n, c.pki.caCert),
		"kube-proxy.yaml":               kubeProxyConfig(c.nodePath(), n),
		"resolv.conf":                   "# the real node's pods have no DNS server\n",
	}
	for name, content := range files {
		if err := os.WriteFile(c.nodePath(name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func containerdConfig(dir string) string {
	return `version = 2
root = "` + dir + `/containerd/root"
state = "` + dir + `/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "` + dir + `/containerd.sock"
[ttrpc]
  address = "` + dir + `/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "` + dir + `/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + PauseImage + `"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  # The kubelet asks for oom_score_adj -998 for sandboxes, below what this
  # machine lets even root set ("nsexec: failed to update
  # /proc/self/oom_score_adj: Permission denied"): keep it at containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "` + dir + `/runc"
        BinaryName = "` + runcBinary() + `"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "` + dir + `/cni"
`
}

func cniConfig(n *realNode) string {
	return `{
  "cniVersion": "1.0.0",
  "name": "stsroller-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "` + n.podCIDR.String() + `", "gateway": "` + n.bridgeIP.String() + `"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`
}

func kubeletConfig(dir string, n *realNode, caCert string) string {
	return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ` + n.nodeIP.String() + `
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: ` + caCert + `
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://` + dir + `/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /` + n.cgroup + `
cgroupsPerQOS: true
enforceNodeAllocatable: ["none"]
failCgroupV1: false
failSwapOn: false
resolvConf: ` + dir + `/resolv.conf
podLogsDir: ` + dir + `/pod-logs
registerWithTaints:
- key: ` + RealNodeTaint + `
  effect: NoSchedule
serializeImagePulls: false
# Imported images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
`
}

func kubeProxyConfig(dir string, n *realNode) string {
	return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ` + dir + `/kube-proxy.kubeconfig
hostnameOverride: ` + RealNodeName + `
mode: iptables
clusterCIDR: ` + n.podCIDR.String() + `
bindAddress: ` + n.nodeIP.String() + `
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the machine's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
}

// runInNode runs a binary of BinDir, or of PATH, in the node's namespaces.
func (c *Cluster) runInNode(name, bin string, args ...string) (*process, error) {
	nsArgs := []string{"--target=" + strconv.Itoa(c.node.holder.cmd.Process.Pid), "--net", "--mount", "--", bin}
	cmd := exec.Command("nsenter", append(nsArgs, args...)...)
	cmd.Env = []string{"HOME=" + c.path("home"), "PATH=" + os.Getenv("PATH"), "TMPDIR=" + c.path("home")}
	p, err := c.spawn(name, cmd)
	if err != nil {
		return nil, err
	}
	return p, joinCgroup(c.node.cgroup, p.cmd.Process.Pid)
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	p, err := c.runInNode(Containerd, "containerd", "--config="+c.nodePath("containerd.toml"))
	if err != nil {
		return err
	}
	return c.poll(ctx, func() error {
		if exited, err := p.exited(); exited {
			return fmt.Errorf("containerd exited: %v", err)
		}
		out, err := c.ctr("version")
		if err != nil {
			return fmt.Errorf("ctr version: %v: %s", err, out)
		}
		return nil
	})
}

// ctr runs ctr against the node's containerd, in the namespace of the CRI.
func (c *Cluster) ctr(args ...string) ([]byte, error) {
	cmd := exec.Command("ctr", append([]string{"--address=" + c.nodePath("containerd.sock"), "--namespace=k8s.io"}, args...)...)
	return cmd.CombinedOutput()
}

func (c *Cluster) startKubelet() error {
	if _, err := c.runInNode(Kubelet, filepath.Join(c.opts.BinDir, Kubelet),
		"--config="+c.nodePath("kubelet.yaml"),
		"--kubeconfig="+c.nodePath("kubelet.kubeconfig"),
		"--root-dir="+c.nodePath("kubelet"),
		"--cert-dir="+c.nodePath("kubelet", "pki"),
		"--hostname-override="+RealNodeName,
		"--node-ip="+c.node.nodeIP.String(),
		"--node-labels="+RealNodeLabel+"=true",
		"-v=2",
	); err != nil {
		return err
	}
	_, err := c.runInNode(KubeProxy, filepath.Join(c.opts.BinDir, KubeProxy),
		"--config="+c.nodePath("kube-proxy.yaml"),
		"-v=2",
	)
	return err
}

// spawn starts cmd as a component of the cluster, like run, with its log and
// pid file.
func (c *Cluster) spawn(name string, cmd *exec.Cmd) (*process, error) {
	p, err := startCmd(name, cmd, c.path("logs", name+".log"), c.path("pids"))
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// stopRealNode stops the kubelet and kube-proxy, kills everything left in the
// node's cgroups (containerd, its shims, the containers) and the namespace
// holder, which takes the namespaces, the veth pair, the bridge, the iptables
// rules and every mount of the node with it, and removes the cgroups.
func (c *Cluster) stopRealNode() {
	n := c.node
	var wg sync.WaitGroup
	for _, name := range []string{Kubelet, KubeProxy} {
		if p := c.proc(name); p != nil {
			wg.Go(func() { p.stop(3 * time.Second) })
		}
	}
	wg.Wait()
	if n.cgroup != "" {
		if err := killCgroups(n.cgroup); err != nil {
			c.logf("real node: %v", err)
		}
	}
	for _, name := range []string{Containerd, nodeHolder} {
		if p := c.proc(name); p != nil {
			p.stop(0)
		}
	}
	if n.cgroup != "" {
		if err := removeCgroups(n.cgroup); err != nil {
			c.logf("real node: %v", err)
		}
	}
	// Gone with the namespace; this only covers a holder that could not be
	// killed.
	_ = exec.Command("ip", "link", "del", n.veth).Run()
	if n.fwd != nil {
		n.fwd.Close()
		n.fwdWG.Wait()
	}
	n.release()
}

// buildPauseImage builds hack/image/pause and its image into dir.
func buildPauseImage(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "hack", "image")
	bin := filepath.Join(dir, "pause")
	tar := filepath.Join(dir, "pause.tar")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./pause")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the pause binary: %v: %s", err, out)
	}
	img := exec.Command("go", "run", ".", "-binary", bin, "-entrypoint", "/pause", "-user", "65535:65535", "-name", PauseImage, "-o", tar)
	img.Dir = src
	if out, err := img.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the pause image: %v: %s", err, out)
	}
	return tar, nil
}

// writeKubeconfig writes a kubeconfig for server with a client certificate.
func (c *Cluster) writeKubeconfig(path, server, user, certFile, keyFile string) error {
	ca, err := os.ReadFile(c.pki.caCert)
	if err != nil {
		return err
	}
	cert, err := os.ReadFile(certFile)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["stsroller-e2e"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["stsroller-e2e"] = &clientcmdapi.Context{Cluster: "stsroller-e2e", AuthInfo: user}
	cfg.CurrentContext = "stsroller-e2e"
	return clientcmd.WriteToFile(*cfg, path)
}

// RealNode reports whether the cluster has a real node.
func (c *Cluster) RealNode() bool { return c.node != nil }

// RealNodeHostIP is the host's address on the real node's veth, which the
// node and its pods reach (the API server's forwarder listens there); a
// server of the tests that the node's pods must reach, BIND say, listens on
// it too. Empty without a real node.
func (c *Cluster) RealNodeHostIP() string {
	if c.node == nil {
		return ""
	}
	return c.node.hostIP.String()
}

// Import imports OCI image tarballs into the real node's containerd.
func (c *Cluster) Import(tarballs ...string) error {
	if c.node == nil {
		return errors.New("the cluster has no real node")
	}
	for _, t := range tarballs {
		if out, err := c.ctr("images", "import", t); err != nil {
			return fmt.Errorf("importing %s: %v: %s", t, err, out)
		}
	}
	return nil
}

// ContainerPID returns the host PID of a container's first process on the
// real node; containerID is a pod status's containerID
// (containerd://<id>).
func (c *Cluster) ContainerPID(containerID string) (int, error) {
	if c.node == nil {
		return 0, errors.New("the cluster has no real node")
	}
	id, ok := strings.CutPrefix(containerID, "containerd://")
	if !ok || id == "" || strings.ContainsAny(id, "/.") {
		return 0, fmt.Errorf("container ID %q is not containerd://<id>", containerID)
	}
	data, err := os.ReadFile(c.nodePath("containerd", "state", "io.containerd.runtime.v2.task", "k8s.io", id, "init.pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// runcBinary is the runc the node runs: $STSROLLER_E2E_RUNC (a wrapper that
// logs, say), else runc on PATH.
func runcBinary() string {
	if b := os.Getenv("STSROLLER_E2E_RUNC"); b != "" {
		return b
	}
	if b, err := exec.LookPath("runc"); err == nil {
		return b
	}
	return "runc"
}
