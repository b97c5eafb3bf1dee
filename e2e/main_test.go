//go:build e2e

// Package e2e drives stsroller's behaviour on a real cluster.
//
// With KUBECONFIG set, the tests use that cluster (kind or any other).
// Without it, TestMain starts a local one with e2e/cluster (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok nodes), points
// KUBECONFIG at it for the tests, and stops it at the end.
//
//	STSROLLER_BIN_DIR=$(hack/tools.sh bindir) go test -tags e2e ./e2e/
//
// STSROLLER_E2E_KEEP=1 keeps the local cluster's work directory (certificates,
// kubeconfig, component logs) after the run; it is kept anyway when a test
// fails.
package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/e2e/bind"
	"github.com/stsroller/stsroller/e2e/cluster"
	"github.com/stsroller/stsroller/e2e/framework"
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// atExit holds what cleans up after the whole run (built binaries).
var (
	atExitMu sync.Mutex
	atExit   []func()
)

// onExit registers f to run after every test; parallel tests may call it.
func onExit(f func()) {
	atExitMu.Lock()
	defer atExitMu.Unlock()
	atExit = append(atExit, f)
}

func run(m *testing.M) int {
	defer func() {
		atExitMu.Lock()
		defer atExitMu.Unlock()
		for _, f := range atExit {
			f()
		}
	}()
	if kc := os.Getenv("KUBECONFIG"); kc != "" {
		fmt.Fprintf(os.Stderr, "e2e: using the cluster of KUBECONFIG=%s\n", kc)
		if err := deployController(kc, nil); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		return m.Run()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	opts := cluster.Options{
		Log:         os.Stderr,
		KeepWorkDir: os.Getenv("STSROLLER_E2E_KEEP") != "",
	}
	if framework.Deployed() {
		// stsroller runs as pods of deploy/ on a real node.
		opts.RealNode = &cluster.RealNodeOptions{}
		if tar := os.Getenv(framework.EnvImageTar); tar != "" {
			opts.RealNode.Images = []string{tar}
		}
		opts.StartTimeout = 6 * time.Minute
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	// A test that panics ends the binary without running this; the components
	// then die by Pdeathsig and the next Start reaps the work directory.
	defer c.Stop()
	fmt.Fprintf(os.Stderr, "e2e: local cluster up in %s, KUBECONFIG=%s\n", time.Since(start).Round(time.Millisecond), c.Kubeconfig)
	if err := os.Setenv("KUBECONFIG", c.Kubeconfig); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.Unsetenv("KUBECONFIG")
	// The audit log the invariants checker attributes removals from, and
	// stsroller's own identity.
	for k, v := range map[string]string{framework.EnvAuditLog: c.AuditLog,
		framework.EnvControllerKubeconfig: c.ControllerKubeconfig, framework.EnvControllerUser: cluster.ControllerUser} {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		defer os.Unsetenv(k)
	}
	if c.RealNode() {
		framework.ContainerPID = c.ContainerPID
		// The DNS tests' shared BIND pair, on the host address the real
		// node's pods reach, for the whole run: the deployed controller is
		// installed with it as its --dns-servers.
		servers, err := bind.Start(ctx, bind.Options{Zone: dnsZone, Host: c.RealNodeHostIP()})
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: starting BIND on %s for the deployed controller: %v\n", c.RealNodeHostIP(), err)
			return 1
		}
		defer servers.Stop()
		holdSharedDNSServers(servers)
		if err := deployController(c.Kubeconfig, cluster.RealNodeNamespaceAnnotations(), dnsControllerArgs(servers.Addrs())...); err != nil {
			c.KeepWorkDir()
			fmt.Fprintf(os.Stderr, "e2e: %v\n%s", err, c.LogTails(20))
			return 1
		}
	}

	code := m.Run()
	if code != 0 {
		c.KeepWorkDir()
		fmt.Fprintf(os.Stderr, "e2e: tests failed; component logs of the local cluster:\n%s", c.LogTails(20))
	}
	return code
}

// deployController installs stsroller from deploy/ with the image of
// $STSROLLER_E2E_IMAGE, in the deployed mode when that is set.
func deployController(kubeconfig string, nsAnnotations map[string]string, args ...string) error {
	image := os.Getenv(framework.EnvImage)
	if !framework.Deployed() || image == "" {
		return nil
	}
	cfg, err := framework.Config()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	start := time.Now()
	err = framework.DeployController(context.Background(), client, framework.DeployOptions{
		Kubeconfig: kubeconfig, Image: image, NamespaceAnnotations: nsAnnotations, Args: args})
	if err != nil {
		return fmt.Errorf("deploying stsroller (%s): %w", image, err)
	}
	fmt.Fprintf(os.Stderr, "e2e: stsroller deployed from deploy/ with image %s, Available in %s\n", image, time.Since(start).Round(time.Millisecond))
	return nil
}
