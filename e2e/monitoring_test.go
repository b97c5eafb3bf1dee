//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/deploy"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/proc"
	"github.com/stsroller/stsroller/policy"
)

// TestPrometheusScrapesARollout: Debian's Prometheus, on loopback with its
// own config and TSDB, scrapes stsroller through a good rollout and a broken
// revision, with deploy/monitoring's alerts loaded (their "for:" shortened).
// Every dashboard query and every alert expression must evaluate through the
// HTTP API without error, the main panels must return data, and
// StsrollerRolloutStalled must fire; StsrollerNoLeader must not while the
// controller leads, and must once it is gone.
func TestPrometheusScrapesARollout(t *testing.T) {
	t.Parallel()
	prometheus, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("no prometheus on $PATH (apt-get install prometheus; .ci/run does)")
	}
	deployed := framework.Deployed()
	if deployed && framework.ContainerPID == nil {
		// On kind the pods' addresses are inside Docker's network.
		t.Skip("the deployed controller's pods are reachable from this host only on the local cluster's real node")
	}
	r := newRollout(t, rolloutOptions{replicas: 4, noControllerYet: true, annotations: map[string]string{
		policy.AnnotationMaxUnavailable: "2", policy.AnnotationProgressDeadlineSeconds: "5"}})
	var scrape string
	if deployed {
		// As deploy/overlays/servicemonitor asks of a Prometheus Operator:
		// the endpoints of the metrics Service, one target per controller
		// pod.
		scrape = serviceScrape(t, r.client)
		r.controller = framework.StartController(t, r.client, framework.ControllerOptions{Namespace: r.ns})
	} else {
		metricsPort := freePort(t)
		r.controller = framework.StartController(t, r.client, framework.ControllerOptions{Binary: binary(t), Namespace: r.ns,
			Args: []string{"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort)}})
		scrape = staticScrape("127.0.0.1:" + strconv.Itoa(metricsPort))
	}

	prom := startPrometheus(t, prometheus, scrape)
	prom.wait(t, "the target up", `up{job="stsroller"} == 1`, true)

	// A rollout that completes: pods deleted, a rollout duration, syncs.
	good := r.newRevision("2")
	r.waitRolledOut(good, 4)
	// A revision whose pods never turn healthy: Stalled.
	r.watch.SetBroken(func(p *corev1.Pod) bool { return p.Labels[appsv1.ControllerRevisionHashLabelKey] != good })
	r.newRevision("broken")
	r.waitEvent(policy.ReasonProgressDeadlineExceeded, corev1.EventTypeWarning)
	prom.wait(t, "StsrollerRolloutStalled firing", `ALERTS{alertname="StsrollerRolloutStalled", alertstate="firing"}`, true)
	// The gauges of the stall, and the deletions' counters, scraped.
	prom.wait(t, "the stall scraped", `stsroller_rollouts_blocked{reason="ProgressDeadlineExceeded"} >= 1`, true)

	// Every dashboard query evaluates; the main panels return data.
	mustHaveData := []string{"Rollouts in progress", "Blocked by reason", "Pods deleted by reason", "Rollout duration",
		"Sync latency", "Workqueue depth", "Leader", "API requests by verb and resource"}
	qs, err := deploy.DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		// The window covers the whole test.
		expr := deploy.DashboardExpr(q.Expr, "10m")
		res, err := prom.query(expr)
		if err != nil {
			t.Errorf("panel %q %s: %v\n  %s", q.Panel, q.RefID, err, expr)
			continue
		}
		t.Logf("panel %q %s: %s", q.Panel, q.RefID, res)
		if q.RefID == "A" && slices.Contains(mustHaveData, q.Panel) && !res.finite() {
			t.Errorf("panel %q returns no data after a rollout and a stall: %s => %s", q.Panel, expr, res)
		}
	}

	// Every alert expression evaluates; the ones that must (not) hold now.
	groups, err := deploy.RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"StsrollerRolloutStalled": true, "StsrollerNoLeader": false,
		"StsrollerRolloutBlocked": false, "StsrollerDNSUnreachable": false}
	if deployed {
		// The deployed controller watches every namespace, where the
		// tests running beside this one block rollouts on purpose.
		delete(want, "StsrollerRolloutBlocked")
		delete(want, "StsrollerDNSUnreachable")
	}
	for _, g := range groups {
		for _, rule := range g.Rules {
			res, err := prom.query(rule.Expr)
			if err != nil {
				t.Errorf("alert %s: %v\n  %s", rule.Alert, err, rule.Expr)
				continue
			}
			t.Logf("alert %s: %s", rule.Alert, res)
			if w, ok := want[rule.Alert]; ok && (len(res) > 0) != w {
				t.Errorf("alert %s: expression holds = %v, want %v: %s", rule.Alert, len(res) > 0, w, res)
			}
		}
	}
	// Prometheus reports rule evaluation failures on the rules API too.
	prom.checkRuleHealth(t)

	if deployed {
		// Both replicas are scraped, and exactly one of them leads.
		prom.wait(t, "both replicas scraped", `count(up{job="stsroller"} == 1) == 2`, true)
		prom.wait(t, "one leader", `sum(stsroller_leader) == 1`, true)
		return
	}
	// No controller, no leader: the scrape fails, the series go stale.
	r.controller.Stop()
	prom.wait(t, "StsrollerNoLeader's expression", strings.TrimSpace(exprOf(t, groups, "StsrollerNoLeader")), true)
}

func exprOf(t *testing.T, groups []deploy.RuleGroup, alert string) string {
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == alert {
				return r.Expr
			}
		}
	}
	t.Fatalf("no alert %s", alert)
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type promServer struct {
	base string
	log  *os.File
	proc *proc.Process
}

// staticScrape is the scrape config of the job "stsroller" for one target.
func staticScrape(target string) string {
	return fmt.Sprintf(`- job_name: stsroller
  metrics_path: /metrics
  static_configs:
  - targets: [%q]
`, target)
}

// serviceScrape is the scrape config of the job "stsroller" for the targets
// a Prometheus Operator derives from deploy/'s ServiceMonitor: one per ready
// endpoint of the metrics Service's port "metrics". Debian's Prometheus is
// built without Kubernetes discovery, so the test does the discovery itself:
// it writes the endpoints of the Service's EndpointSlices to a file_sd file,
// every second until t ends.
func serviceScrape(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "targets.json")
	write := func() error {
		eps, err := client.DiscoveryV1().EndpointSlices(deploy.Namespace).List(t.Context(),
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=stsroller-metrics"})
		if err != nil {
			return err
		}
		type group struct {
			Targets []string          `json:"targets"`
			Labels  map[string]string `json:"labels"`
		}
		groups := []group{}
		for _, sl := range eps.Items {
			var port int32
			for _, p := range sl.Ports {
				if p.Name != nil && *p.Name == "metrics" && p.Port != nil {
					port = *p.Port
				}
			}
			for _, ep := range sl.Endpoints {
				if port == 0 || len(ep.Addresses) == 0 || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
					continue
				}
				g := group{Targets: []string{net.JoinHostPort(ep.Addresses[0], strconv.Itoa(int(port)))}, Labels: map[string]string{}}
				if ep.TargetRef != nil {
					g.Labels["pod"] = ep.TargetRef.Name
				}
				groups = append(groups, g)
			}
		}
		b, err := json.Marshal(groups)
		if err != nil {
			return err
		}
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, file)
	}
	if err := write(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
				_ = write()
			}
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	return fmt.Sprintf(`- job_name: stsroller
  metrics_path: /metrics
  file_sd_configs:
  - files: [%q]
    refresh_interval: 1s
`, file)
}

// startPrometheus runs Prometheus on a free loopback port with its own
// config and TSDB under t's temporary directory: scrapes every second
// (scrape: the scrape_configs entries), the shipped alerts with "for: 5s",
// evaluated every second.
func startPrometheus(t *testing.T, bin, scrape string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := deploy.RuleFile("5s")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
%s`, filepath.Join(dir, "rules.yaml"), scrape)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--storage.tsdb.retention.time=1h",
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proc.Spawn("prometheus", cmd)
	if err != nil {
		t.Fatal(err)
	}
	s := &promServer{base: "http://" + addr, log: logf, proc: p}
	t.Cleanup(func() {
		_ = p.Stop(10 * time.Second)
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log (tail):\n%s", proc.Tail(string(b), 40))
		}
	})
	err = framework.Eventually(t.Context(), time.Minute, 200*time.Millisecond, func(context.Context) error {
		if ok, err := p.Exited(); ok {
			return fmt.Errorf("prometheus exited: %v", err)
		}
		resp, err := http.Get(s.base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("prometheus not ready: %v\n%s", err, proc.Tail(string(b), 40))
	}
	return s
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

type samples []sample

// finite reports whether there is data, and every value is a number
// (histogram_quantile of no observations is NaN).
func (s samples) finite() bool {
	for _, e := range s {
		str, _ := e.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return len(s) > 0
}

func (s samples) String() string {
	var b strings.Builder
	if len(s) == 0 {
		return "(no data)"
	}
	for i, e := range s {
		if i > 0 {
			b.WriteString("; ")
		}
		var ls []string
		for k, v := range e.Metric {
			ls = append(ls, k+"="+strconv.Quote(v))
		}
		slices.Sort(ls)
		fmt.Fprintf(&b, "{%s} %v", strings.Join(ls, ","), e.Value[1])
	}
	return b.String()
}

// query evaluates expr now through /api/v1/query. An error of the API (a
// bad expression, a failed evaluation) is an error; a scalar comes back as
// one sample.
func (s *promServer) query(expr string) (samples, error) {
	resp, err := http.PostForm(s.base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Warnings  []string        `json:"warnings"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("%s: %w", resp.Status, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s: %s", resp.Status, body.ErrorType, body.Error)
	}
	if len(body.Warnings) > 0 {
		return nil, fmt.Errorf("warnings: %v", body.Warnings)
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body.Data, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var out samples
		err := json.Unmarshal(data.Result, &out)
		return out, err
	case "scalar":
		var v [2]any
		err := json.Unmarshal(data.Result, &v)
		return samples{{Value: v}}, err
	}
	return nil, fmt.Errorf("result type %s, want an instant vector", data.ResultType)
}

// wait polls expr until it returns data (or, with !data, none).
func (s *promServer) wait(t *testing.T, what, expr string, data bool) {
	t.Helper()
	var last samples
	err := framework.Eventually(t.Context(), 2*time.Minute, 500*time.Millisecond, func(context.Context) error {
		res, err := s.query(expr)
		if err != nil {
			return err
		}
		last = res
		if (len(res) > 0) != data {
			return fmt.Errorf("%s: %s", expr, res)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	t.Logf("%s: %s => %s", what, expr, last)
}

// checkRuleHealth fails t for a rule Prometheus could not evaluate.
func (s *promServer) checkRuleHealth(t *testing.T) {
	t.Helper()
	resp, err := http.Get(s.base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
					State     string `json:"state"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range body.Data.Groups {
		for _, r := range g.Rules {
			n++
			t.Logf("rule %s: health %s, state %s", r.Name, r.Health, r.State)
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n == 0 {
		t.Errorf("Prometheus loaded no rules")
	}
}
