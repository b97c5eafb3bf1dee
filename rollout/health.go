package rollout

import (
	"errors"
	"time"

	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/policy"
)

// HealthGate evaluates each StatefulSet's stsroller.io/health-query at
// Prometheus (package healthgate). Observe must not block on Prometheus: it
// answers from the last evaluation, evaluates in the background and calls the
// controller's Enqueue when the answer changes.
type HealthGate interface {
	// Observe returns what the gate has seen of the query; an error when it
	// cannot evaluate it at all (no Prometheus URL).
	Observe(key cache.ObjectName, url, query string) (policy.HealthState, error)
	// Stepped records a step that removed healthy pods: the query must hold
	// for stable-seconds after it again.
	Stepped(key cache.ObjectName, at time.Time)
	// Forget drops what the gate holds for a StatefulSet without a query.
	Forget(key cache.ObjectName)
}

// errNoHealthGate is the planner's HealthError without a gate.
var errNoHealthGate = errors.New("the health gate is off in this stsroller: " + policy.AnnotationHealthQuery + " cannot be honoured")

// observeHealth fills the planner's view of the health gate, and stops the
// gate's evaluations of a StatefulSet that has no query (any more).
func (c *Controller) observeHealth(key cache.ObjectName, in *policy.Input) {
	if in.ConfigError != nil || in.Config.HealthQuery == "" {
		if c.health != nil && in.ConfigError == nil {
			c.health.Forget(key)
		}
		return
	}
	if c.health == nil {
		in.HealthError = errNoHealthGate
		return
	}
	in.Health, in.HealthError = c.health.Observe(key, in.Config.HealthPrometheusURL, in.Config.HealthQuery)
}

// stepped tells the gate that a healthy pod was removed or asked to drain.
func (c *Controller) stepped(key cache.ObjectName, d policy.Deletion) {
	if c.health == nil || d.Why == policy.RemovalUnhealthy || d.Method == policy.MethodDelete {
		return
	}
	c.health.Stepped(key, c.clock.Now())
}

// healthWaitLocked observes, when a rollout stops waiting for its health
// gate, how long it waited. Call with c.mu held.
func (c *Controller) healthWaitLocked(key cache.ObjectName, next *policy.Status) {
	waiting := next.Reason == policy.ReasonWaitingForHealth || next.Reason == policy.ReasonHealthGateError
	since, was := c.healthWaits[key]
	switch {
	case waiting && !was:
		c.healthWaits[key] = c.clock.Now()
	case !waiting && was:
		c.metrics.HealthWait.Observe(c.clock.Since(since).Seconds())
		delete(c.healthWaits, key)
	}
}
