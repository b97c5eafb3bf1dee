package policy

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/pdb"
)

// fuzzPod is one pod as a fuzz input describes it.
type fuzzPod struct {
	missing, terminating, updated bool
	// removing: terminating because we removed it, though the informer
	// still shows it alive (Input.Removing).
	removing                bool
	running, ready          bool
	leader                  bool
	inA, inB                bool // selected by budget A, budget B
	propagated, unreachable bool
	readyFor                time.Duration
}

// fuzzCase is a planner input decoded from fuzz bytes, with the facts the
// invariants need kept apart from the Kubernetes objects.
type fuzzCase struct {
	replicas, maxU, partition int
	maxUnavailable            string
	start                     int
	minReady                  time.Duration
	dns, awaiting             bool
	budgets                   [2]pdb.Budget
	pods                      []fuzzPod
}

// decodeFuzz turns bytes into a case; missing bytes read as zero.
//
//	0 replicas 1..24     1 max-unavailable: 1..8, or with bit 7 a percentage
//	2 partition          3, 4 budget A, B: allowed 0..4, bit 3 stale
//	5 flags: bit 0 awaiting deletions, bits 1-2 minReadySeconds/10,
//	  bit 3 DNS gate, bit 4 ordinals start at 3, bit 5 a pod beyond replicas
//	then two bytes a pod: kind (bits 0-2: outdated Ready, outdated not
//	Ready, updated Ready, updated not Ready, terminating, terminating
//	updated, missing, Pending), bit 3 leader, bits 4-5 selected by budget
//	A, B, bit 6 not in DNS, bits 6-7 DNS server unreachable; seconds since
//	Ready.
func decodeFuzz(data []byte) fuzzCase {
	at := func(i int) byte {
		if i < len(data) {
			return data[i]
		}
		return 0
	}
	c := fuzzCase{replicas: 1 + int(at(0))%24}
	if b := at(1); b&0x80 != 0 {
		pct := 1 + int(b&0x7f)%100
		c.maxUnavailable = strconv.Itoa(pct) + "%"
		c.maxU = max(1, c.replicas*pct/100)
	} else {
		c.maxU = 1 + int(b)%8
		c.maxUnavailable = strconv.Itoa(c.maxU)
	}
	c.partition = int(at(2)) % (c.replicas + 2)
	for i := range c.budgets {
		b := at(3 + i)
		c.budgets[i] = pdb.Headroom(&policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("budget-%c", 'a'+i), Generation: 1 + int64(b>>3&1)},
			Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: int32(b&7) % 5},
		})
	}
	flags := at(5)
	c.awaiting = flags&1 != 0

	c.minReady = time.Duration(flags>>1&3) * 10 * time.Second
	c.dns = flags&8 != 0
	if flags&16 != 0 {
		c.start = 3
	}
	n := c.replicas
	if flags&32 != 0 {
		n++ // a pod past the last ordinal, left from a scale-down
	}
	for i := range n {
		k, f := at(6+2*i), at(7+2*i)
		p := fuzzPod{
			running:     true,
			leader:      k&8 != 0,
			inA:         k&16 != 0,
			inB:         k&32 != 0,
			propagated:  k&64 == 0,
			unreachable: k&192 == 192,
			readyFor:    time.Duration(f) * time.Second,
		}
		switch k & 7 {
		case 0:
			p.ready = true
		case 1:
		case 2:
			p.updated, p.ready = true, true
		case 3:
			p.updated = true
		case 4:
			p.terminating, p.ready = true, true
		case 5:
			p.terminating, p.updated = true, true
		case 6:
			p.missing = true
		case 7:
			p.running = false
		}
		c.pods = append(c.pods, p)
	}
	// Awaiting: the first live pod was removed by us, unobserved.
	for i := range c.pods {
		if p := &c.pods[i]; c.awaiting && !p.missing && !p.terminating {
			p.terminating, p.removing = true, true
			break
		}
	}
	return c
}

func (c fuzzCase) name(i int) string { return "web-" + strconv.Itoa(c.start+i) }

// inRange: the pod's ordinal is one the StatefulSet has.
func (c fuzzCase) inRange(i int) bool { return i < c.replicas }

func (c fuzzCase) available(p fuzzPod) bool {
	return !p.missing && !p.terminating && p.running && p.ready &&
		(c.minReady == 0 || p.readyFor >= c.minReady) &&
		(!c.dns || p.propagated && !p.unreachable)
}

func (c fuzzCase) input() Input {
	a := map[string]string{
		AnnotationEnabled:        "true",
		AnnotationMaxUnavailable: c.maxUnavailable,
		AnnotationPartition:      strconv.Itoa(c.partition),
	}
	if c.dns {
		a[AnnotationDNSDomain] = "web.example.com"
	}
	sts := newSet(int32(c.replicas), a)
	sts.Spec.MinReadySeconds = int32(c.minReady / time.Second)
	if c.start != 0 {
		sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: int32(c.start)}
	}
	cfg, err := ParseConfig(sts)
	in := Input{
		StatefulSet: sts,
		Config:      cfg,
		ConfigError: err,
		Budgets:     map[string][]pdb.Budget{},
		DNS:         map[string]DNSState{},
		Now:         t0,
	}
	for i, fp := range c.pods {
		if fp.missing {
			continue
		}
		rev := oldRev
		if fp.updated {
			rev = newRev
		}
		p := newPod(c.start+i, rev, readyFor(fp.readyFor))
		p.UID = types.UID(fmt.Sprintf("uid-%d", i))
		if !fp.ready {
			notReady(p)
		}
		if !fp.running {
			pending(p)
		}
		if fp.terminating && !fp.removing {
			terminating(p)
		}
		if fp.removing {
			in.Removing = map[types.UID]Method{p.UID: MethodDelete}
		}
		if fp.leader {
			leader(p)
		}
		if fp.inA {
			in.Budgets[p.Name] = append(in.Budgets[p.Name], c.budgets[0])
		}
		if fp.inB {
			in.Budgets[p.Name] = append(in.Budgets[p.Name], c.budgets[1])
		}
		in.DNS[p.Name] = DNSState{Propagated: fp.propagated, Unreachable: fp.unreachable}
		in.Pods = append(in.Pods, p)
	}
	return in
}

// checkPlan checks the single-step invariants (a)-(e) of the simulation, and
// the guards, against the case's own facts.
func checkPlan(t *testing.T, c fuzzCase, plan Plan) {
	t.Helper()
	target := max(c.replicas-c.partition, 0)
	index := map[string]int{}
	for i := range c.pods {
		index[c.name(i)] = i
	}
	unavailable, inFlight, coming := 0, 0, 0
	twoBudgets, dnsUnreachable := false, false
	var unhealthyOutdated []int
	nonLeaderOutdated := 0
	for i, p := range c.pods {
		if !c.inRange(i) {
			continue
		}
		if !c.available(p) {
			unavailable++
		}
		if p.missing || p.terminating || p.updated {
			coming++
		}
		if p.missing || p.terminating || p.updated && !c.available(p) {
			inFlight++
		}
		if p.missing {
			continue
		}
		twoBudgets = twoBudgets || p.inA && p.inB
		if p.terminating {
			continue
		}
		dnsUnreachable = dnsUnreachable || c.dns && p.unreachable
		if !p.updated && !(p.running && p.ready) {
			unhealthyOutdated = append(unhealthyOutdated, i)
		}
		if !p.updated && !p.leader {
			nonLeaderOutdated++
		}
	}

	chosen := map[int]bool{}
	deletes, evictions, evictedAvailable := 0, 0, 0
	evictedFrom := [2]int{}
	lowestDeleted := len(c.pods)
	for _, d := range plan.Deletions {
		i, ok := index[d.Pod.Name]
		if !ok || !c.inRange(i) {
			t.Fatalf("deleted %s, not a pod of the StatefulSet's ordinals", d.Pod.Name)
		}
		p := c.pods[i]
		if chosen[i] || p.missing || p.terminating || p.updated {
			t.Fatalf("deleted %s: twice, missing, terminating or updated (%+v)", d.Pod.Name, p)
		}
		chosen[i] = true
		healthy := p.running && p.ready
		switch d.Method {
		case MethodDelete:
			if healthy {
				t.Fatalf("(a) %s is Ready but deleted without eviction", d.Pod.Name)
			}
			if evictions > 0 {
				t.Fatalf("(c) unhealthy %s deleted after an eviction", d.Pod.Name)
			}
			deletes++
			lowestDeleted = min(lowestDeleted, i)
		case MethodEvict:
			if !healthy {
				t.Fatalf("%s is not Ready but evicted", d.Pod.Name)
			}
			if p.leader && nonLeaderOutdated > 0 {
				t.Fatalf("(d) leader %s evicted with %d other outdated pods", d.Pod.Name, nonLeaderOutdated)
			}
			evictions++
			if c.available(p) {
				evictedAvailable++
			}
			if p.inA {
				evictedFrom[0]++
			}
			if p.inB {
				evictedFrom[1]++
			}
		default:
			t.Fatalf("unknown method %q", d.Method)
		}
	}
	// A removal of ours not yet observed counts as terminating (above); the
	// eviction guards (two budgets over a pod, a DNS server that cannot be
	// asked) stop evictions only: unhealthy pods cost no availability and
	// no budget.
	if evictions > 0 && (twoBudgets || dnsUnreachable) {
		t.Fatalf("evictions despite a guard: two budgets %v, DNS unreachable %v", twoBudgets, dnsUnreachable)
	}
	// (a)
	if evictions > 0 && (unavailable >= c.maxU || unavailable+evictedAvailable > c.maxU) {
		t.Fatalf("(a) evicted %d (%d available) with %d unavailable, max-unavailable %d", evictions, evictedAvailable, unavailable, c.maxU)
	}
	// (b)
	for i, b := range c.budgets {
		allowed := int(b.Allowed)
		if b.Stale {
			allowed = 0
		}
		if evictedFrom[i] > allowed {
			t.Fatalf("(b) evicted %d pods of %s, which allows %d", evictedFrom[i], b.Name, allowed)
		}
	}
	// (c)
	if deletes > 0 && inFlight+deletes > c.maxU {
		t.Fatalf("(c) deleted %d unhealthy pods with %d in flight, max-unavailable %d", deletes, inFlight, c.maxU)
	}
	for _, i := range unhealthyOutdated {
		if evictions > 0 && !chosen[i] {
			t.Fatalf("(c) evicted healthy pods but passed over unhealthy %s", c.name(i))
		}
		if !chosen[i] && i > lowestDeleted {
			t.Fatalf("ties: unhealthy %s passed over for %s", c.name(i), c.name(lowestDeleted))
		}
	}
	// (e)
	if len(plan.Deletions) > 0 && coming+len(plan.Deletions) > target {
		t.Fatalf("(e) %d pods at or coming to the update revision plus %d deletions, replicas - partition %d",
			coming, len(plan.Deletions), target)
	}
}

func FuzzPlan(f *testing.F) {
	// replicas, max-unavailable, partition, budget A, budget B, flags, pods.
	f.Add([]byte{2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	// Unhealthy first, leader last, two budgets over one pod.
	f.Add([]byte{4, 2, 0, 2, 1, 0, 1, 0, 0 | 8, 0, 0 | 16, 0, 0 | 48, 0})
	// Percentage, partition, minReadySeconds, ordinals from 3, a pod past them.
	f.Add([]byte{9, 0x80 | 33, 3, 3, 0, 2 | 4 | 16 | 32, 0, 255, 0, 5, 2, 255, 3, 0, 1, 0, 6, 0, 4, 0, 0, 10, 2, 20, 0, 255, 0, 255})
	// DNS gate: not propagated, unreachable; stale budget.
	f.Add([]byte{5, 3, 0, 8 | 3, 0, 8, 0 | 16, 0, 2 | 64, 0, 7 | 128, 0, 0, 0, 2, 0})
	// Awaiting deletions.
	f.Add([]byte{3, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := decodeFuzz(data)
		in := c.input()
		if in.ConfigError != nil {
			t.Fatalf("the case's annotations do not parse: %v", in.ConfigError)
		}
		if in.Config.MaxUnavailable != int32(c.maxU) {
			t.Fatalf("max-unavailable %s resolved to %d, want %d", c.maxUnavailable, in.Config.MaxUnavailable, c.maxU)
		}
		plan := Compute(in)
		checkPlan(t, c, plan)
		if plan.Status.Phase == "" || plan.Status.Reason == "" || plan.Status.Message == "" {
			t.Fatalf("incomplete status %+v", plan.Status)
		}
		// Planning again with the status just made, as the controller does
		// on its next sync, never panics and, with nothing changed, plans
		// the same deletions.
		in.Previous = &plan.Status
		again := Compute(in)
		if fmt.Sprint(deletionsOf(again)) != fmt.Sprint(deletionsOf(plan)) {
			t.Fatalf("replanning changed the deletions: %v then %v", deletionsOf(plan), deletionsOf(again))
		}
	})
}

// FuzzParseConfig: any annotation values either parse into a usable Config
// or give a ConfigError; never a panic, never a Config that would let the
// planner delete without bound.
func FuzzParseConfig(f *testing.F) {
	f.Add("3", "0", "false", "stsroller.io/role=leader", "db.example.com", "600", int32(5))
	f.Add("25%", "-1", "yes", "a=b=c", "-bad-", "0", int32(0))
	f.Add("101%", "x", "TRUE", "!!", "under_score.", "x", int32(1))
	f.Fuzz(func(t *testing.T, maxU, partition, paused, leaderSel, domain, deadline string, replicas int32) {
		sts := &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Annotations: map[string]string{
				AnnotationMaxUnavailable:          maxU,
				AnnotationPartition:               partition,
				AnnotationPaused:                  paused,
				AnnotationLeaderSelector:          leaderSel,
				AnnotationDNSDomain:               domain,
				AnnotationProgressDeadlineSeconds: deadline,
			}},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas)},
		}
		cfg, err := ParseConfig(sts)
		if err != nil {
			if _, ok := err.(*ConfigError); !ok {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			return
		}
		if cfg.MaxUnavailable < 1 || cfg.Partition < 0 || cfg.ProgressDeadline < time.Second || cfg.LeaderSelector == nil {
			t.Fatalf("unusable config %+v from %q %q %q", cfg, maxU, partition, deadline)
		}
		if !isDNSName(cfg.DNSDomain) {
			t.Fatalf("dns-domain %q accepted as %q", domain, cfg.DNSDomain)
		}
	})
}
