//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/faultproxy"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/invariants"
	"github.com/stsroller/stsroller/e2e/kwok"
	"github.com/stsroller/stsroller/e2e/proc"
	"github.com/stsroller/stsroller/policy"
)

// The fault suite. Every test runs its own stsroller on its own namespace,
// with an invariants.Checker watching that namespace from start to end; a
// violation fails the test. STSROLLER_SOAK=1 selects the long variants
// (`make soak`); without it the short ones run in `make test`.
// STSROLLER_SOAK_STATS names a file each test appends its counts to (one JSON
// object a line) for the soak table (e2e/soaktable).

// EnvSoak selects the long variants.
const EnvSoak = "STSROLLER_SOAK"

// EnvSoakStats names the file of per-test counts.
const EnvSoakStats = "STSROLLER_SOAK_STATS"

func soaking() bool { v := os.Getenv(EnvSoak); return v != "" && v != "0" }

// pick returns short in `make test`, long in `make soak`.
func pick[T any](short, long T) T {
	if soaking() {
		return long
	}
	return short
}

const faultTimeout = 6 * time.Minute

// stallAfter: a StatefulSet stsroller could act on for longer than this
// without acting is a violation (issue 16: "no stall").
const stallAfter = 10 * time.Second

// FaultStats is one test's line of the soak table's input.
type FaultStats struct {
	Test       string         `json:"test"`
	Faults     map[string]int `json:"faults,omitempty"`
	Requests   int            `json:"requests,omitempty"`
	Restarts   int            `json:"restarts,omitempty"`
	Checks     int            `json:"checks"`
	Violations int            `json:"violations"`
	Deletions  int            `json:"deletions"`
	Completed  int            `json:"completed"`
	Failed     bool           `json:"failed"`
	Seconds    float64        `json:"seconds"`
}

var statsMu sync.Mutex

func recordStats(s FaultStats) {
	path := os.Getenv(EnvSoakStats)
	if path == "" {
		return
	}
	statsMu.Lock()
	defer statsMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_ = json.NewEncoder(f).Encode(s)
}

// faultEnv is a namespace with a checker, maybe a fault proxy, and one
// stsroller.
type faultEnv struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
	ns     string
	check  *invariants.Checker
	proxy  *faultproxy.Proxy
	ctrl   *framework.Controller
	// With faultEnvOptions.instances, every instance and its proxy (ctrl
	// and proxy are the first).
	ctrls    []*framework.Controller
	proxies  []*faultproxy.Proxy
	restarts int
	version  int
	// invalidOK names sets whose status may say Invalid.
	invalidOK map[string]bool
}

type faultEnvOptions struct {
	// faultRate > 0 puts a fault proxy between stsroller and the apiserver.
	faultRate float64
	kinds     []faultproxy.Kind
	args      []string
	// beforeController runs after the checker starts and before stsroller.
	beforeController func(e *faultEnv)
	// instances > 1 runs that many leader-elected stsroller processes, each
	// as a ServiceAccount of its own bound to deploy/'s ClusterRole and
	// behind a fault proxy of its own; the checker then judges that every
	// removal comes from the holder of the Lease (electionLease).
	instances int
}

// electionLease is the leader-election Lease of a test's instances, in its
// namespace.
const electionLease = "stsroller"

func newFaultEnv(t *testing.T, o faultEnvOptions) *faultEnv {
	t.Helper()
	if framework.Deployed() {
		t.Skipf("%s=deployed: the fault suite runs stsroller processes of its own (behind its fault proxy, killed at will)",
			framework.EnvController)
	}
	began := time.Now()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)
	e := &faultEnv{t: t, ctx: ctx, client: client, ns: ns, version: 1, invalidOK: map[string]bool{}}
	// stsroller runs as its own identity, deploy/'s ClusterRole bound to a
	// user of its own, also behind the fault proxy; the checker knows its
	// requests in the audit log by that user and its user agent.
	ownKubeconfig, id, own, err := framework.ControllerIdentity(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	opts := invariants.Options{Identity: id, AuditLog: os.Getenv(framework.EnvAuditLog), StallAfter: stallAfter}
	var kubeconfigs []string
	if o.instances > 1 {
		// Any of the instances' users, by stsroller's user agent.
		opts.Identity, opts.Lease = invariants.DefaultIdentity, electionLease
		kubeconfigs = instanceIdentities(t, client, ns, o.instances)
	}
	check, err := invariants.WatchWith(ctx, client, ns, opts)
	if errors.Is(err, invariants.ErrNoAuditLog) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	e.check = check
	t.Cleanup(func() {
		check.Resolve(true)
		for _, v := range check.Violations() {
			t.Errorf("invariant violated: %s", v)
		}
		if len(check.Violations()) > 0 {
			// The controller's own cleanup ran first, before t failed.
			for _, c := range e.ctrls {
				t.Logf("%s log (tail):\n%s", c.Name(), proc.Tail(c.Log(), 300))
			}
		}
		st := check.Stats()
		s := FaultStats{Test: t.Name(), Restarts: e.restarts, Checks: st.Checks, Violations: st.Violations,
			Deletions: st.Deletions, Completed: st.Completed, Failed: t.Failed(), Seconds: time.Since(began).Seconds()}
		for _, p := range e.proxies {
			if s.Faults == nil {
				s.Faults = map[string]int{}
			}
			for k, n := range p.Faults() {
				s.Faults[string(k)] += n
			}
			s.Requests += p.Requests()
			t.Logf("fault proxy: %s", p)
		}
		t.Logf("invariants: %d checks, %d violations, %d deletions seen; stsroller's: %d removals, %d drain requests, %d refused, %d repeated; %d deletes by others; %d rollouts completed, %d restarts",
			st.Checks, st.Violations, st.Deletions, st.Removals, st.DrainRequests, st.Refused, st.Repeats, st.Others, st.Completed, e.restarts)
		recordStats(s)
	})
	if kubeconfigs == nil {
		kubeconfig := ""
		if own {
			kubeconfig = ownKubeconfig
		}
		kubeconfigs = []string{kubeconfig}
	}
	for i, kubeconfig := range kubeconfigs {
		if o.faultRate <= 0 {
			break
		}
		cfg, err := framework.Config()
		if kubeconfig != "" {
			cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err := faultproxy.Start(faultproxy.Options{Upstream: cfg, Rate: o.faultRate, Kinds: o.kinds})
		if err != nil {
			t.Fatal(err)
		}
		e.proxies = append(e.proxies, p)
		t.Cleanup(func() { p.Close() })
		kubeconfigs[i] = filepath.Join(t.TempDir(), fmt.Sprintf("faultproxy-%d.kubeconfig", i))
		if err := p.WriteKubeconfig(kubeconfigs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(e.proxies) > 0 {
		e.proxy = e.proxies[0]
	}
	if o.beforeController != nil {
		o.beforeController(e)
	}
	args := o.args
	if o.instances > 1 {
		args = append(slices.Clone(args), "--leader-elect=true", "--leader-elect-namespace="+ns, "--leader-elect-name="+electionLease,
			"--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms")
	}
	for i, kubeconfig := range kubeconfigs {
		name := "stsroller"
		if len(kubeconfigs) > 1 {
			name = fmt.Sprintf("stsroller-%c", 'a'+i)
		}
		e.ctrls = append(e.ctrls, framework.StartController(t, client, framework.ControllerOptions{
			Binary: binary(t), Namespace: ns, Kubeconfig: kubeconfig, Args: args, Name: name}))
	}
	e.ctrl = e.ctrls[0]
	t.Cleanup(func() {
		// Statuses say Invalid only where a test means it (issue 9, bug 1:
		// a transient API error is no configuration error).
		for _, name := range e.setNames() {
			if e.invalidOK[name] {
				continue
			}
			for _, ph := range check.Phases(name) {
				if strings.HasPrefix(ph, string(policy.PhaseInvalid)+"/") {
					t.Errorf("StatefulSet %s: status went %s (phases %v)", name, ph, check.Phases(name))
					break
				}
			}
		}
	})
	return e
}

func (e *faultEnv) setNames() []string {
	l, err := e.client.AppsV1().StatefulSets(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range l.Items {
		out = append(out, s.Name)
	}
	return out
}

// faultSet is a managed StatefulSet whose pods (labelled app=<name>) kwok
// makes Ready on its own.
func faultSet(ns, name string, replicas int32, ann map[string]string) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	a := map[string]string{policy.AnnotationEnabled: "true"}
	for k, v := range ann {
		a[k] = v
	}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: a},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "db", Image: "registry.k8s.io/pause:3.10",
						Env: []corev1.EnvVar{{Name: "VERSION", Value: "1"}}}},
					TerminationGracePeriodSeconds: ptr.To[int64](1),
				},
			},
		},
	}
}

func (e *faultEnv) create(sts *appsv1.StatefulSet) {
	e.t.Helper()
	if _, err := e.client.AppsV1().StatefulSets(e.ns).Create(e.ctx, sts, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// waitReady waits until the set has n Ready pods, none terminating.
func (e *faultEnv) waitReady(name string, n int) {
	e.t.Helper()
	err := framework.Eventually(e.ctx, faultTimeout, 250*time.Millisecond, func(ctx context.Context) error {
		pods, err := e.setPods(ctx, name)
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods {
			if p.DeletionTimestamp == nil && framework.PodReady(&p) {
				ready++
			}
		}
		if ready != n {
			return fmt.Errorf("%s: %d of %d pods Ready", name, ready, n)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *faultEnv) setPods(ctx context.Context, name string) ([]corev1.Pod, error) {
	l, err := e.client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(l.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return l.Items, nil
}

// roll gives every named set a new template and waits until each has its
// new update revision.
func (e *faultEnv) roll(names ...string) {
	e.t.Helper()
	e.version++
	before := map[string]string{}
	for _, n := range names {
		s, err := e.client.AppsV1().StatefulSets(e.ns).Get(e.ctx, n, metav1.GetOptions{})
		if err != nil {
			e.t.Fatal(err)
		}
		before[n] = s.Status.UpdateRevision
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"db","env":[{"name":"VERSION","value":"%d"}]}]}}}}`, e.version)
		if _, err := e.client.AppsV1().StatefulSets(e.ns).Patch(e.ctx, n, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	for _, n := range names {
		err := framework.Eventually(e.ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) error {
			s, err := e.client.AppsV1().StatefulSets(e.ns).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if s.Status.ObservedGeneration < s.Generation || s.Status.UpdateRevision == before[n] {
				return fmt.Errorf("%s: update revision still %s", n, s.Status.UpdateRevision)
			}
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitComplete waits until every named set's rollout is complete, as the
// checker sees it, and counts them.
func (e *faultEnv) waitComplete(timeout time.Duration, names ...string) {
	e.t.Helper()
	left := slices.Clone(names)
	err := framework.Eventually(e.ctx, timeout, 250*time.Millisecond, func(context.Context) error {
		var errs []string
		var still []string
		for _, n := range left {
			if err := e.check.Complete(n); err != nil {
				errs = append(errs, err.Error())
				still = append(still, n)
				continue
			}
			e.check.CountCompleted()
		}
		left = still
		if len(errs) > 0 {
			if len(errs) > 3 {
				errs = append(errs[:3], fmt.Sprintf("and %d more", len(errs)-3))
			}
			return fmt.Errorf("%s", strings.Join(errs, "; "))
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("rollouts did not complete: %v", err)
	}
}

func (e *faultEnv) status(name string) *policy.Status {
	s, err := e.client.AppsV1().StatefulSets(e.ns).Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return policy.ParseStatus(s.Annotations)
}

// waitDeletions waits until the checker has seen n deletions.
func (e *faultEnv) waitDeletions(n int) {
	e.t.Helper()
	err := framework.Eventually(e.ctx, faultTimeout, 50*time.Millisecond, func(context.Context) error {
		if got := e.check.Stats().Deletions; got < n {
			return fmt.Errorf("%d deletions, want %d", got, n)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func jitter(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
}

// TestFaultRestarts: stsroller is killed (SIGKILL) at random points of
// 50-pod rollouts, 5 times (20 in soak), and started again; each rollout
// completes and no invariant breaks.
func TestFaultRestarts(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{})
	e.create(faultSet(e.ns, "db", 50, map[string]string{policy.AnnotationMaxUnavailable: "5"}))
	e.waitReady("db", 50)
	kills := pick(5, 20)
	for e.restarts < kills {
		e.roll("db")
		for e.restarts < kills && e.check.Complete("db") != nil {
			time.Sleep(jitter(300*time.Millisecond, 3*time.Second))
			e.ctrl.Kill()
			time.Sleep(jitter(0, time.Second))
			if err := e.ctrl.Start(); err != nil {
				t.Fatal(err)
			}
			e.restarts++
		}
		e.waitComplete(faultTimeout, "db")
	}
}

// TestFaultAPIErrors: a share of stsroller's requests (5%, 20% in soak)
// get 429, 500, 503, 409, slow answers, cut watches or lost answers; the
// rollouts finish within the invariants, and the status never says Invalid.
func TestFaultAPIErrors(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{faultRate: pick(0.05, 0.2)})
	n := pick[int32](20, 50)
	e.create(faultSet(e.ns, "db", n, map[string]string{policy.AnnotationMaxUnavailable: "3"}))
	e.create(faultSet(e.ns, "part", 6, map[string]string{policy.AnnotationMaxUnavailable: "2", policy.AnnotationPartition: "2"}))
	e.waitReady("db", int(n))
	e.waitReady("part", 6)
	for range pick(1, 3) {
		e.roll("db", "part")
		e.waitComplete(faultTimeout, "db", "part")
	}
	if e.proxy.Requests() == 0 || len(e.proxy.Faults()) == 0 {
		t.Errorf("the proxy saw %s: stsroller did not go through it", e.proxy)
	}
}

// privateNodes registers n kwok nodes that only this test's pods use: they
// carry a taint the test's pods tolerate and a label they select.
func privateNodes(t *testing.T, client kubernetes.Interface, ns string, n int) (names []string, pool string) {
	t.Helper()
	pool = ns
	for i := range n {
		name := fmt.Sprintf("%s-%d", ns, i)
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("32"),
			corev1.ResourceMemory: resource.MustParse("256Gi"),
			corev1.ResourcePods:   resource.MustParse("250"),
		}
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwok.NodeAnnotation: kwok.NodeAnnotationValue},
				Labels: map[string]string{"type": "kwok", hostnameLabel: name, "kubernetes.io/os": "linux",
					"kubernetes.io/arch": "amd64", "e2e.stsroller.io/pool": pool},
			},
			Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "e2e.stsroller.io/pool", Value: pool, Effect: corev1.TaintEffectNoSchedule}}},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity,
				Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.31.200.%d", 10+i)},
					{Type: corev1.NodeHostName, Address: name}}},
		}
		if _, err := client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
		})
		names = append(names, name)
	}
	return names, pool
}

func onPool(sts *appsv1.StatefulSet, pool string) {
	sts.Spec.Template.Spec.NodeSelector = map[string]string{"e2e.stsroller.io/pool": pool}
	sts.Spec.Template.Spec.Tolerations = []corev1.Toleration{{Key: "e2e.stsroller.io/pool", Operator: corev1.TolerationOpEqual,
		Value: pool, Effect: corev1.TaintEffectNoSchedule}}
}

// drain cordons a node and evicts the test namespace's pods on it through
// the Eviction API, retrying while a budget refuses, as kubectl drain does,
// until none is left. afterFirst runs once, right after the first
// eviction that succeeds: the caller starts the competing rollout there, so
// the drain is sure to have shared the budget rather than found the node
// already emptied.
func (e *faultEnv) drain(node string, afterFirst func()) (evicted int) {
	e.t.Helper()
	if _, err := e.client.CoreV1().Nodes().Patch(e.ctx, node, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
	err := framework.Eventually(e.ctx, faultTimeout, 300*time.Millisecond, func(ctx context.Context) error {
		l, err := e.client.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return err
		}
		left := 0
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			left++
			err := e.client.CoreV1().Pods(e.ns).EvictV1(ctx, &policyv1.Eviction{
				ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: e.ns},
				DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
			})
			if err == nil {
				evicted++
				if afterFirst != nil {
					afterFirst()
					afterFirst = nil
				}
			}
		}
		if left > 0 {
			return fmt.Errorf("%d pods left on %s", left, node)
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return evicted
}

// TestFaultDrain: while stsroller rolls a StatefulSet out, another actor
// drains one of its nodes through the same PodDisruptionBudget; together
// they never take more than the budget allows, and the rollout completes.
func TestFaultDrain(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{})
	nodes, pool := privateNodes(t, e.client, e.ns, 2)
	n := pick[int32](6, 12)
	sts := faultSet(e.ns, "db", n, map[string]string{policy.AnnotationMaxUnavailable: "3"})
	onPool(sts, pool)
	if _, err := e.client.PolicyV1().PodDisruptionBudgets(e.ns).Create(e.ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create(sts)
	e.waitReady("db", int(n))
	for range pick(1, 4) {
		// The node with more of the pods: the scheduler may not spread them.
		pods, err := e.setPods(e.ctx, "db")
		if err != nil {
			t.Fatal(err)
		}
		on := map[string]int{}
		for _, p := range pods {
			on[p.Spec.NodeName]++
		}
		node := nodes[0]
		if on[nodes[1]] > on[nodes[0]] {
			node = nodes[1]
		}
		evicted := e.drain(node, func() { e.roll("db") })
		t.Logf("drained %s: %d pods evicted", node, evicted)
		if evicted == 0 { // the rollout never started
			t.Errorf("the drain of %s evicted nothing (pods per node: %v)", node, on)
			e.roll("db")
		}
		if _, err := e.client.CoreV1().Nodes().Patch(e.ctx, node, types.MergePatchType, []byte(`{"spec":{"unschedulable":false}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitComplete(faultTimeout, "db")
	}
}

// TestFaultLoad: many StatefulSets (10, 50 in soak) roll out at once with
// API faults on; all complete within the invariants.
func TestFaultLoad(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{faultRate: pick(0.05, 0.2)})
	var names []string
	for i := range pick(10, 50) {
		name := fmt.Sprintf("s%02d", i)
		names = append(names, name)
		e.create(faultSet(e.ns, name, 3, map[string]string{policy.AnnotationMaxUnavailable: "1"}))
	}
	for _, n := range names {
		e.waitReady(n, 3)
	}
	e.roll(names...)
	e.waitComplete(2*faultTimeout, names...)
}

func (e *faultEnv) patchSet(name, patch string) {
	e.t.Helper()
	if _, err := e.client.AppsV1().StatefulSets(e.ns).Patch(e.ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// TestFaultOddInput: StatefulSets and pods that a careless controller would
// trip over.
func TestFaultOddInput(t *testing.T) {
	t.Parallel()
	t.Run("zero-replicas", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "zero", 0, nil))
		e.create(faultSet(e.ns, "db", 3, nil))
		e.waitReady("db", 3)
		e.roll("zero", "db")
		e.waitComplete(faultTimeout, "db")
		// Nothing to update in a StatefulSet of 0 pods: no rollout, Idle.
		if st := e.status("zero"); st == nil || st.Phase != policy.PhaseIdle {
			t.Errorf("zero replicas: status %+v, want %s", st, policy.PhaseIdle)
		}
	})
	// No "max-replicas" case here: with spec.replicas 2147483647 the
	// built-in StatefulSet controller allocates a slot per replica
	// (16 GiB), which takes the whole local cluster down, not stsroller.
	// stsroller's side is covered without it: policy.TestComputeHugeReplicas
	// plans such a StatefulSet in bounded memory and time.
	t.Run("scale-mid-rollout", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 8, map[string]string{policy.AnnotationMaxUnavailable: "2"}))
		e.waitReady("db", 8)
		e.roll("db")
		e.waitDeletions(2)
		e.patchSet("db", `{"spec":{"replicas":4}}`)
		e.waitDeletions(6)
		e.patchSet("db", `{"spec":{"replicas":10}}`)
		e.waitComplete(faultTimeout, "db")
	})
	t.Run("orphan-delete", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 6, nil))
		e.waitReady("db", 6)
		e.roll("db")
		e.waitDeletions(1)
		orphan := metav1.DeletePropagationOrphan
		if err := e.client.AppsV1().StatefulSets(e.ns).Delete(e.ctx, "db", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
			t.Fatal(err)
		}
		// The checker flags a deletion of a pod of a StatefulSet being
		// deleted or of an orphan; give stsroller time to make one.
		before := e.check.Stats().Deletions
		time.Sleep(10 * time.Second)
		e.check.Resolve(true)
		pods, err := e.setPods(e.ctx, "db")
		if err != nil {
			t.Fatal(err)
		}
		if len(pods) < 5 {
			t.Errorf("%d pods left after the orphaning deletion, want at least 5", len(pods))
		}
		t.Logf("%d deletions seen before the orphaning, %d after", before, e.check.Stats().Deletions)
	})
	t.Run("foreground-delete", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 6, nil))
		e.waitReady("db", 6)
		pods, _ := e.setPods(e.ctx, "db")
		for _, p := range pods {
			p := p
			// A finalizer holds the pods, so the StatefulSet stays with its
			// deletion timestamp for a while.
			if _, err := e.client.CoreV1().Pods(e.ns).Patch(e.ctx, p.Name, types.MergePatchType,
				[]byte(`{"metadata":{"finalizers":["e2e.stsroller.io/hold"]}}`), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		e.roll("db")
		e.waitDeletions(1)
		fg := metav1.DeletePropagationForeground
		deleted := time.Now()
		if err := e.client.AppsV1().StatefulSets(e.ns).Delete(e.ctx, "db", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(8 * time.Second)
		evs, err := e.client.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=StatefulSet"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			at := ev.LastTimestamp.Time
			if ev.EventTime.Time.After(at) {
				at = ev.EventTime.Time
			}
			if (ev.Reason == policy.ReasonEvictedPod || ev.Reason == policy.ReasonDeletedUnhealthyPod) && at.After(deleted.Add(time.Second)) {
				t.Errorf("after the StatefulSet's deletion: %s %s", ev.Reason, ev.Message)
			}
		}
		pods, _ = e.setPods(e.ctx, "db")
		for _, p := range pods {
			_, _ = e.client.CoreV1().Pods(e.ns).Patch(context.Background(), p.Name, types.MergePatchType,
				[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	})
	t.Run("no-revision-label", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 4, nil))
		e.waitReady("db", 4)
		if _, err := e.client.CoreV1().Pods(e.ns).Patch(e.ctx, "db-1", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"controller-revision-hash":null}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.roll("db")
		// db-1's revision cannot be told: it is left alone and named,
		// and once only it is left the rollout says UnknownRevision.
		err := framework.Eventually(e.ctx, faultTimeout, 250*time.Millisecond, func(context.Context) error {
			st := e.status("db")
			if st == nil || st.Reason != policy.ReasonUnknownRevision || !strings.Contains(st.Message, "db-1") {
				return fmt.Errorf("status %+v, want %s naming db-1", st, policy.ReasonUnknownRevision)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Labelled again (at a revision that is not the update revision),
		// it is outdated and replaced.
		if _, err := e.client.CoreV1().Pods(e.ns).Patch(e.ctx, "db-1", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"controller-revision-hash":"db-old"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitComplete(faultTimeout, "db")
	})
	t.Run("other-owners", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 3, map[string]string{policy.AnnotationMaxUnavailable: "2"}))
		// An unmanaged StatefulSet whose pods also carry app=db, and a bare
		// pod with the labels of db's pods.
		web := faultSet(e.ns, "web", 2, nil)
		delete(web.Annotations, policy.AnnotationEnabled)
		web.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}
		web.Spec.Template.Labels = map[string]string{"tier": "web", "app": "db"}
		e.create(web)
		if _, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "stray", Labels: map[string]string{"app": "db", appsv1.ControllerRevisionHashLabelKey: "db-0000"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "registry.k8s.io/pause:3.10"}},
				TerminationGracePeriodSeconds: ptr.To[int64](1)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitReady("db", 6) // app=db: 3 of db, 2 of web, the stray
		e.roll("db")
		e.waitComplete(faultTimeout, "db")
		e.waitReady("db", 6)
	})
	t.Run("shared-pdb", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		for _, n := range []string{"a", "b"} {
			s := faultSet(e.ns, n, 4, map[string]string{policy.AnnotationMaxUnavailable: "2"})
			s.Spec.Template.Labels["group"] = "g"
			e.create(s)
		}
		if _, err := e.client.PolicyV1().PodDisruptionBudgets(e.ns).Create(e.ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "g"},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": "g"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitReady("a", 4)
		e.waitReady("b", 4)
		e.roll("a", "b")
		e.waitComplete(faultTimeout, "a", "b")
	})
	t.Run("stuck-terminating", func(t *testing.T) {
		t.Parallel()
		e := newFaultEnv(t, faultEnvOptions{})
		e.create(faultSet(e.ns, "db", 3, nil))
		e.waitReady("db", 3)
		// Highest ordinal first: db-2 goes first and hangs on a finalizer.
		if _, err := e.client.CoreV1().Pods(e.ns).Patch(e.ctx, "db-2", types.MergePatchType,
			[]byte(`{"metadata":{"finalizers":["e2e.stsroller.io/hold"]}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		release := func() {
			_, err := e.client.CoreV1().Pods(e.ns).Patch(context.Background(), "db-2", types.MergePatchType,
				[]byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Error(err)
			}
		}
		t.Cleanup(release)
		e.roll("db")
		e.waitDeletions(1)
		// A pod counts as stuck 30s after its grace period (30s) ended.
		err := framework.Eventually(e.ctx, 3*time.Minute, 250*time.Millisecond, func(context.Context) error {
			st := e.status("db")
			if st == nil || !strings.Contains(st.Message, "db-2") || !strings.Contains(st.Message, "e2e.stsroller.io/hold") {
				return fmt.Errorf("status %+v does not name the pod stuck terminating, db-2", st)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		release()
		e.waitComplete(faultTimeout, "db")
	})
}
