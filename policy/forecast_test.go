package policy

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/stsroller/stsroller/pdb"
)

// fcStep is what the tests compare of a step: who, which pods, when.
type fcStep struct {
	StatefulSet string
	At          time.Duration
	Pods        []string
}

func stepsOf(fc Forecast) []fcStep {
	var out []fcStep
	for _, s := range fc.Steps {
		st := fcStep{StatefulSet: s.StatefulSet, At: s.At}
		for _, p := range s.Pods {
			st.Pods = append(st.Pods, p.Pod)
		}
		out = append(out, st)
	}
	return out
}

var timing = ForecastTiming{Terminate: time.Second, Ready: 9 * time.Second}

func forecastOf(group string, ins ...Input) Forecast {
	fi := ForecastInput{Group: group, Members: ins, Timing: map[string]ForecastTiming{}, Now: t0}
	for _, in := range ins {
		fi.Timing[in.StatefulSet.Name] = timing
	}
	return RunForecast(fi)
}

func TestForecast(t *testing.T) {
	s := time.Second
	tests := []struct {
		name     string
		group    string
		members  []Input
		want     []fcStep
		total    time.Duration
		complete bool
		// then is a part of some step's Then, or of a blocked member's message.
		then string
	}{
		{
			name:    "one at a time, highest ordinal first",
			members: []Input{member("a", nil, "o", "o", "o")},
			want: []fcStep{
				{"a", 0, []string{"a-2"}}, {"a", 10 * s, []string{"a-1"}}, {"a", 20 * s, []string{"a-0"}},
			},
			total: 30 * s, complete: true, then: "WaitingForAvailability",
		},
		{
			name: "batches of two, the broken pod first, the leader last",
			members: []Input{func() Input {
				in := member("a", ann(AnnotationMaxUnavailable, "2"), "o", "O", "o", "o")
				leader(in.Pods[3])
				return in
			}()},
			want: []fcStep{
				// The leader a-3 goes alone, once a-0's replacement is
				// Ready (issue 15, bug 2).
				{"a", 0, []string{"a-1", "a-2"}}, {"a", 10 * s, []string{"a-0"}}, {"a", 20 * s, []string{"a-3"}},
			},
			total: 30 * s, complete: true,
		},
		{
			name:    "partition keeps the lowest ordinals",
			members: []Input{member("a", ann(AnnotationPartition, "2", AnnotationMaxUnavailable, "3"), "o", "o", "o", "o")},
			want:    []fcStep{{"a", 0, []string{"a-3", "a-2"}}},
			total:   10 * s, complete: true,
		},
		{
			name: "a budget allowing one at a time",
			members: []Input{func() Input {
				in := member("a", ann(AnnotationMaxUnavailable, "3"), "o", "o", "o")
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "db", Allowed: 1})
				return in
			}()},
			want:  []fcStep{{"a", 0, []string{"a-2"}}, {"a", 10 * s, []string{"a-1"}}, {"a", 20 * s, []string{"a-0"}}},
			total: 30 * s, complete: true, then: "PodDisruptionBudget db allows no more disruptions",
		},
		{
			name: "a stale budget blocks",
			members: []Input{func() Input {
				in := member("a", nil, "o", "o")
				in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "db", Stale: true})
				return in
			}()},
			want: nil, total: 0, complete: false, then: "status not yet observed",
		},
		{
			name:    "minReadySeconds adds to every step",
			members: []Input{func() Input { in := member("a", nil, "o", "o"); in.StatefulSet.Spec.MinReadySeconds = 5; return in }()},
			want:    []fcStep{{"a", 0, []string{"a-1"}}, {"a", 15 * s, []string{"a-0"}}},
			total:   30 * s, complete: true,
		},
		{
			name:  "a group: the broken member first, then by order, then name",
			group: "db",
			members: []Input{
				member("a", ann(AnnotationRolloutGroupOrder, "1"), "o", "o"),
				member("b", ann(AnnotationRolloutGroupOrder, "1"), "o", "o"),
				member("c", ann(AnnotationRolloutGroupOrder, "0"), "o", "o"),
				member("z", ann(AnnotationRolloutGroupOrder, "5"), "O", "o"),
			},
			want: []fcStep{
				{"z", 0, []string{"z-0"}}, {"z", 10 * s, []string{"z-1"}},
				{"c", 20 * s, []string{"c-1"}}, {"c", 30 * s, []string{"c-0"}},
				{"a", 40 * s, []string{"a-1"}}, {"a", 50 * s, []string{"a-0"}},
				{"b", 60 * s, []string{"b-1"}}, {"b", 70 * s, []string{"b-0"}},
			},
			total: 80 * s, complete: true,
		},
		{
			name:    "a paused member holds the group",
			group:   "db",
			members: []Input{member("a", nil, "o"), member("b", ann(AnnotationPaused, "true"), "o")},
			want:    nil, total: 0, complete: false, then: `rollout group "db" is held by b`,
		},
		{
			name:    "missing and terminating pods come back first",
			members: []Input{func() Input { in := member("a", nil, "o", "o", "-"); terminating(in.Pods[1]); return in }()},
			// a-1, deleted a second ago, is gone now; both are back
			// and Ready 9s later.
			want:  []fcStep{{"a", 9 * s, []string{"a-0"}}},
			total: 19 * s, complete: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fc := forecastOf(tc.group, tc.members...)
			if diff := cmp.Diff(tc.want, stepsOf(fc)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if fc.Total != tc.total || fc.Complete != tc.complete {
				t.Errorf("total %v complete %v, want %v %v", fc.Total, fc.Complete, tc.total, tc.complete)
			}
			var words []string
			for _, s := range fc.Steps {
				words = append(words, s.Then)
				if s.Duration <= 0 && s.At < fc.Total {
					t.Errorf("step at %v lasts %v", s.At, s.Duration)
				}
			}
			for _, b := range fc.Blocked {
				words = append(words, b.Reason+": "+b.Message)
			}
			if !strings.Contains(strings.Join(words, "\n"), tc.then) {
				t.Errorf("no step nor block says %q:\n%s", tc.then, strings.Join(words, "\n"))
			}
			// The forecast changes nothing it was given.
			for _, in := range tc.members {
				for _, p := range in.Pods {
					if p.Labels[forecastLabel] != "" {
						t.Errorf("input pod %s was changed", p.Name)
					}
				}
			}
		})
	}
}

// The group forecast never has two members' batches overlap: a member's
// first batch goes only after the previous member is done.
func TestForecastGroupMembersDoNotOverlap(t *testing.T) {
	fc := forecastOf("db",
		member("a", ann(AnnotationMaxUnavailable, "2"), "o", "o", "o", "o", "o"),
		member("b", nil, "o", "O", "o"),
		member("c", ann(AnnotationMaxUnavailable, "50%"), "o", "o", "o", "o"))
	if !fc.Complete {
		t.Fatalf("not complete: %+v", fc.Blocked)
	}
	for i, m := range fc.Members {
		for _, o := range fc.Members[i+1:] {
			if o.Start < m.End {
				t.Errorf("%s starts at %v before %s is done at %v", o.Name, o.Start, m.Name, m.End)
			}
		}
	}
	if got := []string{fc.Members[0].Name, fc.Members[1].Name, fc.Members[2].Name}; !cmp.Equal(got, []string{"b", "a", "c"}) {
		t.Errorf("members in order %v, want b (broken) then a, c", got)
	}
}

// TestForecastDrain: the forecast plays the handshake (issue 15, item 10): a
// request is not the removal; the pod goes when it answers (ForecastTiming.
// Drain) or, answering never, at the timeout. A request already made runs
// from its own time.
func TestForecastDrain(t *testing.T) {
	s := time.Second
	drain := ann(AnnotationDrainTimeoutSeconds, "300")
	for _, tc := range []struct {
		name   string
		answer time.Duration
		in     func() Input
		want   []fcStep
		total  time.Duration
	}{{
		name:  "nobody answers: each pod goes at the timeout",
		in:    func() Input { return member("a", drain, "o", "o", "o") },
		want:  []fcStep{{"a", 0, []string{"a-2"}}, {"a", 300 * s, []string{"a-2"}}, {"a", 310 * s, []string{"a-1"}}, {"a", 610 * s, []string{"a-1"}}, {"a", 620 * s, []string{"a-0"}}, {"a", 920 * s, []string{"a-0"}}},
		total: 930 * s,
	}, {
		name:   "each answers in 5 s",
		answer: 5 * s,
		in:     func() Input { return member("a", drain, "o", "o", "o") },
		want:   []fcStep{{"a", 0, []string{"a-2"}}, {"a", 5 * s, []string{"a-2"}}, {"a", 15 * s, []string{"a-1"}}, {"a", 20 * s, []string{"a-1"}}, {"a", 30 * s, []string{"a-0"}}, {"a", 35 * s, []string{"a-0"}}},
		total:  45 * s,
	}, {
		name: "a request made 100 s ago, unanswered, goes at its timeout",
		in: func() Input {
			in := member("a", drain, "n", "o")
			annotate(in.Pods[1], AnnotationDrainRequested, t0.Add(-100*s).Format(time.RFC3339Nano))
			annotate(in.Pods[1], AnnotationDrainRevision, in.StatefulSet.Status.UpdateRevision)
			return in
		},
		want:  []fcStep{{"a", 200 * s, []string{"a-1"}}},
		total: 210 * s,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			fc := RunForecast(ForecastInput{Members: []Input{in}, Now: t0, Timing: map[string]ForecastTiming{
				"a": {Terminate: timing.Terminate, Ready: timing.Ready, Drain: tc.answer}}})
			if diff := cmp.Diff(tc.want, stepsOf(fc)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if fc.Total != tc.total || !fc.Complete {
				t.Errorf("total %s complete %v, want %s true", fc.Total, fc.Complete, tc.total)
			}
		})
	}
}

// The forecast's memory is bounded however far spec.replicas is from the pods
// that exist (issue 15, item 11): beyond maxForecastMissing pods to make up,
// it says so instead of playing them.
func TestForecastHugeReplicas(t *testing.T) {
	in := member("a", nil, "o", "o", "o")
	in.StatefulSet.Spec.Replicas = ptrInt32(2147483647)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fc := forecastOf("", in)
	runtime.ReadMemStats(&after)
	if fc.Complete || len(fc.Blocked) != 1 || fc.Blocked[0].Reason != "TooManyMissingPods" {
		t.Fatalf("forecast %+v, want blocked with TooManyMissingPods", fc)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("the forecast allocated %d bytes for 3 pods", grew)
	}
	// Within the bound it plays the missing pods.
	in.StatefulSet.Spec.Replicas = ptrInt32(3 + maxForecastMissing)
	if fc := forecastOf("", in); len(fc.Blocked) != 0 {
		t.Errorf("forecast blocked at %d missing pods: %+v", maxForecastMissing, fc.Blocked)
	}
}

func ptrInt32(v int32) *int32 { return &v }

// TestForecastHealthGate: with a health query the forecast assumes it holds
// from now on, and each step waits stable-seconds after the one before (and
// the first, after the query began to hold).
func TestForecastHealthGate(t *testing.T) {
	s := time.Second
	gated := ann(AnnotationHealthQuery, "min(up) > 0", AnnotationHealthStableSeconds, "30", AnnotationMaxUnavailable, "1")
	for _, tc := range []struct {
		name   string
		health HealthState
		want   []fcStep
		total  time.Duration
	}{{
		name:   "held for long",
		health: HealthState{Checked: true, Healthy: true, HealthySince: t0.Add(-time.Hour)},
		want:   []fcStep{{"a", 0, []string{"a-2"}}, {"a", 30 * s, []string{"a-1"}}, {"a", 60 * s, []string{"a-0"}}},
		total:  70 * s,
	}, {
		name:   "unhealthy now: assumed to hold from now",
		health: HealthState{Checked: true, UnhealthySince: t0.Add(-time.Minute), Value: "0"},
		want:   []fcStep{{"a", 30 * s, []string{"a-2"}}, {"a", 60 * s, []string{"a-1"}}, {"a", 90 * s, []string{"a-0"}}},
		total:  100 * s,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := member("a", gated, "o", "o", "o")
			in.Health = tc.health
			fc := RunForecast(ForecastInput{Members: []Input{in}, Now: t0, Timing: map[string]ForecastTiming{"a": timing}})
			if diff := cmp.Diff(tc.want, stepsOf(fc)); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			if fc.Total != tc.total || !fc.Complete {
				t.Errorf("total %s complete %v, want %s true", fc.Total, fc.Complete, tc.total)
			}
		})
	}
}
