package policy

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stsroller/stsroller/pdb"
)

// member is a group member's input: StatefulSet name with pods name-<i> built
// from the compact specs of pods(), in rollout group "db".
func member(name string, annotations map[string]string, specs ...string) Input {
	a := map[string]string{AnnotationRolloutGroup: "db"}
	for k, v := range annotations {
		a[k] = v
	}
	sts := newSet(int32(len(specs)), a)
	sts.Name = name
	ps := pods(specs...)
	for i, p := range ps {
		o, _ := strconv.Atoi(strings.TrimPrefix(p.Name, "web-"))
		_ = i
		p.Name = name + "-" + strconv.Itoa(o)
		p.UID = types.UID(p.Name + "-" + Revision(p))
	}
	cfg, err := ParseConfig(sts)
	return Input{StatefulSet: sts, Config: cfg, ConfigError: err, Pods: ps, Now: t0}
}

func summary(in Input) GroupMember { return MemberOf(in, Compute(in)) }

func TestMemberOf(t *testing.T) {
	tests := []struct {
		name string
		in   Input
		want GroupMember
	}{
		{"up to date", member("a", nil, "n", "n", "n"), GroupMember{Name: "a"}},
		{"outdated, all available", member("a", ann(AnnotationRolloutGroupOrder, "3"), "o", "o", "o"),
			GroupMember{Name: "a", Order: 3, Rolling: true}},
		{"begun", member("a", nil, "o", "o", "n"), GroupMember{Name: "a", Rolling: true, Begun: true}},
		{"broken outdated pod", member("a", nil, "o", "O", "o"), GroupMember{Name: "a", Unavailable: 1, Rolling: true}},
		{"replacement on its way", member("a", nil, "o", "o", "N"),
			GroupMember{Name: "a", Unavailable: 1, InFlight: true, Rolling: true, Begun: true}},
		{"missing pod", member("a", nil, "o", "o", "-"),
			GroupMember{Name: "a", Unavailable: 1, InFlight: true, Rolling: true}},
		{"crashed pod after the rollout", member("a", nil, "n", "N", "n"),
			GroupMember{Name: "a", Unavailable: 1, InFlight: true}},
		{"paused", member("a", ann(AnnotationPaused, "true"), "o", "o"),
			GroupMember{Name: "a", Hold: "it is paused (stsroller.io/paused)"}},
		{"awaiting a deletion", func() Input {
			in := member("a", nil, "o", "o", "o")
			in.Removing = map[types.UID]Method{in.Pods[0].UID: MethodEvict}
			return in
		}(), GroupMember{Name: "a", Unavailable: 1, InFlight: true, Rolling: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, summary(tc.in)); diff != "" {
				t.Errorf("MemberOf (-want +got):\n%s", diff)
			}
		})
	}
	// Invalid and not OnDelete hold the group too.
	in := member("a", ann(AnnotationRolloutGroupOrder, "x"), "o")
	if m := summary(in); !strings.Contains(m.Hold, "invalid") || !strings.Contains(m.Hold, AnnotationRolloutGroupOrder) {
		t.Errorf("invalid member: Hold = %q, want it invalid, naming the annotation", m.Hold)
	}
	in = member("a", nil, "o")
	in.StatefulSet.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
	if m := summary(in); !strings.Contains(m.Hold, ReasonNotOnDelete) {
		t.Errorf("RollingUpdate member: Hold = %q, want it to say %s", m.Hold, ReasonNotOnDelete)
	}
}

func TestDecideGroup(t *testing.T) {
	idle := func(n string) GroupMember { return GroupMember{Name: n} }
	rolling := func(n string, order int32) GroupMember { return GroupMember{Name: n, Order: order, Rolling: true} }
	begun := func(n string, order int32) GroupMember {
		return GroupMember{Name: n, Order: order, Rolling: true, Begun: true}
	}
	broken := func(n string) GroupMember { return GroupMember{Name: n, Unavailable: 1, Rolling: true} }
	inFlight := func(n string) GroupMember { return GroupMember{Name: n, Unavailable: 1, InFlight: true, Rolling: true} }
	held := func(n string) GroupMember { return GroupMember{Name: n, Hold: "it is paused", Rolling: false} }

	type want struct {
		Roller string
		Role   GroupRole
		Held   []string
	}
	tests := []struct {
		name    string
		members []GroupMember
		want    want
		// waiting is a part of the message the others read.
		waiting string
	}{
		{"nothing to roll", []GroupMember{idle("a"), idle("b")}, want{Role: GroupWait}, ""},
		{"by name", []GroupMember{rolling("c", 0), rolling("b", 0), rolling("a", 0)}, want{"a", GroupRoll, nil}, "a rolls first"},
		{"by order, then name", []GroupMember{rolling("a", 2), rolling("c", 1), rolling("b", 1)}, want{"b", GroupRoll, nil}, "rollout-group-order 1"},
		{"negative order first", []GroupMember{rolling("a", 0), rolling("z", -1)}, want{"z", GroupRoll, nil}, "z rolls first"},
		{"begun goes on before a lower order", []GroupMember{rolling("a", 0), begun("b", 5)}, want{"b", GroupRoll, nil}, "its rollout has begun"},
		{"two begun: by order", []GroupMember{begun("b", 1), begun("a", 2)}, want{"b", GroupRoll, nil}, "b rolls first"},
		{"unavailable pods go first", []GroupMember{rolling("a", 0), broken("b"), rolling("c", 0)}, want{"b", GroupRoll, nil}, "b goes first, it has 1 unavailable"},
		{"unavailable but done goes first, others wait for it", []GroupMember{rolling("a", 0), {Name: "b", Unavailable: 1}}, want{"b", GroupRoll, nil}, "b goes first"},
		{"in flight goes on", []GroupMember{rolling("a", 0), inFlight("b")}, want{"b", GroupRoll, nil}, "b rolls"},
		{"in flight before broken: it only repairs", []GroupMember{broken("a"), inFlight("b")}, want{"b", GroupRepair, nil}, "b repairs"},
		{"two in flight: none", []GroupMember{inFlight("a"), inFlight("b"), rolling("c", 0)}, want{Role: GroupWait}, "a (1 unavailable), b (1 unavailable) have replacements"},
		{"two broken: the first repairs", []GroupMember{broken("b"), broken("a"), rolling("c", 0)}, want{"a", GroupRepair, nil}, "a repairs its unhealthy pods first; b (1 unavailable)"},
		{"two broken: order decides", []GroupMember{{Name: "a", Order: 2, Unavailable: 1, Rolling: true}, {Name: "b", Order: 1, Unavailable: 2, Rolling: true}}, want{"b", GroupRepair, nil}, "b repairs"},
		// Issue 15, item 13: a member that has not begun and cannot go on
		// does not keep the others waiting.
		{"blocked and not begun: the next member rolls", []GroupMember{{Name: "a", Rolling: true, Blocked: true}, rolling("b", 1)}, want{"b", GroupRoll, nil}, "a is blocked and has not begun"},
		{"all blocked: by order", []GroupMember{{Name: "b", Rolling: true, Blocked: true}, {Name: "a", Rolling: true, Blocked: true}}, want{"a", GroupRoll, nil}, "a rolls first"},
		{"blocked but begun goes on", []GroupMember{{Name: "a", Order: 5, Rolling: true, Blocked: true, Begun: true}, rolling("b", 1)}, want{"a", GroupRoll, nil}, "its rollout has begun"},
		{"a held member holds the group", []GroupMember{held("b"), broken("a"), inFlight("c")}, want{Role: GroupWait, Held: []string{"b"}}, `held by b: it is paused`},
		{"two held", []GroupMember{held("b"), held("a")}, want{Role: GroupWait, Held: []string{"a", "b"}}, "held by a: it is paused; b: it is paused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := DecideGroup("db", tc.members)
			got := want{d.Roller, d.Role, d.Held}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DecideGroup (-want +got):\n%s", diff)
			}
			if !strings.Contains(d.Waiting, tc.waiting) {
				t.Errorf("waiting message %q does not contain %q", d.Waiting, tc.waiting)
			}
			// Whatever the state, at most one member may delete, and
			// never one while another has replacements on their way.
			n := 0
			for _, m := range tc.members {
				if v := d.View(m.Name); v.Role != GroupWait {
					n++
					for _, o := range tc.members {
						if o.Name != m.Name && o.InFlight {
							t.Errorf("%s may delete while %s has replacements on their way", m.Name, o.Name)
						}
						if o.Name != m.Name && o.Unavailable > 0 && v.Role == GroupRoll {
							t.Errorf("%s may evict while %s has unavailable pods", m.Name, o.Name)
						}
					}
				}
			}
			if n > 1 {
				t.Errorf("%d members may delete", n)
			}
		})
	}
}

// ComputeInGroup over real member inputs: the whole decision from pods to
// deletions and the status each member writes.
func TestComputeInGroup(t *testing.T) {
	type row struct {
		name    string
		members []Input
		// want maps a member to its deletions and status reason.
		want map[string]groupOutcome
		// message is a part of each waiting member's message.
		message string
	}
	tests := []row{
		{
			name:    "the member with a broken pod first; the others wait for it",
			members: []Input{member("a", nil, "o", "o"), member("b", nil, "o", "O"), member("c", nil, "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonWaitingForGroup},
				"b": {Deletions: []deletion{del("b-1")}, Reason: ReasonDeletingPods},
				"c": {Reason: ReasonWaitingForGroup},
			},
			message: `rollout group "db": b goes first, it has 1 unavailable pod(s)`,
		},
		{
			name:    "all available: lowest order rolls",
			members: []Input{member("a", ann(AnnotationRolloutGroupOrder, "2"), "o", "o"), member("b", ann(AnnotationRolloutGroupOrder, "1"), "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonWaitingForGroup},
				"b": {Deletions: []deletion{evict("b-1")}, Reason: ReasonDeletingPods},
			},
			message: "b rolls first",
		},
		{
			name:    "the rolling member waits for its replacement, the others for it",
			members: []Input{member("a", nil, "o", "N"), member("b", nil, "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonWaitingForAvailability},
				"b": {Reason: ReasonWaitingForGroup},
			},
			message: "a rolls",
		},
		{
			name:    "a done member with a crashed pod holds back the next",
			members: []Input{member("a", nil, "n", "N"), member("b", nil, "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonUpToDate},
				"b": {Reason: ReasonWaitingForGroup},
			},
			message: "a rolls",
		},
		{
			name:    "two broken members: the first repairs only, the other waits",
			members: []Input{member("a", ann(AnnotationMaxUnavailable, "2"), "o", "o", "O"), member("b", nil, "O", "o")},
			want: map[string]groupOutcome{
				"a": {Deletions: []deletion{del("a-2")}, Reason: ReasonDeletingPods},
				"b": {Reason: ReasonWaitingForGroup},
			},
			message: "a repairs its unhealthy pods first",
		},
		{
			name:    "a paused member holds the group and says so",
			members: []Input{member("a", nil, "o", "O"), member("b", ann(AnnotationPaused, "true"), "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonWaitingForGroup},
				"b": {Reason: ReasonPaused},
			},
			message: `rollout group "db" is held by b: it is paused`,
		},
		{
			name:    "an invalid member holds the group",
			members: []Input{member("a", nil, "o", "o"), member("b", ann(AnnotationMaxUnavailable, "0"), "o", "o")},
			want: map[string]groupOutcome{
				"a": {Reason: ReasonWaitingForGroup},
				"b": {Reason: ReasonInvalidConfig},
			},
			message: "is held by b: it is invalid (InvalidConfig",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms := make([]GroupMember, len(tc.members))
			for i, in := range tc.members {
				ms[i] = summary(in)
			}
			d := DecideGroup("db", ms)
			got := map[string]groupOutcome{}
			for _, in := range tc.members {
				v := d.View(in.StatefulSet.Name)
				p := ComputeInGroup(in, v)
				got[in.StatefulSet.Name] = groupOutcome{deletionsOf(p), p.Status.Reason}
				if p.Status.Reason == ReasonWaitingForGroup {
					if p.Status.Phase != PhaseRolling || !strings.Contains(p.Status.Message, tc.message) {
						t.Errorf("%s: status %s/%s %q, want Rolling with a message containing %q",
							in.StatefulSet.Name, p.Status.Phase, p.Status.Reason, p.Status.Message, tc.message)
					}
					if p.Status.LastProgressTime != nil {
						t.Errorf("%s waits for its group but its progress deadline runs", in.StatefulSet.Name)
					}
				}
				if v.Holds && !strings.Contains(p.Status.Message, `holds rollout group "db"`) {
					t.Errorf("%s holds the group but its message does not say so: %q", in.StatefulSet.Name, p.Status.Message)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

type groupOutcome struct {
	Deletions []deletion
	Reason    string
}

// A member that waits for its group does not stall: after an hour of waiting
// its status is still Rolling/WaitingForGroup, not Stalled.
func TestWaitingForGroupDoesNotStall(t *testing.T) {
	in := member("b", nil, "o", "o")
	v := &GroupView{Name: "db", Role: GroupWait, Roller: "a", Message: "waiting for a"}
	p := ComputeInGroup(in, v)
	for range 3 {
		in.Previous = &p.Status
		in.Now = in.Now.Add(time.Hour)
		p = ComputeInGroup(in, v)
	}
	if p.Status.Phase != PhaseRolling || p.Status.Reason != ReasonWaitingForGroup {
		t.Errorf("after 3h of waiting: %s/%s, want %s/%s", p.Status.Phase, p.Status.Reason, PhaseRolling, ReasonWaitingForGroup)
	}
	if !p.Status.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("last transition %v, want the first wait at %v", p.Status.LastTransitionTime, t0)
	}
}

// A roller that cannot go on says that the group waits for it.
func TestComputeInGroupBlockedRollerSaysItHolds(t *testing.T) {
	in := member("a", nil, "o", "o")
	in.Budgets = budgetOver(in.Pods, pdb.Budget{Name: "a", Allowed: 0})
	p := ComputeInGroup(in, &GroupView{Name: "db", Role: GroupRoll, Roller: "a"})
	if p.Status.Phase != PhaseBlocked || !strings.Contains(p.Status.Message, `this rolls first in rollout group "db"`) {
		t.Errorf("status %s/%s %q, want Blocked saying it holds group db", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
}
