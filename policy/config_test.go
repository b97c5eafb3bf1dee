package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

func annotatedSet(replicas int32, annotations map[string]string) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns", Annotations: annotations},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To(replicas)},
	}
}

// configView is what a test compares: Config with the selector as a string.
type configView struct {
	MaxUnavailable   int32
	Partition        int32
	Paused           bool
	LeaderSelector   string
	DNSDomain        string
	ProgressDeadline time.Duration
	Group            string
	GroupOrder       int32
	DrainTimeout     time.Duration
}

func viewConfig(c Config) configView {
	v := configView{
		Group:            c.RolloutGroup,
		GroupOrder:       c.RolloutGroupOrder,
		MaxUnavailable:   c.MaxUnavailable,
		Partition:        c.Partition,
		Paused:           c.Paused,
		DNSDomain:        c.DNSDomain,
		ProgressDeadline: c.ProgressDeadline,
		DrainTimeout:     c.DrainTimeout,
	}
	if c.LeaderSelector != nil {
		v.LeaderSelector = c.LeaderSelector.String()
	}
	return v
}

var defaults = configView{
	MaxUnavailable:   DefaultMaxUnavailable,
	LeaderSelector:   DefaultLeaderSelector,
	ProgressDeadline: DefaultProgressDeadline,
}

func with(f func(*configView)) configView {
	v := defaults
	f(&v)
	return v
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name        string
		replicas    int32
		annotations map[string]string
		want        configView
	}{
		{name: "no annotations", replicas: 3, want: defaults},
		{name: "enabled true", replicas: 3, annotations: map[string]string{AnnotationEnabled: "true"}, want: defaults},
		{name: "enabled TRUE", replicas: 3, annotations: map[string]string{AnnotationEnabled: "TRUE"}, want: defaults},
		{name: "enabled false", replicas: 3, annotations: map[string]string{AnnotationEnabled: "false"}, want: defaults},

		{name: "max-unavailable integer", replicas: 10, annotations: map[string]string{AnnotationMaxUnavailable: "3"},
			want: with(func(v *configView) { v.MaxUnavailable = 3 })},
		{name: "max-unavailable above replicas", replicas: 2, annotations: map[string]string{AnnotationMaxUnavailable: "5"},
			want: with(func(v *configView) { v.MaxUnavailable = 5 })},
		{name: "max-unavailable 25% of 10 rounds down", replicas: 10, annotations: map[string]string{AnnotationMaxUnavailable: "25%"},
			want: with(func(v *configView) { v.MaxUnavailable = 2 })},
		{name: "max-unavailable 5% of 10 is at least 1", replicas: 10, annotations: map[string]string{AnnotationMaxUnavailable: "5%"},
			want: with(func(v *configView) { v.MaxUnavailable = 1 })},
		{name: "max-unavailable 100%", replicas: 10, annotations: map[string]string{AnnotationMaxUnavailable: "100%"},
			want: with(func(v *configView) { v.MaxUnavailable = 10 })},
		{name: "max-unavailable 50% of 0 replicas", replicas: 0, annotations: map[string]string{AnnotationMaxUnavailable: "50%"},
			want: with(func(v *configView) { v.MaxUnavailable = 1 })},
		{name: "max-unavailable spaces", replicas: 10, annotations: map[string]string{AnnotationMaxUnavailable: " 2 "},
			want: with(func(v *configView) { v.MaxUnavailable = 2 })},

		{name: "partition 0", replicas: 3, annotations: map[string]string{AnnotationPartition: "0"}, want: defaults},
		{name: "partition 3", replicas: 3, annotations: map[string]string{AnnotationPartition: "3"},
			want: with(func(v *configView) { v.Partition = 3 })},

		{name: "paused true", replicas: 3, annotations: map[string]string{AnnotationPaused: "true"},
			want: with(func(v *configView) { v.Paused = true })},
		{name: "paused false", replicas: 3, annotations: map[string]string{AnnotationPaused: "false"}, want: defaults},

		{name: "leader-selector custom", replicas: 3, annotations: map[string]string{AnnotationLeaderSelector: "role in (leader,primary)"},
			want: with(func(v *configView) { v.LeaderSelector = "role in (leader,primary)" })},

		{name: "dns-domain", replicas: 3, annotations: map[string]string{AnnotationDNSDomain: "db.example.com"},
			want: with(func(v *configView) { v.DNSDomain = "db.example.com" })},
		{name: "dns-domain trailing dot and case", replicas: 3, annotations: map[string]string{AnnotationDNSDomain: "DB.Example.COM."},
			want: with(func(v *configView) { v.DNSDomain = "db.example.com" })},

		{name: "progress-deadline-seconds", replicas: 3, annotations: map[string]string{AnnotationProgressDeadlineSeconds: "90"},
			want: with(func(v *configView) { v.ProgressDeadline = 90 * time.Second })},

		{name: "rollout-group", replicas: 3, annotations: map[string]string{AnnotationRolloutGroup: " db-zones "},
			want: with(func(v *configView) { v.Group = "db-zones" })},
		{name: "rollout-group-order", replicas: 3, annotations: map[string]string{AnnotationRolloutGroup: "db", AnnotationRolloutGroupOrder: "2"},
			want: with(func(v *configView) { v.Group, v.GroupOrder = "db", 2 })},
		{name: "rollout-group-order negative", replicas: 3, annotations: map[string]string{AnnotationRolloutGroup: "db", AnnotationRolloutGroupOrder: "-1"},
			want: with(func(v *configView) { v.Group, v.GroupOrder = "db", -1 })},
		{name: "drain-timeout-seconds", replicas: 3, annotations: map[string]string{AnnotationDrainTimeoutSeconds: "600"},
			want: with(func(v *configView) { v.DrainTimeout = 10 * time.Minute })},
		{name: "drain-timeout-seconds spaces", replicas: 3, annotations: map[string]string{AnnotationDrainTimeoutSeconds: " 1 "},
			want: with(func(v *configView) { v.DrainTimeout = time.Second })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig(annotatedSet(tc.replicas, tc.annotations))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if diff := cmp.Diff(tc.want, viewConfig(cfg)); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseConfigLeaderSelectorMatches(t *testing.T) {
	cfg, err := ParseConfig(annotatedSet(3, nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.LeaderSelector.Matches(labels.Set{"stsroller.io/role": "leader"}) {
		t.Errorf("default leader selector does not match stsroller.io/role=leader")
	}
	if cfg.LeaderSelector.Matches(labels.Set{"stsroller.io/role": "follower"}) || cfg.LeaderSelector.Matches(labels.Set{}) {
		t.Errorf("default leader selector matches a pod that is not the leader")
	}
}

func TestParseConfigInvalid(t *testing.T) {
	tests := []struct {
		annotation string
		value      string
		accepted   string
	}{
		{AnnotationEnabled, "yes", acceptedBool},
		{AnnotationEnabled, "", acceptedBool},
		{AnnotationMaxUnavailable, "0", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "-1", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "0%", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "101%", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "abc", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "2.5", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "2.5%", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "%", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "", acceptedMaxUnavailable},
		{AnnotationMaxUnavailable, "99999999999", acceptedMaxUnavailable},
		{AnnotationPartition, "-1", acceptedPartition},
		{AnnotationPartition, "x", acceptedPartition},
		{AnnotationPartition, "", acceptedPartition},
		{AnnotationPaused, "yes", acceptedBool},
		{AnnotationLeaderSelector, "a=b=c", acceptedLeaderSelector},
		{AnnotationLeaderSelector, "!!", acceptedLeaderSelector},
		{AnnotationLeaderSelector, "", acceptedLeaderSelector},
		{AnnotationDNSDomain, "-bad-", acceptedDNSDomain},
		{AnnotationDNSDomain, "under_score", acceptedDNSDomain},
		{AnnotationDNSDomain, "", acceptedDNSDomain},
		{AnnotationDNSDomain, ".", acceptedDNSDomain},
		{AnnotationDNSDomain, "a..b", acceptedDNSDomain},
		{AnnotationDNSDomain, strings.Repeat("a", 64) + ".example.com", acceptedDNSDomain},
		{AnnotationProgressDeadlineSeconds, "0", acceptedProgressDeadline},
		{AnnotationProgressDeadlineSeconds, "-5", acceptedProgressDeadline},
		{AnnotationProgressDeadlineSeconds, "x", acceptedProgressDeadline},
		{AnnotationProgressDeadlineSeconds, "1.5", acceptedProgressDeadline},
		{AnnotationRolloutGroup, "", acceptedRolloutGroup},
		{AnnotationRolloutGroup, "a b", acceptedRolloutGroup},
		{AnnotationRolloutGroup, "-db", acceptedRolloutGroup},
		{AnnotationRolloutGroup, strings.Repeat("g", 64), acceptedRolloutGroup},
		{AnnotationRolloutGroupOrder, "x", acceptedRolloutGroupOrder},
		{AnnotationRolloutGroupOrder, "1.5", acceptedRolloutGroupOrder},
		{AnnotationRolloutGroupOrder, "", acceptedRolloutGroupOrder},
		{AnnotationRolloutGroupOrder, "99999999999", acceptedRolloutGroupOrder},
		{AnnotationDrainTimeoutSeconds, "0", acceptedDrainTimeout},
		{AnnotationDrainTimeoutSeconds, "-1", acceptedDrainTimeout},
		{AnnotationDrainTimeoutSeconds, "", acceptedDrainTimeout},
		{AnnotationDrainTimeoutSeconds, "10s", acceptedDrainTimeout},
		{AnnotationDrainTimeoutSeconds, "99999999999", acceptedDrainTimeout},
		{AnnotationRolloutLock, "", acceptedRolloutLock},
		{AnnotationRolloutLock, "Cassandra", acceptedRolloutLock},
		{AnnotationRolloutLock, "db.eu", acceptedRolloutLock},
		{AnnotationRolloutLock, "-db", acceptedRolloutLock},
		{AnnotationRolloutLock, strings.Repeat("l", 49), acceptedRolloutLock},
	}
	for _, tc := range tests {
		t.Run(tc.annotation+"="+tc.value, func(t *testing.T) {
			_, err := ParseConfig(annotatedSet(10, map[string]string{tc.annotation: tc.value}))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig error = %v, want a *ConfigError", err)
			}
			want := ConfigError{Annotation: tc.annotation, Value: tc.value, Accepted: tc.accepted}
			if diff := cmp.Diff(want, *ce); diff != "" {
				t.Errorf("ConfigError (-want +got):\n%s", diff)
			}
			// The InvalidConfig event carries this message: it must name the
			// annotation, the value and what would have been accepted.
			msg := err.Error()
			for _, part := range []string{tc.annotation, tc.accepted, `"` + tc.value + `"`} {
				if !strings.Contains(msg, part) {
					t.Errorf("message %q does not contain %q", msg, part)
				}
			}
		})
	}
}

// The first annotation that does not parse is reported, and the others do not
// hide it.
func TestParseConfigReportsFirstError(t *testing.T) {
	_, err := ParseConfig(annotatedSet(3, map[string]string{
		AnnotationMaxUnavailable: "1",
		AnnotationPartition:      "x",
		AnnotationPaused:         "false",
	}))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Annotation != AnnotationPartition {
		t.Fatalf("ParseConfig error = %v, want one for %s", err, AnnotationPartition)
	}
}

func TestEnabled(t *testing.T) {
	tests := []struct {
		annotations map[string]string
		want        bool
	}{
		{nil, false},
		{map[string]string{AnnotationEnabled: "true"}, true},
		{map[string]string{AnnotationEnabled: "TRUE"}, true},
		{map[string]string{AnnotationEnabled: " true "}, true},
		{map[string]string{AnnotationEnabled: "false"}, false},
		{map[string]string{AnnotationEnabled: " False "}, false},
		// Neither true nor false: managed, so that ParseConfig's
		// InvalidConfig reaches the user instead of silence.
		{map[string]string{AnnotationEnabled: "yes"}, true},
		{map[string]string{AnnotationEnabled: ""}, true},
	}
	for _, tc := range tests {
		if got := Enabled(annotatedSet(1, tc.annotations)); got != tc.want {
			t.Errorf("Enabled(%v) = %v, want %v", tc.annotations, got, tc.want)
		}
	}
}

func TestRolloutGroupOf(t *testing.T) {
	tests := []struct {
		annotations map[string]string
		want        string
	}{
		{nil, ""},
		{map[string]string{AnnotationRolloutGroup: "db"}, ""}, // not managed
		{map[string]string{AnnotationEnabled: "true", AnnotationRolloutGroup: " db "}, "db"},
		// An invalid order leaves it in its group, which it then holds.
		{map[string]string{AnnotationEnabled: "true", AnnotationRolloutGroup: "db", AnnotationRolloutGroupOrder: "x"}, "db"},
		{map[string]string{AnnotationEnabled: "true"}, ""},
	}
	for _, tc := range tests {
		if got := RolloutGroupOf(annotatedSet(1, tc.annotations)); got != tc.want {
			t.Errorf("RolloutGroupOf(%v) = %q, want %q", tc.annotations, got, tc.want)
		}
	}
}

func TestReplicasDefault(t *testing.T) {
	sts := annotatedSet(0, nil)
	sts.Spec.Replicas = nil
	if got := Replicas(sts); got != 1 {
		t.Errorf("Replicas(nil) = %d, want 1", got)
	}
}
