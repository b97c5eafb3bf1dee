// Package policy holds stsroller's decisions: which annotations a StatefulSet
// carries and what they mean, and the pure planner that says which outdated pods
// to delete next. Nothing here talks to the API server or reads a clock.
package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationPrefix begins every annotation stsroller reads or writes.
const AnnotationPrefix = "stsroller.io/"

// The annotations a user sets on a StatefulSet.
const (
	AnnotationEnabled                 = "stsroller.io/enabled"
	AnnotationMaxUnavailable          = "stsroller.io/max-unavailable"
	AnnotationPartition               = "stsroller.io/partition"
	AnnotationPaused                  = "stsroller.io/paused"
	AnnotationLeaderSelector          = "stsroller.io/leader-selector"
	AnnotationDNSDomain               = "stsroller.io/dns-domain"
	AnnotationProgressDeadlineSeconds = "stsroller.io/progress-deadline-seconds"
	// AnnotationRolloutGroup puts the StatefulSet in a rollout group of its
	// namespace: at most one member of a group deletes pods at a time.
	AnnotationRolloutGroup = "stsroller.io/rollout-group"
	// AnnotationRolloutGroupOrder orders the members of a group, lower first.
	AnnotationRolloutGroupOrder = "stsroller.io/rollout-group-order"
	// AnnotationDrainTimeoutSeconds turns the drain handshake on: healthy pods
	// are asked to drain, and evicted once they answer or after this long.
	AnnotationDrainTimeoutSeconds = "stsroller.io/drain-timeout-seconds"

	// AnnotationStatus is written by stsroller: one JSON object, see Status.
	AnnotationStatus = "stsroller.io/status"
)

// The annotations of the drain handshake, on pods.
const (
	// AnnotationDrainRequested is set by stsroller on a pod it wants to evict,
	// to the time of the request (RFC 3339, with sub-second precision).
	AnnotationDrainRequested = "stsroller.io/drain-requested"
	// AnnotationDrainRevision is set by stsroller with the request: the
	// update revision it was made for. A request counts only for that
	// revision.
	AnnotationDrainRevision = "stsroller.io/drain-revision"
	// AnnotationDrainComplete is set, to any value, by the pod's sidecar or
	// application once it has drained: the pod may go. stsroller clears it
	// in the patch that makes a request, so only an answer given after the
	// request counts.
	AnnotationDrainComplete = "stsroller.io/drain-complete"
)

// ConditionDNSPropagated is the pod condition stsroller sets to True once the
// pod's stable name resolves to its current IP at every authoritative server.
// Users put it in the pod template's readinessGates.
const ConditionDNSPropagated corev1.PodConditionType = "stsroller.io/dns-propagated"

// Defaults for the optional annotations.
const (
	DefaultMaxUnavailable   = 1
	DefaultLeaderSelector   = "stsroller.io/role=leader"
	DefaultProgressDeadline = 600 * time.Second
)

// Config is what a StatefulSet's annotations ask for, parsed and validated.
type Config struct {
	// MaxUnavailable is the batch size, already resolved against spec.replicas.
	MaxUnavailable int32
	// Partition is how many pods stay at the old revision.
	Partition int32
	Paused    bool
	// LeaderSelector matches the pods that are replaced last.
	LeaderSelector labels.Selector
	// DNSDomain turns the DNS gate on when not empty: a pod's name is
	// <pod-name>.<DNSDomain>.
	DNSDomain        string
	ProgressDeadline time.Duration
	// RolloutGroup names the StatefulSet's rollout group; empty for none.
	RolloutGroup string
	// RolloutGroupOrder orders the members of the group, lower first.
	RolloutGroupOrder int32
	// DrainTimeout turns the drain handshake on when > 0: how long a pod asked
	// to drain is waited for before it is evicted anyway.
	DrainTimeout time.Duration
	// RolloutLock names the rollout lock (stsroller.io/rollout-lock, see
	// lock.go); empty for none.
	RolloutLock string
	// HealthQuery turns the Prometheus health gate on when not empty; see
	// health.go for it and the other Health fields.
	HealthQuery         string
	HealthStable        time.Duration
	HealthTimeout       time.Duration
	HealthPrometheusURL string
}

// ConfigError says which annotation did not parse and what it accepts.
type ConfigError struct {
	Annotation string
	Value      string
	Accepted   string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("annotation %s: invalid value %q: accepted: %s", e.Annotation, e.Value, e.Accepted)
}

// Accepted forms, in the words the InvalidConfig event uses.
const (
	acceptedBool              = `"true" or "false"`
	acceptedMaxUnavailable    = `an integer >= 1 (for example "3") or a percentage of spec.replicas from 1% to 100% (for example "25%")`
	acceptedPartition         = `an integer >= 0`
	acceptedLeaderSelector    = `a label selector (for example "stsroller.io/role=leader" or "role in (leader,primary)")`
	acceptedDNSDomain         = `a DNS name (for example "db.example.com")`
	acceptedProgressDeadline  = `an integer number of seconds >= 1`
	acceptedRolloutGroup      = `a name of at most 63 characters: letters, digits, '-', '_' or '.', beginning and ending with a letter or digit (for example "db")`
	acceptedRolloutGroupOrder = `an integer (for example "1"; lower goes first)`
	acceptedDrainTimeout      = `an integer number of seconds >= 1`
)

// Enabled reports whether the StatefulSet is managed: it carries
// stsroller.io/enabled with any value but "false" (after trimming spaces,
// case-insensitive). A value that is neither "true" nor "false" (say "yes")
// is managed so that it can be reported: ParseConfig refuses it, and the
// StatefulSet says InvalidConfig instead of being silently ignored.
func Enabled(sts *appsv1.StatefulSet) bool {
	v, ok := sts.Annotations[AnnotationEnabled]
	return ok && !strings.EqualFold(strings.TrimSpace(v), "false")
}

// IsOnDelete reports whether the built-in controller leaves pod deletion to us.
func IsOnDelete(sts *appsv1.StatefulSet) bool {
	return sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType
}

// Replicas is spec.replicas with the API default of 1.
func Replicas(sts *appsv1.StatefulSet) int32 {
	if sts.Spec.Replicas == nil {
		return 1
	}
	return *sts.Spec.Replicas
}

// ParseConfig reads and validates every stsroller annotation of the StatefulSet.
// The first value that does not parse is returned as a *ConfigError.
func ParseConfig(sts *appsv1.StatefulSet) (Config, error) {
	a := sts.Annotations
	cfg := Config{
		MaxUnavailable:   DefaultMaxUnavailable,
		ProgressDeadline: DefaultProgressDeadline,
	}
	if v, ok := a[AnnotationEnabled]; ok {
		if _, err := parseBool(v); err != nil {
			return cfg, &ConfigError{AnnotationEnabled, v, acceptedBool}
		}
	}
	if v, ok := a[AnnotationMaxUnavailable]; ok {
		n, err := parseMaxUnavailable(v, Replicas(sts))
		if err != nil {
			return cfg, &ConfigError{AnnotationMaxUnavailable, v, acceptedMaxUnavailable}
		}
		cfg.MaxUnavailable = n
	}
	if v, ok := a[AnnotationPartition]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 0 {
			return cfg, &ConfigError{AnnotationPartition, v, acceptedPartition}
		}
		cfg.Partition = int32(n)
	}
	if v, ok := a[AnnotationPaused]; ok {
		b, err := parseBool(v)
		if err != nil {
			return cfg, &ConfigError{AnnotationPaused, v, acceptedBool}
		}
		cfg.Paused = b
	}
	leader := DefaultLeaderSelector
	if v, ok := a[AnnotationLeaderSelector]; ok {
		leader = v
	}
	sel, err := labels.Parse(leader)
	if err != nil || strings.TrimSpace(leader) == "" {
		return cfg, &ConfigError{AnnotationLeaderSelector, leader, acceptedLeaderSelector}
	}
	cfg.LeaderSelector = sel
	if v, ok := a[AnnotationDNSDomain]; ok {
		d := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(v), "."))
		if !isDNSName(d) {
			return cfg, &ConfigError{AnnotationDNSDomain, v, acceptedDNSDomain}
		}
		cfg.DNSDomain = d
	}
	if v, ok := a[AnnotationProgressDeadlineSeconds]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 {
			return cfg, &ConfigError{AnnotationProgressDeadlineSeconds, v, acceptedProgressDeadline}
		}
		cfg.ProgressDeadline = time.Duration(n) * time.Second
	}
	if v, ok := a[AnnotationRolloutGroup]; ok {
		g := strings.TrimSpace(v)
		if g == "" || len(validation.IsValidLabelValue(g)) > 0 {
			return cfg, &ConfigError{AnnotationRolloutGroup, v, acceptedRolloutGroup}
		}
		cfg.RolloutGroup = g
	}
	if v, ok := a[AnnotationRolloutGroupOrder]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return cfg, &ConfigError{AnnotationRolloutGroupOrder, v, acceptedRolloutGroupOrder}
		}
		cfg.RolloutGroupOrder = int32(n)
	}
	if v, ok := a[AnnotationDrainTimeoutSeconds]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
		if err != nil || n < 1 {
			return cfg, &ConfigError{AnnotationDrainTimeoutSeconds, v, acceptedDrainTimeout}
		}
		cfg.DrainTimeout = time.Duration(n) * time.Second
	}
	if v, ok := a[AnnotationRolloutLock]; ok {
		n, err := parseRolloutLock(v)
		if err != nil {
			return cfg, err
		}
		cfg.RolloutLock = n
	}
	if err := parseHealth(a, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// RolloutGroupOf names the rollout group a managed StatefulSet belongs to, as
// its annotation says (trimmed), whether or not the rest of its configuration
// parses: a member whose configuration is invalid still holds its group.
// Empty when it is in none, or not managed.
func RolloutGroupOf(sts *appsv1.StatefulSet) string {
	if !Enabled(sts) {
		return ""
	}
	return strings.TrimSpace(sts.Annotations[AnnotationRolloutGroup])
}

// isDNSName reports whether d is a lower-case DNS name: a subdomain as
// Kubernetes validates it, whose labels are also at most 63 characters, as DNS
// requires (IsDNS1123Subdomain alone allows longer ones).
func isDNSName(d string) bool {
	if len(validation.IsDNS1123Subdomain(d)) > 0 {
		return false
	}
	for l := range strings.SplitSeq(d, ".") {
		if len(l) > validation.DNS1123LabelMaxLength {
			return false
		}
	}
	return true
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean: %q", v)
}

// parseMaxUnavailable resolves an integer or a percentage of replicas, rounded
// down and at least 1.
func parseMaxUnavailable(v string, replicas int32) (int32, error) {
	s := strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.ParseInt(p, 10, 32)
		if err != nil || n < 1 || n > 100 {
			return 0, fmt.Errorf("percentage out of range: %q", v)
		}
		return max(1, int32(int64(replicas)*n/100)), nil
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("not an integer >= 1: %q", v)
	}
	return int32(n), nil
}
