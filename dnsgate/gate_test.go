package dnsgate

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/policy"
)

// fakeProber answers from a table of name → addresses served, and counts calls.
type fakeProber struct {
	mu     sync.Mutex
	served map[string][]netip.Addr
	reason dnsprobe.Reason // when set, every answer fails with it
	// answers, when set, are the per-server answers of every failed probe;
	// the result's reason is the first one's, as dnsprobe summarises.
	answers []dnsprobe.ServerAnswer
	calls   int
}

func (p *fakeProber) Probe(_ context.Context, name string, want []netip.Addr) dnsprobe.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.reason != "" {
		return dnsprobe.Result{Name: name, Reason: p.reason, Message: "injected"}
	}
	if len(p.answers) > 0 {
		return dnsprobe.Result{Name: name, Reason: p.answers[0].Reason, Message: "injected", Answers: p.answers}
	}
	if got, ok := p.served[name]; ok && slices.Equal(got, want) {
		return dnsprobe.Result{Name: name, Propagated: true, Reason: dnsprobe.ReasonPropagated}
	}
	return dnsprobe.Result{Name: name, Reason: dnsprobe.ReasonNXDomain, Message: "no such name"}
}

func (p *fakeProber) serve(name string, addrs ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	p.served[name] = as
}

type gateFixture struct {
	t       *testing.T
	prober  *fakeProber
	client  *fake.Clientset
	clock   *clocktesting.FakeClock
	gate    *Gate
	sts     *appsv1.StatefulSet
	mu      sync.Mutex
	queued  []cache.ObjectName
	pods    []*corev1.Pod
	patches []string
}

func newGateFixture(t *testing.T, pods ...*corev1.Pod) *gateFixture {
	f := &gateFixture{
		t:      t,
		prober: &fakeProber{served: map[string][]netip.Addr{}},
		clock:  clocktesting.NewFakeClock(time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)),
		sts:    &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "ns"}},
		pods:   pods,
	}
	f.client = fake.NewClientset()
	f.client.PrependReactor("patch", "pods", func(a core.Action) (bool, runtime.Object, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.patches = append(f.patches, a.(core.PatchAction).GetName()+" "+string(a.(core.PatchAction).GetPatch()))
		return true, nil, nil
	})
	apiCalls.Watch(f.client)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.gate = New(ctx, f.prober, f.client, func(k cache.ObjectName) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.queued = append(f.queued, k)
	}, Options{Clock: f.clock, MinBackoff: time.Second, MaxBackoff: 4 * time.Second, Recheck: time.Minute})
	return f
}

func (f *gateFixture) observe() map[string]policy.DNSState {
	f.t.Helper()
	v := f.gate.Observe(context.Background(), f.sts, "db.example.test", f.pods)
	if v.Err != nil {
		f.t.Fatal(v.Err)
	}
	// As the controller does after planning.
	for _, c := range v.Changes {
		if _, err := f.gate.Apply(context.Background(), c); err != nil {
			f.t.Fatal(err)
		}
	}
	return v.States
}

func (f *gateFixture) takePatches() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.patches
	f.patches = nil
	return p
}

func pod(name, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID(name + "-uid")},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

func TestGateHoldsUntilPropagatedThenSetsCondition(t *testing.T) {
	p0 := pod("db-0", "10.0.0.1")
	f := newGateFixture(t, p0)

	if s := f.observe()["db-0"]; s.Propagated {
		t.Fatal("a pod never checked counts as propagated")
	}
	f.gate.Wait()
	if s := f.observe()["db-0"]; s.Propagated || s.Unreachable {
		t.Fatalf("NXDOMAIN gave %+v, want not propagated and not unreachable", s)
	}
	if p := f.takePatches(); len(p) != 0 {
		t.Fatalf("condition patched before propagation: %v", p)
	}
	// The name appears; the next check is due only after the backoff.
	f.prober.serve("db-0.db.example.test", "10.0.0.1")
	f.observe()
	f.gate.Wait()
	if s := f.observe()["db-0"]; s.Propagated {
		t.Fatal("checked again before the backoff elapsed")
	}
	f.clock.Step(time.Second)
	f.observe()
	f.gate.Wait()
	s := f.observe()["db-0"]
	if !s.Propagated {
		t.Fatalf("state = %+v after the name resolved, want propagated", s)
	}
	patches := f.takePatches()
	if len(patches) != 1 || !containsAll(patches[0], `"status":"True"`, "10.0.0.1", string(policy.ConditionDNSPropagated), `"uid":"db-0-uid"`) {
		t.Fatalf("patches = %v, want one setting the condition True for 10.0.0.1 with a UID precondition", patches)
	}
}

func TestGateTrustsItsOwnConditionAfterRestartAndTurnsFalseOnNewIP(t *testing.T) {
	p0 := pod("db-0", "10.0.0.1")
	p0.Status.Conditions = []corev1.PodCondition{{Type: policy.ConditionDNSPropagated, Status: corev1.ConditionTrue,
		Message: "db-0.db.example.test resolves to 10.0.0.1 at every authoritative server"}}
	f := newGateFixture(t, p0)
	if s := f.observe()["db-0"]; !s.Propagated {
		t.Fatal("a condition vouching for the pod's current IP was not trusted")
	}
	f.gate.Wait()
	if p := f.takePatches(); len(p) != 0 {
		t.Fatalf("an up-to-date condition was patched: %v", p)
	}
	// The pod's IP changes (sandbox recreated): the condition must turn False.
	p0.Status.PodIP = "10.0.0.9"
	if s := f.observe()["db-0"]; s.Propagated {
		t.Fatal("a condition vouching for an old IP was trusted")
	}
	patches := f.takePatches()
	if len(patches) != 1 || !containsAll(patches[0], `"status":"False"`, "10.0.0.9") {
		t.Fatalf("patches = %v, want one turning the condition False", patches)
	}
}

func TestGateUnreachableServerNeverPropagates(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.reason = dnsprobe.ReasonTimeout
	f.observe()
	f.gate.Wait()
	s := f.observe()["db-0"]
	if s.Propagated || !s.Unreachable {
		t.Fatalf("state = %+v on a timeout, want unreachable and not propagated", s)
	}
}

// A server that times out makes the pod unreachable even when the first
// server's answer (NXDOMAIN) is the result's reason.
func TestGateUnreachableSecondServerIsNotHidden(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.answers = []dnsprobe.ServerAnswer{
		{Server: "10.0.0.53:53", Reason: dnsprobe.ReasonNXDomain},
		{Server: "10.0.0.54:53", Reason: dnsprobe.ReasonTimeout},
	}
	f.observe()
	f.gate.Wait()
	s := f.observe()["db-0"]
	if s.Propagated || !s.Unreachable {
		t.Fatalf("state = %+v with one server timing out, want unreachable and not propagated", s)
	}
}

func TestGateNoServersIsAnError(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.reason = dnsprobe.ReasonNoServers
	f.observe()
	f.gate.Wait()
	if v := f.gate.Observe(context.Background(), f.sts, "db.example.test", f.pods); v.Err == nil {
		t.Fatal("no servers gave no error")
	}
}

func TestGateEnqueuesWhenAnswerArrives(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"), pod("db-1", "10.0.0.2"))
	f.observe()
	f.gate.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queued) != 2 || f.queued[0] != cache.MetaObjectToName(f.sts) {
		t.Fatalf("queued = %v, want the StatefulSet once per answer", f.queued)
	}
}

func TestVouchedIPs(t *testing.T) {
	for _, tc := range []struct {
		msg    string
		status corev1.ConditionStatus
		want   []string
	}{
		{"a.b resolves to 10.0.0.1,fd00::1 at every authoritative server", corev1.ConditionTrue, []string{"10.0.0.1", "fd00::1"}},
		{"a.b resolves to 10.0.0.1 at every authoritative server", corev1.ConditionFalse, nil},
		{"set by someone else", corev1.ConditionTrue, nil},
		{"a.b resolves to banana at every authoritative server", corev1.ConditionTrue, nil},
	} {
		p := pod("x", "10.0.0.1")
		p.Status.Conditions = []corev1.PodCondition{{Type: policy.ConditionDNSPropagated, Status: tc.status, Message: tc.msg}}
		var got []string
		for _, a := range vouchedIPs(p) {
			got = append(got, a.String())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("vouchedIPs(%q, %s) = %v, want %v", tc.msg, tc.status, got, tc.want)
		}
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestGateBackoff: a name the servers do not serve yet is asked again at most
// NotYetBackoff apart (the record is on its way); a server that cannot be
// asked backs off up to MaxBackoff.
func TestGateBackoff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason dnsprobe.Reason
		// gaps between consecutive checks
		want []time.Duration
	}{
		{"not yet", "", []time.Duration{time.Second, time.Second, time.Second, time.Second}},
		{"timeout", dnsprobe.ReasonTimeout, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newGateFixture(t, pod("db-0", "10.0.0.1"))
			f.prober.reason = tc.reason
			f.observe()
			f.gate.Wait()
			calls := func() int {
				f.prober.mu.Lock()
				defer f.prober.mu.Unlock()
				return f.prober.calls
			}
			for i, gap := range tc.want {
				before := calls()
				f.clock.Step(gap - time.Millisecond)
				f.observe()
				f.gate.Wait()
				if calls() != before {
					t.Fatalf("check %d came before %s", i+2, gap)
				}
				f.clock.Step(time.Millisecond)
				f.observe()
				f.gate.Wait()
				if calls() != before+1 {
					t.Fatalf("check %d did not come after %s", i+2, gap)
				}
			}
		})
	}
}

func (f *gateFixture) calls() int {
	f.prober.mu.Lock()
	defer f.prober.mu.Unlock()
	return f.prober.calls
}

func (f *gateFixture) queuedLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queued)
}

// TestGateObserveWritesNothing: gathering is read-only (issue 9, bug 1): the
// condition the gate wants comes back as a Change, and only Apply writes it.
func TestGateObserveWritesNothing(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.serve("db-0.db.example.test", "10.0.0.1")
	f.gate.Observe(context.Background(), f.sts, "db.example.test", f.pods)
	f.gate.Wait()
	v := f.gate.Observe(context.Background(), f.sts, "db.example.test", f.pods)
	if !v.States["db-0"].Propagated {
		t.Fatalf("state = %+v, want propagated", v.States["db-0"])
	}
	if p := f.takePatches(); len(p) != 0 {
		t.Fatalf("Observe wrote %v", p)
	}
	if len(v.Changes) != 1 || v.Changes[0].Status != corev1.ConditionTrue || v.Changes[0].Pod.Name != "db-0" {
		t.Fatalf("changes = %+v, want db-0 True", v.Changes)
	}
	if ok, err := f.gate.Apply(context.Background(), v.Changes[0]); !ok || err != nil {
		t.Fatalf("Apply = %v, %v", ok, err)
	}
	if p := f.takePatches(); len(p) != 1 {
		t.Fatalf("Apply wrote %d patches, want 1", len(p))
	}
}

// TestGateRecheckEnqueuesOnlyWhenAnswerChanges (issue 8): a re-check whose
// answer is the same as before does not plan the StatefulSet again; the gate
// asks again by itself, and an answer that changes class enqueues.
func TestGateRecheckEnqueuesOnlyWhenAnswerChanges(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.serve("db-0.db.example.test", "10.0.0.1")
	f.observe()
	f.gate.Wait()
	if !f.observe()["db-0"].Propagated {
		t.Fatal("not propagated")
	}
	if n := f.queuedLen(); n != 1 {
		t.Fatalf("queued %d times after the first answer, want 1", n)
	}
	// Re-checks with the same answer, started by the gate's own timer.
	for i := range 3 {
		before := f.calls()
		f.clock.Step(time.Minute)
		if err := waitFor(func() bool { return f.calls() > before }); err != nil {
			t.Fatalf("re-check %d never ran without a sync", i+1)
		}
		f.gate.Wait()
	}
	if n := f.queuedLen(); n != 1 {
		t.Errorf("queued %d times after three unchanged re-checks, want 1", n)
	}
	// A server stops answering: that changes what the plan sees.
	f.prober.mu.Lock()
	f.prober.reason = dnsprobe.ReasonTimeout
	f.prober.mu.Unlock()
	before := f.calls()
	f.clock.Step(time.Minute)
	if err := waitFor(func() bool { return f.calls() > before }); err != nil {
		t.Fatal("re-check never ran")
	}
	f.gate.Wait()
	if n := f.queuedLen(); n != 2 {
		t.Errorf("queued %d times after a server stopped answering, want 2", n)
	}
}

// TestGateKeepsEntriesPerStatefulSet: observing one StatefulSet drops only its
// own pods that are gone, never another's.
func TestGateKeepsEntriesPerStatefulSet(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"), pod("db-1", "10.0.0.2"))
	f.observe()
	other := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "ns"}}
	f.gate.Observe(context.Background(), other, "web.example.test", []*corev1.Pod{pod("web-0", "10.0.1.1")})
	f.gate.Wait()
	if n := f.gate.Len(); n != 3 {
		t.Fatalf("gate holds %d entries, want 3", n)
	}
	f.pods = f.pods[:1]
	f.observe()
	if n := f.gate.Len(); n != 2 {
		t.Errorf("gate holds %d entries after db-1 went, want 2 (db-0, web-0)", n)
	}
	f.gate.Forget(cache.MetaObjectToName(other))
	if n := f.gate.Len(); n != 1 {
		t.Errorf("gate holds %d entries after Forget(web), want 1", n)
	}
}

// TestGateVouchedIPsAnnotation (issue 9, bug 6): the IPs a True condition
// vouches for are written in an annotation with it, and read back from there,
// whatever the condition's message says.
func TestGateVouchedIPsAnnotation(t *testing.T) {
	f := newGateFixture(t, pod("db-0", "10.0.0.1"))
	f.prober.serve("db-0.db.example.test", "10.0.0.1")
	f.observe()
	f.gate.Wait()
	f.observe()
	p := f.takePatches()
	if len(p) != 1 || !containsAll(p[0], `"`+AnnotationVouchedIPs+`":"10.0.0.1"`) {
		t.Fatalf("patches = %v, want the condition with %s 10.0.0.1", p, AnnotationVouchedIPs)
	}

	// After a restart: a True condition whose message was reworded, with the
	// annotation, is trusted for the annotation's IPs.
	p0 := pod("db-0", "10.0.0.1")
	p0.Annotations = map[string]string{AnnotationVouchedIPs: "10.0.0.1"}
	p0.Status.Conditions = []corev1.PodCondition{{Type: policy.ConditionDNSPropagated, Status: corev1.ConditionTrue,
		Message: "propagated (any words)"}}
	g := newGateFixture(t, p0)
	if s := g.observe()["db-0"]; !s.Propagated {
		t.Fatal("a condition whose annotation vouches for the pod's IP was not trusted")
	}
	g.gate.Wait()
	if p := g.takePatches(); len(p) != 0 {
		t.Fatalf("an up-to-date condition was patched: %v", p)
	}
	// The annotation names another IP: not trusted, and turned False.
	p1 := p0.DeepCopy()
	p1.Annotations[AnnotationVouchedIPs] = "10.0.0.7"
	p1.Status.Conditions[0].Message = "db-0.db.example.test resolves to 10.0.0.1 at every authoritative server"
	h := newGateFixture(t, p1)
	if s := h.observe()["db-0"]; s.Propagated {
		t.Fatal("the message was believed over the annotation")
	}
	if p := h.takePatches(); len(p) != 1 || !containsAll(p[0], `"status":"False"`) {
		t.Fatalf("patches = %v, want the condition turned False", p)
	}
}

func waitFor(cond func() bool) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return errors.New("condition not met")
}
