//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// groupMember is one StatefulSet of a group test, with its own pod watcher.
type groupMember struct {
	name  string
	sts   *appsv1.StatefulSet
	watch *framework.PodWatcher
	rev   string
}

// groupRig is a namespace of StatefulSets named after their zones, labelled
// app=<name>, each with pods Ready readyDelay after they run.
type groupRig struct {
	t       testing.TB
	ctx     context.Context
	client  kubernetes.Interface
	ns      string
	members []*groupMember
}

func newGroupRig(t *testing.T) *groupRig {
	ctx := t.Context()
	client := framework.Client(t)
	return &groupRig{t: t, ctx: ctx, client: client, ns: framework.Namespace(ctx, t, client)}
}

func (g *groupRig) add(name string, replicas int32, readyDelay string, annotations map[string]string) *groupMember {
	g.t.Helper()
	ann := map[string]string{policy.AnnotationEnabled: "true"}
	for k, v := range annotations {
		ann[k] = v
	}
	sts := dbStatefulSet(g.ns, replicas, appsv1.OnDeleteStatefulSetStrategyType, ann)
	sts.Name = name
	lbl := map[string]string{"app": name}
	sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: lbl}
	sts.Spec.Template.Labels = lbl
	sts.Spec.Template.Annotations = map[string]string{"e2e.stsroller.io/ready-delay": readyDelay}
	created, err := g.client.AppsV1().StatefulSets(g.ns).Create(g.ctx, sts, metav1.CreateOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	m := &groupMember{name: name, sts: created, watch: framework.WatchPods(g.ctx, g.t, g.client, created, leaderSelector)}
	g.members = append(g.members, m)
	return m
}

func (g *groupRig) pods(m *groupMember) []corev1.Pod {
	g.t.Helper()
	l, err := g.client.CoreV1().Pods(g.ns).List(g.ctx, metav1.ListOptions{LabelSelector: "app=" + m.name})
	if err != nil {
		g.t.Fatal(err)
	}
	return l.Items
}

func (g *groupRig) get(m *groupMember) *appsv1.StatefulSet {
	g.t.Helper()
	s, err := g.client.AppsV1().StatefulSets(g.ns).Get(g.ctx, m.name, metav1.GetOptions{})
	if err != nil {
		g.t.Fatal(err)
	}
	return s
}

// ready counts m's pods that are Ready, not terminating, at rev ("" any).
func (g *groupRig) ready(m *groupMember, rev string) int {
	n := 0
	for _, p := range g.pods(m) {
		if p.DeletionTimestamp == nil && framework.PodReady(&p) && (rev == "" || p.Labels[appsv1.ControllerRevisionHashLabelKey] == rev) {
			n++
		}
	}
	return n
}

func (g *groupRig) waitReady(ms ...*groupMember) {
	g.t.Helper()
	err := framework.Eventually(g.ctx, rolloutTimeout, 200*time.Millisecond, func(context.Context) error {
		for _, m := range ms {
			if n, want := g.ready(m, ""), int(*m.sts.Spec.Replicas); n != want {
				return fmt.Errorf("%s: %d of %d pods ready", m.name, n, want)
			}
		}
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
}

// newTemplate changes the VERSION of every member's template at once and
// waits for their new update revisions.
func (g *groupRig) newTemplate(version string, ms ...*groupMember) {
	g.t.Helper()
	before := map[string]string{}
	for _, m := range ms {
		before[m.name] = g.get(m).Status.UpdateRevision
	}
	for _, m := range ms {
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"db","env":[{"name":"VERSION","value":%q}]}]}}}}`, version)
		if _, err := g.client.AppsV1().StatefulSets(g.ns).Patch(g.ctx, m.name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			g.t.Fatal(err)
		}
	}
	err := framework.Eventually(g.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
		for _, m := range ms {
			s := g.get(m)
			if s.Status.ObservedGeneration < s.Generation || s.Status.UpdateRevision == before[m.name] {
				return fmt.Errorf("%s: update revision still %s", m.name, s.Status.UpdateRevision)
			}
			m.rev = s.Status.UpdateRevision
			m.watch.SetUpdateRevision(m.rev)
		}
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
}

// waitComplete waits until every member has all its pods Ready at its update
// revision and says Complete; it returns when it saw that.
func (g *groupRig) waitComplete(ms ...*groupMember) time.Time {
	g.t.Helper()
	var at time.Time
	err := framework.Eventually(g.ctx, 2*rolloutTimeout, 100*time.Millisecond, func(context.Context) error {
		for _, m := range ms {
			if n, want := g.ready(m, m.rev), int(*m.sts.Spec.Replicas); n != want {
				return fmt.Errorf("%s: %d of %d pods ready at %s", m.name, n, want, m.rev)
			}
		}
		if at.IsZero() {
			at = time.Now()
		}
		for _, m := range ms {
			if st := policy.ParseStatus(g.get(m).Annotations); st == nil || st.Phase != policy.PhaseComplete {
				return fmt.Errorf("%s: status %+v, want Complete", m.name, st)
			}
		}
		return nil
	})
	if err != nil {
		g.t.Fatalf("rollout did not finish: %v", err)
	}
	return at
}

// inFlight reports whether m has a replacement on its way: a pod terminating
// or missing, or one at the update revision not Ready. Its broken pod at the
// old revision is not one.
func (g *groupRig) inFlight(m *groupMember) bool {
	ps := g.pods(m)
	live := 0
	for _, p := range ps {
		switch {
		case p.DeletionTimestamp != nil:
			return true
		case m.rev != "" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == m.rev && !framework.PodReady(&p):
			return true
		}
		live++
	}
	return live < int(*m.sts.Spec.Replicas)
}

// watchOverlap polls the members until ctx ends and records every moment two
// of them had replacements on their way at once.
func (g *groupRig) watchOverlap(ctx context.Context, ms ...*groupMember) func() []string {
	var mu sync.Mutex
	var bad []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var busy []string
			for _, m := range ms {
				if g.inFlight(m) {
					busy = append(busy, m.name)
				}
			}
			if len(busy) > 1 {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), busy))
				mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() []string {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return bad
	}
}

// TestRolloutGroup: three StatefulSets of zones a, b and c in one rollout
// group and a fourth outside it; one template change on all four at once.
// Never do two members of the group have replacements on their way; zone-b,
// which has a broken pod, goes first, then a, then c; all complete; the
// fourth rolls meanwhile, unaffected.
func TestRolloutGroup(t *testing.T) {
	t.Parallel()
	g := newGroupRig(t)
	group := map[string]string{policy.AnnotationRolloutGroup: "db"}
	a, b, c := g.add("zone-a", 3, "500ms", group), g.add("zone-b", 3, "500ms", group), g.add("zone-c", 3, "500ms", group)
	other := g.add("other", 3, "500ms", nil)
	g.waitReady(a, b, c, other)
	first := g.get(b).Status.UpdateRevision
	b.watch.SetBroken(func(p *corev1.Pod) bool {
		return p.Name == "zone-b-1" && p.Labels[appsv1.ControllerRevisionHashLabelKey] == first
	})
	err := framework.Eventually(g.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
		if n := g.ready(b, ""); n != 2 {
			return fmt.Errorf("zone-b: %d pods ready, want 2", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	framework.StartController(t, g.client, framework.ControllerOptions{Binary: binary(t), Namespace: g.ns})

	ctx, stop := context.WithCancel(g.ctx)
	overlaps := g.watchOverlap(ctx, a, b, c)
	g.newTemplate("2", a, b, c, other)
	g.waitComplete(a, b, c, other)
	stop()
	if bad := overlaps(); len(bad) > 0 {
		t.Errorf("two members of the group had replacements on their way at once: %v", bad)
	}

	type del struct {
		framework.Deletion
		member string
	}
	var group3 []del
	for _, m := range []*groupMember{a, b, c} {
		ds := m.watch.Deletions()
		if len(ds) != 3 {
			t.Errorf("%s: %d deletions, want each pod once: %v", m.name, len(ds), names(ds))
		}
		for _, d := range ds {
			group3 = append(group3, del{d, m.name})
		}
	}
	slices.SortFunc(group3, func(x, y del) int { return x.At.Compare(y.At) })
	var order []string
	for _, d := range group3 {
		if len(order) == 0 || order[len(order)-1] != d.member {
			order = append(order, d.member)
		}
	}
	if want := []string{"zone-b", "zone-a", "zone-c"}; !slices.Equal(order, want) {
		t.Errorf("members rolled in the order %v, want %v (the broken one first, then by name), one after the other", order, want)
	}
	if len(group3) > 0 && group3[0].Pod != "zone-b-1" {
		t.Errorf("first deletion in the group: %s, want the broken zone-b-1", group3[0].Pod)
	}
	// The fourth rolled while the group did.
	od := other.watch.Deletions()
	if len(od) != 3 {
		t.Errorf("other: %d deletions, want 3", len(od))
	} else if last := group3[len(group3)-1].At; !od[0].At.Before(last) {
		t.Errorf("other's first deletion at %v, after the group's last at %v: it waited for the group", od[0].At, last)
	}
	// The members that waited said so.
	evs, err := g.client.CoreV1().Events(g.ns).List(g.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=zone-c,reason=" + policy.ReasonWaitingForGroup})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) == 0 {
		t.Errorf("zone-c has no %s event", policy.ReasonWaitingForGroup)
	}
}

// forecastJSON is what the test reads of `plan --all -o json`.
type forecastJSON struct {
	Steps []struct {
		StatefulSet string `json:"statefulSet"`
		Pods        []struct {
			Pod string `json:"pod"`
		} `json:"pods"`
	} `json:"steps"`
	TotalSeconds float64 `json:"totalSeconds"`
	Complete     bool    `json:"complete"`
}

// TestForecastMatchesRollout: a group of two StatefulSets is rolled once
// (so their pods and stsroller's events give times to measure), then, with
// the controller stopped, a new template is forecast with `plan --all`, and
// rolled. The deletions come in exactly the forecast's order, and the
// forecast's total is within 25% of the time the rollout took, from its first
// deletion until every pod was Ready at the new revision.
func TestForecastMatchesRollout(t *testing.T) {
	t.Parallel()
	if framework.Deployed() {
		t.Skip("stops its own controller process while the forecast looks")
	}
	g := newGroupRig(t)
	x := g.add("zone-x", 3, "3s", map[string]string{policy.AnnotationRolloutGroup: "db", policy.AnnotationRolloutGroupOrder: "1"})
	y := g.add("zone-y", 3, "3s", map[string]string{policy.AnnotationRolloutGroup: "db", policy.AnnotationRolloutGroupOrder: "0"})
	g.waitReady(x, y)
	ctrl := framework.StartController(t, g.client, framework.ControllerOptions{Binary: binary(t), Namespace: g.ns})
	g.newTemplate("2", x, y)
	g.waitComplete(x, y)

	ctrl.Stop()
	g.newTemplate("3", x, y)
	var fc forecastJSON
	out := plugin(t, "plan", "zone-x", "--all", "-o", "json", "-n", g.ns)
	if err := json.Unmarshal([]byte(out), &fc); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	var want []string
	for _, s := range fc.Steps {
		for _, p := range s.Pods {
			want = append(want, p.Pod)
		}
	}
	if !fc.Complete || len(want) != 6 {
		t.Fatalf("forecast: complete %v, %d deletions, want complete with 6:\n%s", fc.Complete, len(want), out)
	}
	t.Logf("forecast: %v in %.1fs\n%s", want, fc.TotalSeconds, plugin(t, "plan", "zone-x", "--all", "-n", g.ns))

	seen := map[string]int{}
	for _, m := range []*groupMember{x, y} {
		seen[m.name] = len(m.watch.Deletions())
	}
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	end := g.waitComplete(x, y)
	var got []framework.Deletion
	for _, m := range []*groupMember{x, y} {
		got = append(got, m.watch.Deletions()[seen[m.name]:]...)
	}
	slices.SortFunc(got, func(a, b framework.Deletion) int { return a.At.Compare(b.At) })
	if !slices.Equal(names(got), want) {
		t.Errorf("deletions %v, forecast %v", names(got), want)
	}
	if len(got) == 0 {
		return
	}
	took := end.Sub(got[0].At).Seconds()
	off := math.Abs(fc.TotalSeconds-took) / took
	t.Logf("forecast %.1fs, measured %.1fs from the first deletion to every pod Ready: %.0f%% off", fc.TotalSeconds, took, off*100)
	if off > 0.25 {
		t.Errorf("forecast %.1fs, measured %.1fs: %.0f%% off, want within 25%%", fc.TotalSeconds, took, off*100)
	}
}
