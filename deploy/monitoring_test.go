package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	"github.com/stsroller/stsroller/metrics"
)

// exported lists the series names stsroller's /metrics can carry
// (histograms as _bucket, _sum, _count), and the families of the Metrics
// struct, which the dashboard and alerts must all use.
func exported(t *testing.T) (series map[string]bool, families []string) {
	t.Helper()
	m := metrics.New()
	m.RegisterWorkqueueProvider()
	// A named queue registers the workqueue metrics (client-go takes one
	// provider per process; nothing else in this test binary sets one).
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "statefulset"})
	q.ShutDown()

	series = map[string]bool{}
	add := func(name string, histogram bool) {
		series[name] = true
		if histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				series[name+s] = true
			}
		}
	}
	// The Metrics fields: Describe names every family, vectors included.
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Type().Field(i).Name == "Registry" {
			continue
		}
		ch := make(chan *prometheus.Desc, 4)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			mm := fqName.FindStringSubmatch(d.String())
			if mm == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			_, histogram := c.(prometheus.Histogram)
			if _, vec := c.(*prometheus.HistogramVec); vec {
				histogram = true
			}
			add(mm[1], histogram)
			families = append(families, mm[1])
		}
	}
	// Everything else (workqueue, Go, process) as gathered.
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		add(mf.GetName(), mf.GetType().String() == "HISTOGRAM" || mf.GetType().String() == "SUMMARY")
	}
	sort.Strings(families)
	return series, families
}

// names are the metric names a PromQL expression uses.
var names = regexp.MustCompile(`\b(stsroller_[a-zA-Z0-9_]+|go_[a-zA-Z0-9_]+|process_[a-zA-Z0-9_]+)\b`)

func allExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	qs, err := DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		out["panel "+q.Panel+" "+q.RefID] = q.Expr
	}
	groups, err := RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	return out
}

func TestMonitoringUsesOnlyMetricsThatExist(t *testing.T) {
	series, families := exported(t)
	used := map[string]bool{}
	for what, expr := range allExprs(t) {
		found := names.FindAllString(expr, -1)
		if len(found) == 0 {
			t.Errorf("%s uses no stsroller metric: %s", what, expr)
		}
		for _, n := range found {
			if !series[n] {
				t.Errorf("%s uses %s, which stsroller does not export", what, n)
			}
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
		}
	}
	for _, f := range families {
		if !used[f] {
			t.Errorf("metrics.go's %s is on no panel and in no alert", f)
		}
	}
}

func TestDashboardHasThePanels(t *testing.T) {
	qs, err := DashboardQueries()
	if err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, q := range qs {
		if !slices.Contains(titles, q.Panel) {
			titles = append(titles, q.Panel)
		}
		if strings.Contains(DashboardExpr(q.Expr, "5m"), "$") {
			t.Errorf("panel %s %s: a Grafana variable the tests cannot evaluate: %s", q.Panel, q.RefID, q.Expr)
		}
	}
	for _, want := range []string{"Rollouts in progress", "Blocked by reason", "Pods deleted by reason", "Rollout duration",
		"DNS propagation latency", "Sync latency", "Workqueue depth"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q; panels: %v", want, titles)
		}
	}
}

func TestAlerts(t *testing.T) {
	groups, err := RuleGroups()
	if err != nil {
		t.Fatal(err)
	}
	var alerts []string
	for _, g := range groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.Alert == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %+v: want an alert with a severity, a summary and a description", r)
			}
			if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
				t.Errorf("alert %s: for %q, want a duration (a blip must not page)", r.Alert, r.For)
			}
		}
	}
	want := []string{"StsrollerDNSUnreachable", "StsrollerNoLeader", "StsrollerRolloutBlocked", "StsrollerRolloutStalled"}
	slices.Sort(alerts)
	if diff := cmp.Diff(want, alerts); diff != "" {
		t.Errorf("alerts (-want +got):\n%s", diff)
	}
	// RuleFile shortens every wait and changes nothing else.
	b, err := RuleFile("5s")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "for: 5s"); got != len(want) {
		t.Errorf("RuleFile(5s) has %d rules waiting 5s, want %d:\n%s", got, len(want), b)
	}
}

// promtool comes with Debian's prometheus package (.ci/run installs it).
func TestPromtoolChecksTheRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("no promtool on $PATH (apt-get install prometheus; .ci/run does)")
	}
	b, err := RuleFile("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(good, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", good).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	// The check can fail: a broken expression is refused.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(b), "> 0", "> > 0", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", bad).CombinedOutput(); err == nil {
		t.Errorf("promtool accepted a broken rule file:\n%s", out)
	}
}
