//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/proc"
)

// benchController is one stsroller process of the benchmark, talking to the
// API server directly with the admin's kubeconfig, with /metrics and /readyz
// on loopback. Its API requests are read from its own
// stsroller_api_requests_total, nothing stands between it and the cluster.
type benchController struct {
	t           testing.TB
	proc        *proc.Process
	metricsAddr string
	log         *lockedFile
	// synced is a scrape of /metrics as soon as it was ready (its informers
	// synced): the requests of its start, and where LISTs become one too many.
	synced promText
}

type lockedFile struct {
	mu sync.Mutex
	f  *os.File
}

func (l *lockedFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// startBenchController starts stsroller scoped to namespace ("" for all) and
// waits until it is ready (its informers have synced), then scrapes its
// /metrics: from here on, a LIST is one too many.
func startBenchController(t testing.TB, namespace string, extra ...string) *benchController {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		t.Fatal("KUBECONFIG is not set: the bench needs the local cluster of TestMain or a kubeconfig")
	}
	dir := t.TempDir()
	maddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	haddr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--kubeconfig=" + kc,
		"--metrics-bind-address=" + maddr,
		"--health-probe-bind-address=" + haddr,
		"--leader-elect=false",
		"-v=2",
	}
	if namespace != "" {
		args = append(args, "--namespace="+namespace)
	}
	args = append(args, extra...)
	// STSROLLER_BENCH_ARGS: more flags, to compare settings in one run
	// (for example --kube-api-qps).
	args = append(args, strings.Fields(os.Getenv("STSROLLER_BENCH_ARGS"))...)
	logPath := filepath.Join(dir, "stsroller.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lf := &lockedFile{f: f}
	cmd := exec.Command(binary(t), args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := proc.Spawn("stsroller", cmd)
	if err != nil {
		t.Fatal(err)
	}
	c := &benchController{t: t, proc: p, metricsAddr: maddr, log: lf}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		<-p.Done()
		if t.Failed() {
			t.Logf("stsroller log (tail):\n%s", proc.LogTail(logPath, 40))
		}
		f.Close()
	})
	err = framework.Eventually(t.Context(), 2*time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
		if exited, err := p.Exited(); exited {
			return fmt.Errorf("stsroller exited: %v\n%s", err, proc.LogTail(logPath, 20))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+haddr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.synced = c.metrics(t.Context())
	return c
}

func (c *benchController) pid() int { return c.proc.Pid() }

func (c *benchController) cpu() float64 {
	v, err := procCPU(c.pid())
	if err != nil {
		c.t.Logf("reading CPU of stsroller: %v", err)
	}
	return v
}

func (c *benchController) rss() float64 {
	v, err := procRSS(c.pid())
	if err != nil {
		c.t.Logf("reading RSS of stsroller: %v", err)
	}
	return v
}

func (c *benchController) metrics(ctx context.Context) promText {
	m, err := scrape(ctx, c.metricsAddr)
	if err != nil {
		c.t.Logf("scraping stsroller: %v", err)
		return promText{}
	}
	return m
}

// listsAfterSync returns the LISTs ("list resource" → count) from the
// informers' sync to the scrape now: each is a relist, one too many.
func (c *benchController) listsAfterSync(now promText) map[string]int {
	all, _ := stsrollerRequests(c.synced, now)
	out := map[string]int{}
	for k, v := range all {
		if strings.HasPrefix(k, "list ") {
			out[k] = v
		}
	}
	return out
}

// syncs returns the sync count and p50/p99 (seconds) of syncs between two
// scrapes.
func syncStats(before, after promText) (n, p50, p99 float64) {
	const name = "stsroller_sync_duration_seconds"
	b, c := histDelta(name, before, after)
	if len(c) > 0 {
		n = c[len(c)-1]
	}
	return n, quantile(0.5, b, c), quantile(0.99, b, c)
}
