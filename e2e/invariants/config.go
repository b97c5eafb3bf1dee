package invariants

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The checker reads stsroller's annotations itself, from docs/behaviour.md,
// and never with the policy package it checks: a parser bug there must not
// hide the violation it causes.
const (
	AnnotationEnabled           = "stsroller.io/enabled"
	AnnotationMaxUnavailable    = "stsroller.io/max-unavailable"
	AnnotationPartition         = "stsroller.io/partition"
	AnnotationPaused            = "stsroller.io/paused"
	AnnotationLeaderSelector    = "stsroller.io/leader-selector"
	AnnotationDNSDomain         = "stsroller.io/dns-domain"
	AnnotationProgressDeadline  = "stsroller.io/progress-deadline-seconds"
	AnnotationRolloutGroup      = "stsroller.io/rollout-group"
	AnnotationRolloutGroupOrder = "stsroller.io/rollout-group-order"
	AnnotationDrainTimeout      = "stsroller.io/drain-timeout-seconds"
	AnnotationStatus            = "stsroller.io/status"
	AnnotationRolloutLock       = "stsroller.io/rollout-lock"
	AnnotationHealthQuery       = "stsroller.io/health-query"

	AnnotationDrainRequested = "stsroller.io/drain-requested"
	AnnotationDrainRevision  = "stsroller.io/drain-revision"
	AnnotationDrainComplete  = "stsroller.io/drain-complete"

	// ConditionDNSPropagated is the pod condition of the DNS gate.
	ConditionDNSPropagated = "stsroller.io/dns-propagated"

	defaultLeaderSelector = "stsroller.io/role=leader"
)

// config is what the annotations of one StatefulSet say, as the checker
// reads them.
type config struct {
	enabled  bool // stsroller.io/enabled is "true"
	onDelete bool
	// invalid names the first annotation that does not parse, "" if none.
	invalid        string
	paused         bool
	maxUnavailable int32
	partition      int32
	leader         labels.Selector
	drainTimeout   time.Duration // 0: no handshake
	group          string        // stsroller.io/rollout-group, trimmed; "" if none
	dnsGate        bool          // stsroller.io/dns-domain is set
	// waitsElsewhere: a rollout lock or a health query is set, whose state
	// (a Lease in another cluster, Prometheus) the checker does not see.
	waitsElsewhere bool
}

// parseConfig reads a StatefulSet's stsroller.io/ annotations by the table of
// docs/behaviour.md.
func parseConfig(s *appsv1.StatefulSet) config {
	a := s.Annotations
	c := config{onDelete: s.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType, maxUnavailable: 1}
	bad := func(name string) {
		if c.invalid == "" {
			c.invalid = name
		}
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	if v, ok := a[AnnotationEnabled]; ok {
		b, valid := parseBool(v)
		c.enabled = b
		if !valid {
			// Managed, so that it can be reported InvalidConfig.
			c.enabled = true
			bad(AnnotationEnabled)
		}
	}
	if v, ok := a[AnnotationMaxUnavailable]; ok {
		if n, valid := parseMaxUnavailable(v, replicas); valid {
			c.maxUnavailable = n
		} else {
			bad(AnnotationMaxUnavailable)
		}
	}
	if v, ok := a[AnnotationPartition]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err == nil && n >= 0 {
			c.partition = int32(n)
		} else {
			bad(AnnotationPartition)
		}
	}
	if v, ok := a[AnnotationPaused]; ok {
		b, valid := parseBool(v)
		c.paused = b
		if !valid {
			bad(AnnotationPaused)
		}
	}
	leader := defaultLeaderSelector
	if v, ok := a[AnnotationLeaderSelector]; ok {
		leader = v
	}
	if sel, err := labels.Parse(leader); err == nil && strings.TrimSpace(leader) != "" {
		c.leader = sel
	} else {
		c.leader = labels.Nothing()
		bad(AnnotationLeaderSelector)
	}
	_, lock := a[AnnotationRolloutLock]
	_, health := a[AnnotationHealthQuery]
	c.waitsElsewhere = lock || health
	if v, ok := a[AnnotationDNSDomain]; ok {
		c.dnsGate = true
		d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), "."))
		if len(validation.IsDNS1123Subdomain(d)) > 0 {
			bad(AnnotationDNSDomain)
		}
		for l := range strings.SplitSeq(d, ".") {
			if len(l) > 63 {
				bad(AnnotationDNSDomain)
			}
		}
	}
	if v, ok := a[AnnotationProgressDeadline]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err != nil || n < 1 {
			bad(AnnotationProgressDeadline)
		}
	}
	if v, ok := a[AnnotationRolloutGroup]; ok {
		g := strings.TrimSpace(v)
		if g == "" || len(validation.IsValidLabelValue(g)) > 0 {
			bad(AnnotationRolloutGroup)
		}
		c.group = g
	}
	if v, ok := a[AnnotationRolloutGroupOrder]; ok {
		if _, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err != nil {
			bad(AnnotationRolloutGroupOrder)
		}
	}
	if v, ok := a[AnnotationDrainTimeout]; ok {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32); err == nil && n >= 1 {
			c.drainTimeout = time.Duration(n) * time.Second
		} else {
			bad(AnnotationDrainTimeout)
		}
	}
	return c
}

// parseBool accepts "true" and "false", trimmed, in any case.
func parseBool(v string) (b, valid bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// parseMaxUnavailable: an integer >= 1, or 1% to 100% of replicas rounded
// down, at least 1.
func parseMaxUnavailable(v string, replicas int32) (int32, bool) {
	s := strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil || n < 1 || n > 100 {
			return 0, false
		}
		return max(1, int32(int64(replicas)*n/100)), true
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 1 {
		return 0, false
	}
	return int32(n), true
}

// status is the part of the stsroller.io/status annotation the checker reads.
type status struct {
	Phase          string `json:"phase"`
	Reason         string `json:"reason"`
	UpdateRevision string `json:"updateRevision"`
}

func parseStatus(a map[string]string) *status {
	v, ok := a[AnnotationStatus]
	if !ok {
		return nil
	}
	var s status
	if json.Unmarshal([]byte(v), &s) != nil {
		return nil
	}
	return &s
}
