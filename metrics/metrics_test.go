package metrics

import (
	"testing"

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
