// Package metrics defines stsroller's Prometheus metrics and registers the
// workqueue metrics provider, so every named queue is measured.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/util/workqueue"
)

const namespace = "stsroller"

// Metrics holds every stsroller metric. Use New; the zero value is not usable.
type Metrics struct {
	Registry *prometheus.Registry

	// PodsDeleted counts pods removed, by reason (unhealthy, outdated, leader)
	// and method (Delete, Evict).
	PodsDeleted *prometheus.CounterVec
	// EvictionsBlocked counts evictions the API server refused with 429.
	EvictionsBlocked prometheus.Counter
	// Rollouts counts managed StatefulSets by phase.
	Rollouts *prometheus.GaugeVec
	// RolloutsBlocked counts blocked StatefulSets by reason.
	RolloutsBlocked *prometheus.GaugeVec
	// RolloutDuration observes rollouts from start to Complete.
	RolloutDuration prometheus.Histogram
	// SyncDuration observes one sync of one StatefulSet.
	SyncDuration prometheus.Histogram
	// DNSChecks counts DNS gate checks by result reason.
	DNSChecks *prometheus.CounterVec
	// DNSCheckDuration observes one check of one name at every server.
	DNSCheckDuration prometheus.Histogram
	// DNSPropagation observes the time from a pod's start to its name
	// resolving to its IP at every authoritative server.
	DNSPropagation prometheus.Histogram
	// LockWait observes the time a StatefulSet waited for its rollout lock
	// before it took it (0 when it was free).
	LockWait prometheus.Histogram
	// HealthEvaluations counts the health gate's query evaluations by
	// result (healthy, unhealthy, error), HealthEvaluationDuration times
	// them, and HealthGateErrors counts those that could not be evaluated.
	HealthEvaluations        *prometheus.CounterVec
	HealthEvaluationDuration prometheus.Histogram
	HealthGateErrors         prometheus.Counter
	// HealthWait observes the time a rollout waited for its health gate
	// (stsroller.io/health-query) before a step.
	HealthWait prometheus.Histogram
	// Leader is 1 while this process holds the leader lease.
	Leader prometheus.Gauge
	// DrainDuration observes drain handshakes, from the request to the
	// eviction, by result (Completed, TimedOut).
	DrainDuration *prometheus.HistogramVec
	// APIRequests counts the process's requests to the API server by verb,
	// resource and code, and APIRequestDuration times them (see Instrument).
	APIRequests        *prometheus.CounterVec
	APIRequestDuration *prometheus.HistogramVec
	// APIRateLimiterWait observes the time requests waited for the
	// client-side rate limit (see Instrument): time a burst of work lost to
	// --kube-api-qps.
	APIRateLimiterWait prometheus.Histogram
}

// New creates the metrics on a registry of their own, with the Go and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		PodsDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "pods_deleted_total",
			Help: "Pods removed by stsroller, by reason (unhealthy, outdated, leader) and method (Delete, Evict).",
		}, []string{"reason", "method"}),
		EvictionsBlocked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "evictions_blocked_total",
			Help: "Evictions the API server refused with 429 Too Many Requests (a PodDisruptionBudget had no headroom).",
		}),
		Rollouts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "statefulsets",
			Help: "Managed StatefulSets by rollout phase.",
		}, []string{"phase"}),
		RolloutsBlocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "rollouts_blocked",
			Help: "Rollouts blocked, stalled or invalid, by reason.",
		}, []string{"reason"}),
		RolloutDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rollout_duration_seconds",
			Help:    "Time from the start of a rollout to its completion.",
			Buckets: prometheus.ExponentialBuckets(5, 2, 12),
		}),
		SyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "sync_duration_seconds",
			Help:    "Time to plan and act for one StatefulSet.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		DNSChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dns_checks_total",
			Help: "DNS gate checks of one pod name at every authoritative server, by result.",
		}, []string{"result"}),
		DNSCheckDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dns_check_duration_seconds",
			Help:    "Latency of one DNS gate check (every server asked).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		DNSPropagation: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dns_propagation_seconds",
			Help:    "Time from a pod's start to its name resolving to its IP at every authoritative server.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}),
		DrainDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "drain_duration_seconds",
			Help:    "Time from a drain request to the pod's eviction, by result (Completed: the pod answered; TimedOut: stsroller.io/drain-timeout-seconds passed).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}, []string{"result"}),
		LockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rollout_lock_wait_seconds",
			Help:    "Time a StatefulSet waited for its rollout lock (stsroller.io/rollout-lock) before it took it.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16),
		}),
		HealthEvaluations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "health_gate_evaluations_total",
			Help: "Evaluations of health gate queries (stsroller.io/health-query), by result: healthy, unhealthy, error.",
		}, []string{"result"}),
		HealthEvaluationDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "health_gate_evaluation_duration_seconds",
			Help:    "Time one health gate query took to evaluate at Prometheus.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		HealthGateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "health_gate_errors_total",
			Help: "Health gate queries that could not be evaluated (Prometheus unreachable, an error answer, a result of the wrong type): the gate stays closed.",
		}),
		HealthWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "health_gate_wait_seconds",
			Help:    "Time a rollout waited for its health gate (WaitingForHealth or HealthGateError) before its next step.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		Leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "leader",
			Help: "1 while this process holds the leader lease, else 0.",
		}),
	}
	m.APIRequests, m.APIRequestDuration = newAPIRequests()
	m.APIRateLimiterWait = newRateLimiterWait()
	r.MustRegister(m.PodsDeleted, m.EvictionsBlocked, m.Rollouts, m.RolloutsBlocked, m.RolloutDuration,
		m.SyncDuration, m.DNSChecks, m.DNSCheckDuration, m.DNSPropagation, m.LockWait, m.Leader, m.DrainDuration,
		m.HealthEvaluations, m.HealthEvaluationDuration, m.HealthGateErrors, m.HealthWait,
		m.APIRequests, m.APIRequestDuration, m.APIRateLimiterWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

var providerOnce sync.Once

// RegisterWorkqueueProvider makes every named workqueue report depth, adds,
// latency, work duration, unfinished work, longest running processor and
// retries on m's registry. client-go takes one provider per process: the first
// call wins.
func (m *Metrics) RegisterWorkqueueProvider() {
	providerOnce.Do(func() {
		workqueue.SetProvider(&queueProvider{m.Registry})
	})
}

type queueProvider struct{ r prometheus.Registerer }

func (p *queueProvider) opts(queue, name, help string) prometheus.Opts {
	return prometheus.Opts{Namespace: namespace, Subsystem: "workqueue", Name: name, Help: help,
		ConstLabels: prometheus.Labels{"name": queue}}
}

func (p *queueProvider) gauge(queue, name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts(p.opts(queue, name, help)))
	p.r.MustRegister(g)
	return g
}

func (p *queueProvider) counter(queue, name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts(p.opts(queue, name, help)))
	p.r.MustRegister(c)
	return c
}

func (p *queueProvider) histogram(queue, name, help string) prometheus.Histogram {
	o := p.opts(queue, name, help)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: o.Namespace, Subsystem: o.Subsystem,
		Name: o.Name, Help: o.Help, ConstLabels: o.ConstLabels, Buckets: prometheus.ExponentialBuckets(1e-6, 10, 10)})
	p.r.MustRegister(h)
	return h
}

func (p *queueProvider) NewDepthMetric(q string) workqueue.GaugeMetric {
	return p.gauge(q, "depth", "Current depth of the workqueue.")
}

func (p *queueProvider) NewAddsMetric(q string) workqueue.CounterMetric {
	return p.counter(q, "adds_total", "Items added to the workqueue.")
}

func (p *queueProvider) NewLatencyMetric(q string) workqueue.HistogramMetric {
	return p.histogram(q, "queue_duration_seconds", "Time an item waits in the workqueue before it is processed.")
}

func (p *queueProvider) NewWorkDurationMetric(q string) workqueue.HistogramMetric {
	return p.histogram(q, "work_duration_seconds", "Time processing one item takes.")
}

func (p *queueProvider) NewUnfinishedWorkSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return p.gauge(q, "unfinished_work_seconds", "Seconds of work in progress not yet observed by work_duration.")
}

func (p *queueProvider) NewLongestRunningProcessorSecondsMetric(q string) workqueue.SettableGaugeMetric {
	return p.gauge(q, "longest_running_processor_seconds", "Seconds the longest running processor has been running.")
}

func (p *queueProvider) NewRetriesMetric(q string) workqueue.CounterMetric {
	return p.counter(q, "retries_total", "Items re-added to the workqueue with rate limiting.")
}

// ObserveHealthEvaluation records one health gate evaluation: its result
// (healthy, unhealthy, error) and how long it took.
func (m *Metrics) ObserveHealthEvaluation(result string, took time.Duration) {
	m.HealthEvaluations.WithLabelValues(result).Inc()
	m.HealthEvaluationDuration.Observe(took.Seconds())
	if result == "error" {
		m.HealthGateErrors.Inc()
	}
}
