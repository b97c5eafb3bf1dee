package policy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Prometheus health gate (stsroller.io/health-query): before each step
// that removes healthy pods, a PromQL query over the database's own metrics
// must have held for stable-seconds. The controller's gate (package
// healthgate) runs the query in the background and hands the planner what it
// observed (HealthState); the planner decides from that and the time alone.

// The health gate's annotations.
const (
	// AnnotationHealthQuery turns the gate on: a PromQL expression; the
	// database is healthy when it returns at least one sample and every
	// sample is non-zero.
	AnnotationHealthQuery = "stsroller.io/health-query"
	// AnnotationHealthStableSeconds is how long the query must have held
	// before a step.
	AnnotationHealthStableSeconds = "stsroller.io/health-stable-seconds"
	// AnnotationHealthTimeoutSeconds is how long the gate may stay closed
	// before the rollout says Stalled, HealthGateFailed.
	AnnotationHealthTimeoutSeconds = "stsroller.io/health-timeout-seconds"
	// AnnotationHealthPrometheusURL is the Prometheus to ask, instead of the
	// controller's --prometheus-url.
	AnnotationHealthPrometheusURL = "stsroller.io/health-prometheus-url"
)

// Defaults of the health gate.
const (
	DefaultHealthStable  = 30 * time.Second
	DefaultHealthTimeout = 600 * time.Second
)

// Reasons of the health gate.
const (
	// ReasonWaitingForHealth: the query does not hold, or not yet for
	// stable-seconds. Phase Rolling; a Normal event.
	ReasonWaitingForHealth = "WaitingForHealth"
	// ReasonHealthGateError: the query could not be evaluated (Prometheus
	// unreachable, an error answer, a result that is not a vector): the gate
	// stays closed. Phase Blocked; a Warning event.
	ReasonHealthGateError = "HealthGateError"
	// ReasonHealthGateFailed: the gate stayed closed for health-timeout-seconds.
	// Phase Stalled; a Warning event.
	ReasonHealthGateFailed = "HealthGateFailed"
)

const (
	acceptedHealthQuery   = `a PromQL expression that is not empty (for example "min(up{job=\"db\"}) > 0")`
	acceptedHealthStable  = `an integer number of seconds >= 0`
	acceptedHealthTimeout = `an integer number of seconds >= 1`
	acceptedHealthURL     = `an absolute http or https URL of a Prometheus server (for example "http://prometheus.monitoring:9090")`
)

// parseHealth reads the health gate's annotations into cfg. The numbers and
// the URL are validated whether or not a query is set.
func parseHealth(a map[string]string, cfg *Config) error {
	cfg.HealthStable = DefaultHealthStable
	cfg.HealthTimeout = DefaultHealthTimeout
	if v, ok := a[AnnotationHealthQuery]; ok {
		q := strings.TrimSpace(v)
		if q == "" {
			return &ConfigError{AnnotationHealthQuery, v, acceptedHealthQuery}
		}
		cfg.HealthQuery = q
	}
	if v, ok := a[AnnotationHealthStableSeconds]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 0 {
			return &ConfigError{AnnotationHealthStableSeconds, v, acceptedHealthStable}
		}
		cfg.HealthStable = time.Duration(n) * time.Second
	}
	if v, ok := a[AnnotationHealthTimeoutSeconds]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 {
			return &ConfigError{AnnotationHealthTimeoutSeconds, v, acceptedHealthTimeout}
		}
		cfg.HealthTimeout = time.Duration(n) * time.Second
	}
	if v, ok := a[AnnotationHealthPrometheusURL]; ok {
		u := strings.TrimSpace(v)
		if !ValidPrometheusURL(u) {
			return &ConfigError{AnnotationHealthPrometheusURL, v, acceptedHealthURL}
		}
		cfg.HealthPrometheusURL = u
	}
	return nil
}

// ValidPrometheusURL reports whether u is an absolute http or https URL with
// a host, as the gate's Prometheus client needs.
func ValidPrometheusURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && (p.Scheme == "http" || p.Scheme == "https") && p.Host != "" && p.User == nil
}

// HealthState is what the health gate observed of one StatefulSet's query.
type HealthState struct {
	// Checked: at least one evaluation has finished.
	Checked bool
	// Healthy: the last evaluation returned samples, all non-zero.
	Healthy bool
	// HealthySince is when the current run of healthy answers began (the
	// first healthy evaluation after one that was not); zero when not
	// healthy.
	HealthySince time.Time
	// UnhealthySince is when the current run of answers that are not healthy
	// (errors included) began; zero when healthy.
	UnhealthySince time.Time
	// LastStep is when stsroller last removed healthy pods of the
	// StatefulSet: the query must hold for stable-seconds after it too.
	LastStep time.Time
	// Value renders the last result, for messages.
	Value string
	// Err is the last evaluation's error; empty when it answered.
	Err string
}

// Health gate states, in the status.
const (
	HealthUnknown = "Unknown" // not evaluated yet
	HealthError   = "Error"   // the query cannot be evaluated
	HealthClosed  = "Closed"  // the query does not hold
	HealthWaiting = "Waiting" // it holds, not yet for stable-seconds
	HealthOpen    = "Open"    // it has held for stable-seconds
)

// HealthGateStatus is the gate's part of the status.
type HealthGateStatus struct {
	State string `json:"state"`
	// Value is the query's last value; kept only while a rollout is under
	// way, so an idle StatefulSet's status is not rewritten at every change.
	Value string `json:"value,omitempty"`
	// Since is when the query began to hold (Waiting, Open) or to fail
	// (Closed, Error).
	Since *metav1.Time `json:"since,omitempty"`
	Error string       `json:"error,omitempty"`
}

// healthGate is the planner's reading of the gate at in.Now: its state, and
// for Waiting how long until it opens.
func healthGate(in Input) (string, time.Duration) {
	h := in.Health
	switch {
	case !h.Checked:
		return HealthUnknown, 0
	case h.Err != "":
		return HealthError, 0
	case !h.Healthy:
		return HealthClosed, 0
	}
	from := laterOf(h.HealthySince, h.LastStep)
	if left := from.Add(in.Config.HealthStable).Sub(in.Now); left > 0 {
		return HealthWaiting, left
	}
	return HealthOpen, 0
}

// healthGuard holds every eviction while the gate is on and not open; it
// sets the requeue for when a Waiting gate opens.
func healthGuard(in Input, c *census) *guard {
	if in.Config.HealthQuery == "" {
		return nil
	}
	state, left := healthGate(in)
	h := in.Health
	switch state {
	case HealthOpen:
		return nil
	case HealthUnknown:
		return &guard{PhaseRolling, ReasonWaitingForHealth, fmt.Sprintf("waiting for the health query %s to be evaluated", quoteQuery(in))}
	case HealthError:
		return &guard{PhaseBlocked, ReasonHealthGateError, fmt.Sprintf(
			"the health query %s cannot be evaluated, so the gate stays closed: %s", quoteQuery(in), Truncate(h.Err, maxItem))}
	case HealthClosed:
		return &guard{PhaseRolling, ReasonWaitingForHealth, fmt.Sprintf(
			"waiting for health: %s does not hold (last value: %s) since %s", quoteQuery(in), Truncate(h.Value, maxItem),
			h.UnhealthySince.UTC().Format(time.RFC3339))}
	}
	if c.requeue == 0 || left < c.requeue {
		c.requeue = left
	}
	// The message names the time, not the time left (see finish).
	return &guard{PhaseRolling, ReasonWaitingForHealth, fmt.Sprintf(
		"waiting for health: %s holds (last value: %s); the gate opens at %s, once it has held for %s (health-stable-seconds)",
		quoteQuery(in), Truncate(h.Value, maxItem), in.Now.Add(left).UTC().Format(time.RFC3339), in.Config.HealthStable)}
}

func quoteQuery(in Input) string { return strconv.Quote(Truncate(in.Config.HealthQuery, maxItem)) }

// healthStatus is the gate's part of the status; nil with the gate off.
func healthStatus(in Input, rolling bool) *HealthGateStatus {
	if in.Config.HealthQuery == "" || in.ConfigError != nil || in.HealthError != nil {
		return nil
	}
	state, _ := healthGate(in)
	h := in.Health
	s := &HealthGateStatus{State: state}
	since := h.UnhealthySince
	if h.Healthy {
		since = h.HealthySince
	}
	if !since.IsZero() {
		t := metav1.NewTime(since)
		s.Since = &t
	}
	if rolling {
		s.Value = Truncate(h.Value, maxWhy)
	}
	s.Error = Truncate(h.Err, maxItem)
	return s
}

// healthHeld reports whether the status says the gate holds the rollout
// while it is closed (not merely waiting out stable-seconds).
func healthHeld(in Input, st *Status) bool {
	if in.Config.HealthQuery == "" || (st.Reason != ReasonWaitingForHealth && st.Reason != ReasonHealthGateError) {
		return false
	}
	state, _ := healthGate(in)
	return state != HealthOpen && state != HealthWaiting
}

// healthStall turns a rollout whose gate stayed closed for
// health-timeout-seconds into Stalled, HealthGateFailed. The time counts
// from the later of the gate going unhealthy and the rollout's last step:
// its start, a removal of healthy pods, a replacement turning available
// (lastProgress). It returns how long until then, or 0.
func healthStall(in Input, st *Status, lastProgress time.Time) (bool, time.Duration) {
	if !healthHeld(in, st) {
		return false, 0
	}
	from := laterOf(lastProgress, in.Health.LastStep)
	if !in.Health.UnhealthySince.IsZero() {
		from = laterOf(from, in.Health.UnhealthySince)
	}
	left := from.Add(in.Config.HealthTimeout).Sub(in.Now)
	if left > 0 {
		return false, left
	}
	st.Phase = PhaseStalled
	st.Reason = ReasonHealthGateFailed
	// The message names the time, not the time elapsed (see finish).
	st.Message = fmt.Sprintf("the health gate stayed closed since %s (health-timeout-seconds %s): %s",
		from.UTC().Format(time.RFC3339), in.Config.HealthTimeout, st.Message)
	return true, 0
}

// HealthFromStatus rebuilds the gate's view from the status the controller
// wrote, for `kubectl stsroller plan`, which does not ask Prometheus itself.
func HealthFromStatus(st *Status) HealthState {
	if st == nil || st.HealthGate == nil {
		return HealthState{}
	}
	g := st.HealthGate
	h := HealthState{Checked: g.State != HealthUnknown, Value: g.Value, Err: g.Error}
	var since time.Time
	if g.Since != nil {
		since = g.Since.Time
	}
	switch g.State {
	case HealthOpen:
		// Open: held long enough, whenever it began.
		h.Healthy, h.HealthySince = true, since
	case HealthWaiting:
		h.Healthy, h.HealthySince = true, since
	case HealthError:
		h.UnhealthySince = since
		if h.Err == "" {
			h.Err = "unknown error"
		}
	default:
		h.UnhealthySince = since
	}
	return h
}
