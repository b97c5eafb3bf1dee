package policy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// The group simulation runs three StatefulSets of one rollout group, each
// modelled by its own sim (see simulation_test.go), through one rollout at
// once. Every step the group decision is made from the three members as the
// controller shell makes it (MemberOf of each member's plan alone, then
// DecideGroup), each member plans with ComputeInGroup, and the plans are
// applied. Besides every single-StatefulSet invariant of check, after every
// step: at most one member of the group has pods deleted by us whose
// replacement is not yet available, and no member evicts a healthy pod while
// another has a pod unavailable. Pods crash at random while the chaos
// lasts (health flips), and some members start with broken pods.

// groupSim is one simulated group.
type groupSim struct {
	names []string
	sims  []*sim
	// ours[i] maps an ordinal of member i to the UID of the pod we deleted
	// there, until a replacement is available.
	ours []map[int]types.UID
}

func newGroupSim(rng *rand.Rand, seed uint64) *groupSim {
	g := &groupSim{names: []string{"zone-a", "zone-b", "zone-c"}}
	chaos := 20 * rng.IntN(3)
	for i := range g.names {
		cfg := randomSimConfig(rng)
		// A broken revision never completes, and would hold the group
		// forever, as it should; new revisions mid-rollout are left to
		// the single-StatefulSet simulation, and so are scale changes.
		cfg.broken, cfg.rollbackAt, cfg.revisionEvery, cfg.deadlineSeconds = false, 0, 0, 600
		cfg.resize = false
		cfg.replicas = 1 + rng.IntN(8)
		if cfg.partition > cfg.replicas {
			cfg.partition = cfg.replicas
		}
		if cfg.pdbMinAvailable >= cfg.replicas {
			cfg.pdbMinAvailable = rng.IntN(cfg.replicas)
		}
		cfg.chaosSteps = chaos
		s := newSim(cfg, seed*3+uint64(i))
		// Some members start with broken pods, at the old revision,
		// broken until replaced. (A broken pod a partition keeps would
		// hold the group until it recovers: not this test's subject.)
		for _, p := range s.pods {
			if cfg.partition == 0 && rng.IntN(6) == 0 {
				p.ready = false
				p.crashedFor = 1 << 30
			}
		}
		s.pdbAllowed = s.disruptionsAllowed()
		s.pdbNext = s.pdbAllowed
		g.sims = append(g.sims, s)
		g.ours = append(g.ours, map[int]types.UID{})
	}
	return g
}

func (g *groupSim) String() string {
	var parts []string
	for i, s := range g.sims {
		parts = append(parts, g.names[i]+": "+s.cfg.String())
	}
	return strings.Join(parts, "\n  ")
}

func (g *groupSim) run(t *testing.T, seed uint64) {
	t.Helper()
	bound := 0
	for _, s := range g.sims {
		bound += s.stepBound()
	}
	var log []string
	settled := 0
	for step := 0; step < bound; step++ {
		ins := make([]Input, len(g.sims))
		ms := make([]GroupMember, len(g.sims))
		for i, s := range g.sims {
			s.step = step
			ins[i] = s.input()
			ms[i] = MemberOf(ins[i], Compute(ins[i]))
			ms[i].Name = g.names[i]
		}
		d := DecideGroup("db", ms)
		var line []string
		done := true
		for i, s := range g.sims {
			before := s.describe()
			view := d.View(g.names[i])
			s.groupRole = view.Role
			plan := ComputeInGroup(ins[i], view)
			s.check(ins[i], plan)
			// Quorum: no healthy pod is evicted while another member
			// has a pod unavailable (the model's own view).
			for _, x := range plan.Deletions {
				if x.Method != MethodEvict {
					continue
				}
				for j, o := range g.sims {
					for _, p := range o.pods {
						if j != i && !o.available(p) {
							s.errs = append(s.errs, fmt.Sprintf("evicted %s while %s has a pod unavailable", x.Pod.Name, g.names[j]))
							break
						}
					}
				}
			}
			uids := map[string]types.UID{}
			for _, p := range s.pods {
				if p != nil && p.terminating == 0 {
					uids[p.name] = p.uid
				}
			}
			s.apply(plan)
			for o, p := range s.pods {
				if p != nil && p.terminating > 0 {
					if uid, ok := uids[p.name]; ok && uid == p.uid {
						g.ours[i][o] = p.uid // deleted by this plan
					}
				}
			}
			s.prev = &plan.Status
			if !s.done(plan) {
				done = false
			}
			var dels []string
			for _, x := range plan.Deletions {
				dels = append(dels, x.Pod.Name+":"+string(x.Method))
			}
			line = append(line, fmt.Sprintf("%s [%s] %s/%s %v", g.names[i], strings.TrimSpace(before), plan.Status.Reason, d.View(g.names[i]).Role, dels))
			if len(s.errs) > 0 {
				t.Fatalf("seed %d\n  %s\nstep %d, %s broke an invariant:\n  %s\nlast steps:\n%s",
					seed, g, step, g.names[i], strings.Join(s.errs, "\n  "), strings.Join(append(log, strings.Join(line, " | ")), "\n"))
			}
		}
		log = append(log, fmt.Sprintf("  %3d %s", step, strings.Join(line, " | ")))
		if len(log) > 15 {
			log = log[1:]
		}
		// The group's invariant, after the plans are applied.
		var busy []string
		for i := range g.sims {
			if len(g.ours[i]) > 0 {
				busy = append(busy, g.names[i])
			}
		}
		if len(busy) > 1 {
			t.Fatalf("seed %d\n  %s\nstep %d: %v all have pods deleted by us in flight\nlast steps:\n%s",
				seed, g, step, busy, strings.Join(log, "\n"))
		}
		if done {
			settled++
			if settled == 5 {
				return
			}
		} else {
			settled = 0
		}
		for i, s := range g.sims {
			s.advance()
			// Broken pods stay broken until replaced; the chaos
			// crashes others for a while.
			for o, uid := range g.ours[i] {
				if p := s.pods[o]; p != nil && p.uid != uid && p.terminating == 0 && s.available(p) {
					delete(g.ours[i], o)
				}
			}
		}
	}
	t.Fatalf("seed %d\n  %s\nthe group's rollout did not finish in %d steps\nlast steps:\n%s", seed, g, bound, strings.Join(log, "\n"))
}

// TestSimulatedGroupRollouts runs seeded rollouts of groups of three.
func TestSimulatedGroupRollouts(t *testing.T) {
	seeds := 150
	if testing.Short() {
		seeds = 30
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			newGroupSim(rand.New(rand.NewPCG(seed, 0x6772)), seed).run(t, seed)
		})
	}
}
