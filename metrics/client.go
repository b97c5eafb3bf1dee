package metrics

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
)

// newAPIRequests are the counter and histogram of Instrument: requests by
// Kubernetes verb (get, list, watch, create, update, patch, delete), resource
// ("pods", "pods/eviction", "statefulsets") and HTTP code, which tell what an
// event costs in API calls and whether informers LIST again.
func newAPIRequests() (*prometheus.CounterVec, *prometheus.HistogramVec) {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "api_requests_total",
			Help: "Requests to the Kubernetes API server, by verb, resource and HTTP code (code 0: no answer).",
		}, []string{"verb", "resource", "code"}),
		prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "api_request_duration_seconds",
			Help:    "Time to the answer's headers of requests to the Kubernetes API server, by verb and resource (watches excluded).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}, []string{"verb", "resource"})
}

// newRateLimiterWait is the histogram of Instrument's rate limiter.
func newRateLimiterWait() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "api_rate_limiter_wait_seconds",
		Help:    "Time requests to the Kubernetes API server waited for the client's own rate limit (--kube-api-qps, --kube-api-burst) before they were sent.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
}

// Instrument makes every client built from cfg count its requests in
// m.APIRequests and m.APIRequestDuration, and share one token bucket of
// cfg.QPS and cfg.Burst whose waits m.APIRateLimiterWait observes (unless cfg
// has a rate limiter of its own). Call it before building clients.
func (m *Metrics) Instrument(cfg *rest.Config) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &countingTransport{next: rt, m: m}
	})
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		burst := max(cfg.Burst, 1)
		cfg.RateLimiter = &timedLimiter{RateLimiter: flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, burst), wait: m.APIRateLimiterWait}
	}
}

// timedLimiter observes how long each request waits for a token.
type timedLimiter struct {
	flowcontrol.RateLimiter
	wait prometheus.Histogram
}

func (l *timedLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	err := l.RateLimiter.Wait(ctx)
	l.wait.Observe(time.Since(start).Seconds())
	return err
}

type countingTransport struct {
	next http.RoundTripper
	m    *Metrics
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	verb, resource := RequestKind(req.Method, req.URL.Path, req.URL.Query().Get("watch"))
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	code := "0"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.m.APIRequests.WithLabelValues(verb, resource, code).Inc()
	if verb != "watch" {
		t.m.APIRequestDuration.WithLabelValues(verb, resource).Observe(time.Since(start).Seconds())
	}
	return resp, err
}

// RequestKind names a request to the API server by the Kubernetes verb and
// resource it asks for, read from its method and path
// (/api/v1/namespaces/ns/pods/web-0/eviction is create pods/eviction), so
// that labels never hold names. Paths outside the resource API
// (/healthz, /version, discovery) are resource "-".
func RequestKind(method, path, watch string) (verb, resource string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var rest []string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		rest = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		rest = parts[3:]
	}
	if len(rest) >= 2 && rest[0] == "namespaces" && len(rest) > 2 {
		rest = rest[2:] // a namespaced resource; "namespaces/ns" alone is the namespace itself
	}
	resource = "-"
	named := false
	switch len(rest) {
	case 0:
	case 1:
		resource = rest[0]
	case 2:
		resource, named = rest[0], true
	default:
		resource, named = rest[0]+"/"+rest[2], true
	}
	switch method {
	case http.MethodGet:
		switch {
		case watch == "true" || watch == "1":
			verb = "watch"
		case named || resource == "-":
			verb = "get"
		default:
			verb = "list"
		}
	case http.MethodPost:
		verb = "create"
	case http.MethodPut:
		verb = "update"
	case http.MethodPatch:
		verb = "patch"
	case http.MethodDelete:
		verb = "delete"
		if !named {
			verb = "deletecollection"
		}
	default:
		verb = strings.ToLower(method)
	}
	return verb, resource
}
