package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
)

// TestMetricsAreRegistered checks that the metrics DESIGN.md promises exist,
// and that named workqueues report through the provider.
func TestMetricsAreRegistered(t *testing.T) {
	m := New()
	m.RegisterWorkqueueProvider()
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "metrics-test"})
	defer q.ShutDown()
	q.Add("a")
	q.AddRateLimited("b")

	// Vectors appear once they have a child.
	m.PodsDeleted.WithLabelValues("unhealthy", "Delete").Inc()
	m.Rollouts.WithLabelValues("Rolling").Set(1)
	m.RolloutsBlocked.WithLabelValues("BlockedByPDB").Set(1)
	m.DNSChecks.WithLabelValues("Propagated").Inc()
	m.DrainDuration.WithLabelValues("Completed").Observe(3)

	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range families {
		got[f.GetName()] = true
	}
	for _, name := range []string{
		"stsroller_pods_deleted_total",
		"stsroller_evictions_blocked_total",
		"stsroller_statefulsets",
		"stsroller_rollouts_blocked",
		"stsroller_rollout_duration_seconds",
		"stsroller_sync_duration_seconds",
		"stsroller_dns_checks_total",
		"stsroller_dns_check_duration_seconds",
		"stsroller_dns_propagation_seconds",
		"stsroller_leader",
		"stsroller_drain_duration_seconds",
		"stsroller_api_rate_limiter_wait_seconds",
		"stsroller_workqueue_depth",
		"stsroller_workqueue_adds_total",
		"stsroller_workqueue_queue_duration_seconds",
		"stsroller_workqueue_work_duration_seconds",
		"stsroller_workqueue_retries_total",
		"go_goroutines",
	} {
		if !got[name] {
			t.Errorf("metric %s is not registered", name)
		}
	}
	for _, f := range families {
		if f.GetName() != "stsroller_workqueue_adds_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "name" && l.GetValue() == "metrics-test" && mt.GetCounter().GetValue() >= 1 {
					return
				}
			}
		}
	}
	t.Errorf("the named queue's add was not counted")
}

func TestRequestKind(t *testing.T) {
	for _, tc := range []struct {
		method, path, watch string
		verb, resource      string
	}{
		{"GET", "/api/v1/namespaces/ns/pods", "", "list", "pods"},
		{"GET", "/api/v1/pods", "true", "watch", "pods"},
		{"GET", "/api/v1/namespaces/ns/pods/web-0", "", "get", "pods"},
		{"POST", "/api/v1/namespaces/ns/pods/web-0/eviction", "", "create", "pods/eviction"},
		{"PATCH", "/api/v1/namespaces/ns/pods/web-0/status", "", "patch", "pods/status"},
		{"DELETE", "/api/v1/namespaces/ns/pods/web-0", "", "delete", "pods"},
		{"PATCH", "/apis/apps/v1/namespaces/ns/statefulsets/web", "", "patch", "statefulsets"},
		{"GET", "/apis/policy/v1/poddisruptionbudgets", "1", "watch", "poddisruptionbudgets"},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/stsroller-system/leases/stsroller", "", "update", "leases"},
		{"GET", "/api/v1/namespaces/ns", "", "get", "namespaces"},
		{"POST", "/api/v1/namespaces/ns/events", "", "create", "events"},
		{"DELETE", "/api/v1/namespaces/ns/pods", "", "deletecollection", "pods"},
		{"GET", "/version", "", "get", "-"},
		{"GET", "/apis", "", "get", "-"},
	} {
		verb, resource := RequestKind(tc.method, tc.path, tc.watch)
		if verb != tc.verb || resource != tc.resource {
			t.Errorf("%s %s watch=%q: %s %s, want %s %s", tc.method, tc.path, tc.watch, verb, resource, tc.verb, tc.resource)
		}
	}
}

// TestInstrumentCounts: a client built from an instrumented config counts
// its requests by verb, resource and code.
func TestInstrumentCounts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/web-0") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","items":[]}`))
	}))
	defer srv.Close()
	m := New()
	cfg := &rest.Config{Host: srv.URL}
	m.Instrument(cfg)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = client.CoreV1().Pods("ns").List(t.Context(), metav1.ListOptions{})
	_, _ = client.CoreV1().Pods("ns").Get(t.Context(), "web-0", metav1.GetOptions{})
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "stsroller_api_requests_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			var ls []string
			for _, l := range mt.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[strings.Join(ls, ",")] = mt.GetCounter().GetValue()
		}
	}
	want := map[string]float64{"code=200,resource=pods,verb=list": 1, "code=404,resource=pods,verb=get": 1}
	if len(got) != len(want) || got["code=200,resource=pods,verb=list"] != 1 || got["code=404,resource=pods,verb=get"] != 1 {
		t.Errorf("stsroller_api_requests_total = %v, want %v", got, want)
	}
}

// TestInstrumentTimesTheRateLimit: the clients of an instrumented config
// share one token bucket of its QPS and burst, and every request's wait for
// it is observed: three requests at 5 QPS with a burst of 1 wait about 0.4 s
// in all.
func TestInstrumentTimesTheRateLimit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"PodList","apiVersion":"v1","items":[]}`))
	}))
	defer srv.Close()
	m := New()
	cfg := &rest.Config{Host: srv.URL, QPS: 5, Burst: 1}
	m.Instrument(cfg)
	for range 3 {
		// A client each: the bucket is the config's, not the client's.
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.CoreV1().Pods("ns").List(t.Context(), metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "stsroller_api_rate_limiter_wait_seconds" {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 3 || h.GetSampleSum() < 0.3 {
			t.Errorf("rate limiter waits: %d observed, %.3f s in all; want 3, about 0.4 s", h.GetSampleCount(), h.GetSampleSum())
		}
		return
	}
	t.Error("no stsroller_api_rate_limiter_wait_seconds")
}
