//go:build e2e

package e2e

// The DNS gate's tests run the real chain: BIND (a primary that takes
// TSIG-signed dynamic updates and a secondary that transfers the zone from it
// on NOTIFY), external-dns v0.22 publishing the headless Service into the
// primary (--source=service --provider=rfc2136 --policy=sync --events), and
// stsroller asking both servers (--dns-servers) before it sets a pod's
// stsroller.io/dns-propagated condition.
//
// Every test has its own namespace, its own external-dns (scoped to that
// namespace, with its own TXT owner id, so one test can stop it) and its own
// subdomain <namespace>.example.test, so the tests share one BIND pair; only
// TestDNSUnreachableServerBlocks/paused, which pauses a server, has its own.
//
// The pod template waits for both readiness gates: stsroller.io/dns-propagated
// and the test's health gate (framework.HealthGate, kept True by the
// PodWatcher). A pod is Ready only once it is healthy and its name resolves,
// as a user would set it up, and the PodWatcher measures unavailability as in
// the other rollout tests.
//
// kwok hands a freed pod IP to the next pod on the same node, so a replacement
// would often get its predecessor's IP back and its stale DNS record would be
// right by accident. The pods of each revision are therefore pinned to a node
// of their own (pod CIDRs are per node): every replacement has a new IP that
// the record must catch up with, and the tests check that it does.
//
// Run with -v to read the propagation and gate latencies TestDNSGateRollout
// measures.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/dnsprobe"
	"github.com/stsroller/stsroller/e2e/bind"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

const (
	// dnsZone is the zone of the BIND servers; each test publishes under
	// <namespace>.dnsZone.
	dnsZone = "example.test"
	// externalDNSHostname is the annotation external-dns publishes a Service
	// under; for a headless Service each pod gets <hostname>.<value>.
	externalDNSHostname = "external-dns.kubernetes.io/hostname"
	// externalDNSInterval is external-dns's --interval; with --events it also
	// syncs on changes, at most every externalDNSEventInterval.
	externalDNSInterval      = 2 * time.Second
	externalDNSEventInterval = time.Second
	// hostnameLabel pins a revision's pods to a node.
	hostnameLabel = "kubernetes.io/hostname"
	// dnsTimeout is stsroller's --dns-timeout: a paused server costs a check
	// this long.
	dnsTimeout = time.Second
)

// externalDNSBinary is $STSROLLER_BIN_DIR/external-dns. The DNS tests are
// skipped only when STSROLLER_BIN_DIR is unset; a directory without
// external-dns fails them.
func externalDNSBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("STSROLLER_BIN_DIR")
	if dir == "" {
		t.Skip("STSROLLER_BIN_DIR is unset: the DNS gate tests need external-dns; " +
			"run hack/tools.sh build external-dns and set STSROLLER_BIN_DIR=$(hack/tools.sh bindir)")
	}
	bin := filepath.Join(dir, "external-dns")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("external-dns not found under STSROLLER_BIN_DIR (run hack/tools.sh build external-dns): %v", err)
	}
	return bin
}

// skipDeployed skips, in the deployed mode, a DNS test that needs an
// stsroller of its own (its own BIND servers, or other --dns-servers than
// the shared pair), and every DNS test where the deployed controller was not
// given the shared pair (kind: BIND runs on this host, out of its pods'
// reach).
func skipDeployed(t *testing.T, o dnsRolloutOptions) {
	t.Helper()
	if !framework.Deployed() {
		return
	}
	sharedBind.mu.Lock()
	held := sharedBind.held
	sharedBind.mu.Unlock()
	switch {
	case !held:
		t.Skipf("%s=deployed: the deployed controller cannot reach this host's BIND servers (only the local cluster's real node can)",
			framework.EnvController)
	case o.servers != nil || o.dnsServers != nil:
		t.Skipf("%s=deployed: the test needs an stsroller of its own, whose --dns-servers are BIND servers of its own",
			framework.EnvController)
	}
}

// dnsControllerArgs are stsroller's DNS flags in the DNS tests: the servers,
// and short intervals.
func dnsControllerArgs(servers []string) []string {
	return []string{
		"--dns-servers=" + strings.Join(servers, ","),
		"--dns-recheck-interval=5s",
		"--dns-timeout=" + dnsTimeout.String(),
	}
}

// sharedBind is the BIND pair of the DNS tests that run at the same time; the
// last test to finish stops it, unless TestMain holds it for the whole run
// (the deployed mode).
var sharedBind struct {
	mu      sync.Mutex
	refs    int
	held    bool
	servers *bind.Servers
}

// holdSharedDNSServers makes s the shared pair for the whole run; the
// caller stops it.
func holdSharedDNSServers(s *bind.Servers) {
	sharedBind.mu.Lock()
	defer sharedBind.mu.Unlock()
	sharedBind.servers, sharedBind.held = s, true
}

// sharedDNSServers returns the shared BIND pair, starting it if need be.
func sharedDNSServers(t *testing.T) *bind.Servers {
	t.Helper()
	sharedBind.mu.Lock()
	defer sharedBind.mu.Unlock()
	if sharedBind.servers == nil {
		s, err := bind.Start(context.Background(), bind.Options{Zone: dnsZone})
		if err != nil {
			t.Fatalf("starting BIND: %v", err)
		}
		sharedBind.servers = s
	}
	s := sharedBind.servers
	sharedBind.refs++
	t.Cleanup(func() {
		logBindOnFailure(t, s)
		sharedBind.mu.Lock()
		defer sharedBind.mu.Unlock()
		sharedBind.refs--
		if sharedBind.refs == 0 && !sharedBind.held {
			if err := s.Stop(); err != nil {
				t.Errorf("stopping BIND: %v", err)
			}
			sharedBind.servers = nil
		}
	})
	return s
}

// ownDNSServers starts a BIND pair for t alone.
func ownDNSServers(t *testing.T) *bind.Servers {
	t.Helper()
	s, err := bind.Start(t.Context(), bind.Options{Zone: dnsZone})
	if err != nil {
		t.Fatalf("starting BIND: %v", err)
	}
	t.Cleanup(func() {
		logBindOnFailure(t, s)
		if err := s.Stop(); err != nil {
			t.Errorf("stopping BIND: %v", err)
		}
	})
	return s
}

func logBindOnFailure(t *testing.T, s *bind.Servers) {
	if !t.Failed() {
		return
	}
	for _, srv := range []*bind.Server{s.Primary, s.Secondary} {
		t.Logf("named %s (%s) log (tail):\n%s", srv.Name, srv.Addr, fileTail(srv.LogPath, 30))
	}
}

func fileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// deadDNSAddr returns a 127.0.0.1 address nothing listens on: questions to
// it are refused at once.
func deadDNSAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// dnsRollout is a rollout whose StatefulSet sets stsroller.io/dns-domain, with
// external-dns publishing its pods and a recorder of what the DNS gate did.
type dnsRollout struct {
	*rollout
	domain     string
	servers    *bind.Servers
	maxUnavail int
	rec        *dnsRecorder
	nodes      []string // the node of each revision; nil when not pinned
	extDNSOpts bind.ExternalDNSOptions
	extDNS     *bind.ExternalDNS // nil while stopped
}

type dnsRolloutOptions struct {
	replicas       int32
	maxUnavailable int
	// servers default to the shared BIND pair.
	servers *bind.Servers
	// dnsServers are stsroller's --dns-servers; default both servers.
	dnsServers []string
	// noDNSReadinessGate leaves stsroller.io/dns-propagated out of the pod
	// template's readiness gates (the health gate stays).
	noDNSReadinessGate bool
	// hideNotReady: the Service does not set publishNotReadyAddresses.
	hideNotReady bool
	// noWait returns without waiting for the pods to turn Ready.
	noWait bool
}

func newDNSRollout(t *testing.T, o dnsRolloutOptions) *dnsRollout {
	t.Helper()
	skipDeployed(t, o)
	extBin := externalDNSBinary(t)
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)
	domain := ns + "." + dnsZone
	servers := o.servers
	if servers == nil {
		servers = sharedDNSServers(t)
	}
	r := &dnsRollout{
		rollout:    &rollout{t: t, ctx: ctx, client: client, ns: ns},
		domain:     domain,
		servers:    servers,
		maxUnavail: o.maxUnavailable,
		nodes:      twoNodes(t, client),
	}

	labels := map[string]string{"app": "db"}
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Annotations: map[string]string{externalDNSHostname: domain}},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels,
			PublishNotReadyAddresses: !o.hideNotReady,
			Ports:                    []corev1.ServicePort{{Name: "db", Port: 5432}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	logDir := t.TempDir()
	r.extDNSOpts = bind.ExternalDNSOptions{
		Binary:               extBin,
		Kubeconfig:           os.Getenv("KUBECONFIG"),
		Servers:              servers,
		Interval:             externalDNSInterval,
		MinEventSyncInterval: externalDNSEventInterval,
		Namespace:            ns,
		OwnerID:              ns,
		LogPath:              filepath.Join(logDir, "external-dns.log"),
	}
	r.startExternalDNS()
	t.Cleanup(func() {
		r.stopExternalDNS()
		if t.Failed() {
			t.Logf("external-dns log (tail):\n%s", fileTail(r.extDNSOpts.LogPath, 40))
		}
	})

	r.rec = newDNSRecorder(ctx, t, client, ns, domain, servers.Addrs())

	var extraGates []corev1.PodReadinessGate
	if !o.noDNSReadinessGate {
		extraGates = append(extraGates, corev1.PodReadinessGate{ConditionType: policy.ConditionDNSPropagated})
	}
	sts := dbStatefulSet(ns, o.replicas, appsv1.OnDeleteStatefulSetStrategyType, map[string]string{
		policy.AnnotationEnabled:        "true",
		policy.AnnotationDNSDomain:      domain,
		policy.AnnotationMaxUnavailable: fmt.Sprint(o.maxUnavailable),
	}, extraGates...)
	if r.nodes != nil {
		sts.Spec.Template.Spec.NodeSelector = map[string]string{hostnameLabel: r.nodes[0]}
	}
	created, err := client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.sts = created
	r.watch = framework.WatchPods(ctx, t, client, created, leaderSelector)
	dnsServers := o.dnsServers
	if dnsServers == nil {
		dnsServers = servers.Addrs()
	}
	r.controller = framework.StartController(t, client, framework.ControllerOptions{
		Binary: binary(t), Namespace: ns, Args: dnsControllerArgs(dnsServers),
	})
	if !o.noWait {
		r.waitAllReady(int(o.replicas))
		r.watch.ResetPeak()
	}
	return r
}

func (r *dnsRollout) startExternalDNS() {
	r.t.Helper()
	e, err := bind.StartExternalDNS(r.ctx, r.extDNSOpts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.extDNS = e
}

func (r *dnsRollout) stopExternalDNS() {
	if r.extDNS == nil {
		return
	}
	if err := r.extDNS.Stop(); err != nil {
		r.t.Errorf("stopping external-dns: %v", err)
	}
	r.extDNS = nil
}

// twoNodes returns two schedulable nodes' hostname labels, sorted, or nil
// when the cluster has fewer (the revisions are then not pinned).
func twoNodes(t *testing.T, client kubernetes.Interface) []string {
	t.Helper()
	l, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range l.Items {
		h := n.Labels[hostnameLabel]
		if n.Spec.Unschedulable || h == "" || slices.ContainsFunc(n.Spec.Taints, func(tn corev1.Taint) bool {
			return tn.Effect == corev1.TaintEffectNoSchedule || tn.Effect == corev1.TaintEffectNoExecute
		}) {
			continue
		}
		out = append(out, h)
	}
	if len(out) < 2 {
		t.Logf("fewer than 2 schedulable nodes: the revisions share nodes, and replacements may get their predecessors' IPs")
		return nil
	}
	slices.Sort(out)
	return out[:2]
}

// newRevision changes the pod template (and, when pinned, moves it to the
// second node) and returns the update revision.
func (r *dnsRollout) newRevision(version string) string {
	r.t.Helper()
	sel := ""
	if r.nodes != nil {
		sel = fmt.Sprintf(`"nodeSelector":{%q:%q},`, hostnameLabel, r.nodes[1])
	}
	return r.newTemplate(version, sel)
}

// waitStatus waits until the status has the phase and reason.
func (r *dnsRollout) waitStatus(phase policy.Phase, reason string, timeout time.Duration) *policy.Status {
	r.t.Helper()
	var st *policy.Status
	err := framework.Eventually(r.ctx, timeout, 200*time.Millisecond, func(context.Context) error {
		st = r.status()
		if st == nil || st.Phase != phase || st.Reason != reason {
			return fmt.Errorf("status %+v, want %s/%s", st, phase, reason)
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// boundedFor checks, for d, that no more than maxUnavailable pods were
// deleted in all and that no more were unavailable at once.
func (r *dnsRollout) boundedFor(d time.Duration) {
	r.t.Helper()
	err := framework.Consistently(r.ctx, d, 250*time.Millisecond, func(context.Context) error {
		if dels := r.watch.Deletions(); len(dels) > r.maxUnavail {
			return fmt.Errorf("%d pods deleted (%v), max-unavailable is %d", len(dels), names(dels), r.maxUnavail)
		}
		if p := r.watch.Peak(); p > r.maxUnavail {
			return fmt.Errorf("peak unavailable %d, max-unavailable is %d", p, r.maxUnavail)
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// podRecord is what the recorder saw of one pod (one UID).
type podRecord struct {
	name string
	uid  types.UID
	ip   string
	// ipAt is when the pod was first seen with an IP.
	ipAt time.Time
	// propagatedAt is when its dns-propagated condition was first seen True,
	// and propagatedMsg that condition's message.
	propagatedAt  time.Time
	propagatedMsg string
	// atFlip is what both servers answered, asked the moment the condition
	// was seen turning True.
	atFlip *dnsprobe.Result
	// visible is when each server was first seen serving ip (only while the
	// recorder polls).
	visible []time.Time
	// falseAfterTrue counts the condition going back from True.
	falseAfterTrue int
	deletedAt      time.Time
}

func (p *podRecord) visibleEverywhere() time.Time {
	var last time.Time
	for _, v := range p.visible {
		if v.IsZero() {
			return time.Time{}
		}
		if v.After(last) {
			last = v
		}
	}
	return last
}

type eventKind int

const (
	podDeleted eventKind = iota
	podPropagated
)

// gateEvent is a deletion or a condition turning True, in the order the API
// server made them (one watch on the namespace's pods delivers them in
// resourceVersion order).
type gateEvent struct {
	kind eventKind
	pod  string
	uid  types.UID
	at   time.Time
}

// dnsRecorder watches the pods of one StatefulSet and records when each got
// its IP, when its dns-propagated condition turned True (asking both servers
// at that moment), and when it was deleted.
type dnsRecorder struct {
	t       testing.TB
	ctx     context.Context
	name    func(pod string) string
	servers []string
	both    *dnsprobe.Authoritative
	each    []*dnsprobe.Authoritative

	mu      sync.Mutex
	pods    map[types.UID]*podRecord
	order   []types.UID
	events  []gateEvent
	polling bool
	probes  sync.WaitGroup
}

func newDNSRecorder(ctx context.Context, t testing.TB, client kubernetes.Interface, ns, domain string, servers []string) *dnsRecorder {
	t.Helper()
	newProber := func(servers ...string) *dnsprobe.Authoritative {
		p, err := dnsprobe.New(dnsprobe.Options{Servers: servers, Timeout: dnsTimeout})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	rec := &dnsRecorder{
		t: t, ctx: ctx, servers: servers,
		name: func(pod string) string { return pod + "." + domain },
		both: newProber(servers...),
		pods: map[types.UID]*podRecord{},
	}
	for _, s := range servers {
		rec.each = append(rec.each, newProber(s))
	}
	ctx, cancel := context.WithCancel(ctx)
	factory := kinformers.NewSharedInformerFactoryWithOptions(client, 0, kinformers.WithNamespace(ns),
		kinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "app=db" }))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { rec.changed(nil, obj.(*corev1.Pod)) },
		UpdateFunc: func(old, cur any) { rec.changed(old.(*corev1.Pod), cur.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok && p.DeletionTimestamp == nil {
				rec.deleted(p)
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
		rec.probes.Wait()
	})
	return rec
}

func (rec *dnsRecorder) changed(old, cur *corev1.Pod) {
	now := time.Now()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	p := rec.pods[cur.UID]
	if p == nil {
		p = &podRecord{name: cur.Name, uid: cur.UID, visible: make([]time.Time, len(rec.servers))}
		rec.pods[cur.UID] = p
		rec.order = append(rec.order, cur.UID)
	}
	if p.ip == "" && cur.Status.PodIP != "" {
		p.ip, p.ipAt = cur.Status.PodIP, now
	}
	was := old != nil && framework.PodConditionStatus(old, policy.ConditionDNSPropagated) == corev1.ConditionTrue
	is := framework.PodConditionStatus(cur, policy.ConditionDNSPropagated) == corev1.ConditionTrue
	switch {
	case is && !was && p.propagatedAt.IsZero():
		p.propagatedAt = now
		for _, c := range cur.Status.Conditions {
			if c.Type == policy.ConditionDNSPropagated {
				p.propagatedMsg = c.Message
			}
		}
		rec.events = append(rec.events, gateEvent{kind: podPropagated, pod: cur.Name, uid: cur.UID, at: now})
		// Ask both servers now, while the next event waits.
		name, ip := rec.name(cur.Name), cur.Status.PodIP
		rec.probes.Add(1)
		go func() {
			defer rec.probes.Done()
			var want []netip.Addr
			if a, err := netip.ParseAddr(ip); err == nil {
				want = append(want, a)
			}
			res := rec.both.Probe(rec.ctx, name, want)
			rec.mu.Lock()
			p.atFlip = &res
			rec.mu.Unlock()
		}()
	case was && !is:
		p.falseAfterTrue++
	}
	if old != nil && old.DeletionTimestamp == nil && cur.DeletionTimestamp != nil {
		rec.deletedLocked(p, now)
	}
}

func (rec *dnsRecorder) deleted(pod *corev1.Pod) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if p := rec.pods[pod.UID]; p != nil {
		rec.deletedLocked(p, time.Now())
	}
}

func (rec *dnsRecorder) deletedLocked(p *podRecord, now time.Time) {
	if !p.deletedAt.IsZero() {
		return
	}
	p.deletedAt = now
	rec.events = append(rec.events, gateEvent{kind: podDeleted, pod: p.name, uid: p.uid, at: now})
}

// pollVisibility asks each server, every 100ms, for every live pod whose IP
// it has not been seen serving yet, until ctx ends.
func (rec *dnsRecorder) pollVisibility(ctx context.Context) {
	rec.mu.Lock()
	if rec.polling {
		rec.mu.Unlock()
		return
	}
	rec.polling = true
	rec.mu.Unlock()
	type job struct {
		p      *podRecord
		server int
		name   string
		ip     netip.Addr
	}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var jobs []job
			rec.mu.Lock()
			for _, p := range rec.pods {
				if p.ip == "" || !p.deletedAt.IsZero() {
					continue
				}
				ip, err := netip.ParseAddr(p.ip)
				if err != nil {
					continue
				}
				for i, v := range p.visible {
					if v.IsZero() {
						jobs = append(jobs, job{p, i, rec.name(p.name), ip})
					}
				}
			}
			rec.mu.Unlock()
			var wg sync.WaitGroup
			for _, j := range jobs {
				wg.Go(func() {
					res := rec.each[j.server].Probe(ctx, j.name, []netip.Addr{j.ip})
					if !res.Propagated {
						return
					}
					now := time.Now()
					rec.mu.Lock()
					if j.p.visible[j.server].IsZero() {
						j.p.visible[j.server] = now
					}
					rec.mu.Unlock()
				})
			}
			wg.Wait()
		}
	}()
}

// snapshot waits for the probes in flight and returns copies of the records,
// in the order the pods appeared, and the events.
func (rec *dnsRecorder) snapshot() ([]podRecord, []gateEvent) {
	rec.probes.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	pods := make([]podRecord, 0, len(rec.order))
	for _, uid := range rec.order {
		p := *rec.pods[uid]
		p.visible = slices.Clone(p.visible)
		pods = append(pods, p)
	}
	return pods, slices.Clone(rec.events)
}

// checkDeletionsWaitForDNS checks the order of deletions and propagations: a
// pod was deleted only while fewer than maxUnavailable replaced pods were
// still waiting for their successor's name to propagate (the pod deleted
// counts itself).
func checkDeletionsWaitForDNS(events []gateEvent, maxUnavailable int) error {
	waiting := map[string]types.UID{} // pod name -> UID of the deleted pod whose successor is not propagated
	for _, e := range events {
		switch e.kind {
		case podDeleted:
			var others []string
			for n := range waiting {
				if n != e.pod {
					others = append(others, n)
				}
			}
			if len(others)+1 > maxUnavailable {
				sort.Strings(others)
				return fmt.Errorf("%s was deleted while the replacements of %v were not yet propagated (max-unavailable %d)",
					e.pod, others, maxUnavailable)
			}
			waiting[e.pod] = e.uid
		case podPropagated:
			if uid, ok := waiting[e.pod]; ok && uid != e.uid {
				delete(waiting, e.pod)
			}
		}
	}
	return nil
}

// TestDNSCheckDeletionsWaitForDNS: the ordering check itself, on made-up
// histories, so that TestDNSGateRollout's passing means something.
func TestDNSCheckDeletionsWaitForDNS(t *testing.T) {
	del := func(pod, uid string) gateEvent { return gateEvent{kind: podDeleted, pod: pod, uid: types.UID(uid)} }
	prop := func(pod, uid string) gateEvent { return gateEvent{kind: podPropagated, pod: pod, uid: types.UID(uid)} }
	for _, tc := range []struct {
		name   string
		events []gateEvent
		ok     bool
	}{
		{"batches of two", []gateEvent{del("db-4", "a"), del("db-3", "b"), prop("db-4", "c"), del("db-2", "d"), prop("db-3", "e"), prop("db-2", "f")}, true},
		{"third before a replacement propagated", []gateEvent{del("db-4", "a"), del("db-3", "b"), del("db-2", "d")}, false},
		{"the deleted pod's own propagation does not count", []gateEvent{del("db-4", "a"), prop("db-4", "a"), del("db-3", "b"), del("db-2", "c")}, false},
	} {
		err := checkDeletionsWaitForDNS(tc.events, 2)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestDNSGateRollout: during a rollout no pod's dns-propagated condition turns
// True before both servers serve its current IP, and no pod is deleted while
// max-unavailable replaced pods still wait for DNS. The rollout completes. It
// also measures how long propagation and the gate take (run with -v).
func TestDNSGateRollout(t *testing.T) {
	t.Parallel()
	r := newDNSRollout(t, dnsRolloutOptions{replicas: 5, maxUnavailable: 2})
	initial := map[string]string{}
	for _, p := range r.pods() {
		initial[p.Name] = p.Status.PodIP
	}
	r.rec.pollVisibility(r.ctx)
	rev := r.newRevision("2")
	r.waitRolledOut(rev, 5)

	pods, events := r.rec.snapshot()
	r.checkVouchedOnlyWhenServed()
	if n := len(r.watch.Deletions()); n != 5 {
		t.Errorf("%d deletions, want each of the 5 pods once: %v", n, names(r.watch.Deletions()))
	}
	if p := r.watch.Peak(); p > r.maxUnavail {
		t.Errorf("peak unavailable = %d, want at most %d", p, r.maxUnavail)
	}
	if err := checkDeletionsWaitForDNS(events, r.maxUnavail); err != nil {
		t.Error(err)
	}
	var replacements []podRecord
	for _, p := range pods {
		if p.propagatedAt.IsZero() {
			if p.deletedAt.IsZero() {
				t.Errorf("pod %s (%s) never turned dns-propagated", p.name, p.uid)
			}
			continue
		}
		if want := " resolves to " + p.ip + " at every authoritative server"; !strings.Contains(p.propagatedMsg, want) {
			t.Errorf("pod %s's condition message %q does not vouch for its IP %s", p.name, p.propagatedMsg, p.ip)
		}
		if p.falseAfterTrue > 0 {
			t.Errorf("pod %s's condition went back from True %d times", p.name, p.falseAfterTrue)
		}
		if old, ok := initial[p.name]; ok && p.deletedAt.IsZero() {
			if r.nodes != nil && old == p.ip {
				t.Errorf("replacement %s got its predecessor's IP %s: the test would not see the gate wait", p.name, p.ip)
			}
			replacements = append(replacements, p)
		}
	}
	if len(replacements) != 5 {
		t.Errorf("%d replacements recorded, want 5", len(replacements))
	}
	reportLatencies(t, replacements)
}

// reportLatencies logs, for each replacement, how long its name took to reach
// each server after the pod got its IP, and how much later the gate said so.
func reportLatencies(t *testing.T, pods []podRecord) {
	t.Helper()
	var toBoth, gate, total []time.Duration
	var b strings.Builder
	fmt.Fprintf(&b, "external-dns --interval=%s --min-event-sync-interval=%s --events; stsroller --dns-timeout=%s, gate backoff from %s\n",
		externalDNSInterval, externalDNSEventInterval, dnsTimeout, dnsgate.DefaultMinBackoff)
	fmt.Fprintf(&b, "%-6s %-14s %10s %10s %10s %10s %10s\n", "pod", "ip", "ip→primary", "ip→second.", "ip→both", "gate", "ip→True")
	for _, p := range pods {
		both := p.visibleEverywhere()
		if both.IsZero() || p.ipAt.IsZero() {
			fmt.Fprintf(&b, "%-6s %-14s (not seen at every server by the poller)\n", p.name, p.ip)
			continue
		}
		d := func(at time.Time) time.Duration { return at.Sub(p.ipAt).Round(10 * time.Millisecond) }
		g := p.propagatedAt.Sub(both)
		toBoth, gate, total = append(toBoth, both.Sub(p.ipAt)), append(gate, g), append(total, p.propagatedAt.Sub(p.ipAt))
		fmt.Fprintf(&b, "%-6s %-14s %10s %10s %10s %10s %10s\n", p.name, p.ip,
			d(p.visible[0]), d(p.visible[1]), d(both), g.Round(10*time.Millisecond), d(p.propagatedAt))
	}
	summary := func(name string, ds []time.Duration) {
		if len(ds) == 0 {
			return
		}
		slices.Sort(ds)
		fmt.Fprintf(&b, "%-38s min %6s  median %6s  max %6s\n", name,
			ds[0].Round(10*time.Millisecond), ds[len(ds)/2].Round(10*time.Millisecond), ds[len(ds)-1].Round(10*time.Millisecond))
	}
	summary("IP → visible at both servers", toBoth)
	summary("visible at both → condition True (gate)", gate)
	summary("IP → condition True", total)
	b.WriteString("(the poller asks every 100ms, so gate times are ±100ms)")
	t.Logf("DNS propagation of the replacements:\n%s", b.String())
}

// TestDNSGateStallsWithoutExternalDNS: with external-dns stopped, the
// replacements' names keep their old (stale) addresses, so the rollout waits
// at the gate with max-unavailable pods replaced and no more; once external-dns
// runs again, it completes.
func TestDNSGateStallsWithoutExternalDNS(t *testing.T) {
	t.Parallel()
	r := newDNSRollout(t, dnsRolloutOptions{replicas: 5, maxUnavailable: 2})
	r.stopExternalDNS()
	rev := r.newRevision("2")
	r.waitDeletions(r.maxUnavail)
	r.boundedFor(10 * time.Second)

	st := r.waitStatus(policy.PhaseRolling, policy.ReasonWaitingForDNS, 10*time.Second)
	dels := r.watch.Deletions()
	for _, d := range dels {
		if _, ok := st.WaitingForDNS[d.Pod]; !ok {
			t.Errorf("status.waitingForDNS = %v does not name the replaced pod %s", st.WaitingForDNS, d.Pod)
		}
	}
	// The replacement's name still has its predecessor's address: the gate
	// was not fooled by a record that exists.
	for _, p := range r.pods() {
		if p.Name != dels[0].Pod || p.Status.PodIP == "" {
			continue
		}
		if framework.PodConditionStatus(&p, policy.ConditionDNSPropagated) == corev1.ConditionTrue {
			t.Errorf("%s is dns-propagated without external-dns", p.Name)
		}
		res := r.rec.both.Probe(r.ctx, r.rec.name(p.Name), []netip.Addr{netip.MustParseAddr(p.Status.PodIP)})
		if res.Propagated {
			t.Errorf("%s resolves to its new IP without external-dns: %s", p.Name, res.Message)
		}
		t.Logf("while external-dns is stopped: %s", res.Message)
	}

	r.startExternalDNS()
	r.waitRolledOut(rev, 5)
	if p := r.watch.Peak(); p > r.maxUnavail {
		t.Errorf("peak unavailable = %d, want at most %d", p, r.maxUnavail)
	}
	if n := len(r.watch.Deletions()); n != 5 {
		t.Errorf("%d deletions, want each of the 5 pods once: %v", n, names(r.watch.Deletions()))
	}
	_, events := r.rec.snapshot()
	if err := checkDeletionsWaitForDNS(events, r.maxUnavail); err != nil {
		t.Error(err)
	}
}

// TestDNSGateDeadlockWarning: the template waits for the DNS gate but the
// Service does not publish not-ready addresses, so external-dns never
// publishes a pod and none can turn Ready. stsroller warns (DNSGateDeadlock)
// and deletes nothing, not even the never-ready pods of an old revision.
func TestDNSGateDeadlockWarning(t *testing.T) {
	t.Parallel()
	r := newDNSRollout(t, dnsRolloutOptions{replicas: 3, maxUnavailable: 2, hideNotReady: true, noWait: true})
	ev := r.waitEvent(policy.ReasonDNSGateDeadlock, corev1.EventTypeWarning)
	if !strings.Contains(ev.Message, "publishNotReadyAddresses") {
		t.Errorf("DNSGateDeadlock message %q does not say what to set", ev.Message)
	}
	// Every pod exists, with an IP, before the new revision: the old ones are
	// what a planner without the guard would delete as unhealthy.
	err := framework.Eventually(r.ctx, time.Minute, 200*time.Millisecond, func(context.Context) error {
		n := 0
		for _, p := range r.pods() {
			if p.Status.PodIP != "" {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("%d of 3 pods have an IP", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.newRevision("2")
	r.noneReplaced(8 * time.Second)
	if st := r.status(); st == nil || st.Phase != policy.PhaseBlocked || st.Reason != policy.ReasonDNSGateDeadlock {
		t.Errorf("status = %+v, want Blocked/%s", st, policy.ReasonDNSGateDeadlock)
	}
	for _, p := range r.pods() {
		if framework.PodReady(&p) {
			t.Errorf("pod %s is Ready", p.Name)
		}
		// The cause, seen from DNS: external-dns published none of them.
		res := r.rec.both.Probe(r.ctx, r.rec.name(p.Name), []netip.Addr{netip.MustParseAddr(p.Status.PodIP)})
		if res.Propagated || res.Reason != dnsprobe.ReasonNXDomain {
			t.Errorf("%s: %s; want NXDOMAIN, external-dns should not publish a pod that is not Ready", p.Name, res.Message)
		}
	}
}

// TestDNSUnreachableServerBlocks: a server that cannot be asked means "not
// propagated": a rollout deletes no more than max-unavailable pods, says
// Blocked/DNSUnreachable with a Warning, and completes once the server is
// back.
func TestDNSUnreachableServerBlocks(t *testing.T) {
	t.Parallel()
	// paused: the secondary stops answering (SIGSTOP; questions time out)
	// after the pods are Ready, then a rollout starts.
	t.Run("paused", func(t *testing.T) {
		t.Parallel()
		servers := ownDNSServers(t)
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 5, maxUnavailable: 2, servers: servers})
		if err := servers.Secondary.Pause(); err != nil {
			t.Fatal(err)
		}
		resumed := false
		t.Cleanup(func() {
			if !resumed {
				_ = servers.Secondary.Resume()
			}
		})
		rev := r.newRevision("2")
		st := r.waitStatus(policy.PhaseBlocked, policy.ReasonDNSUnreachable, 30*time.Second)
		if !strings.Contains(st.Message, servers.Secondary.Addr) {
			t.Errorf("status message %q does not name the paused server %s", st.Message, servers.Secondary.Addr)
		}
		ev := r.waitEvent(policy.ReasonDNSUnreachable, corev1.EventTypeWarning)
		t.Logf("DNSUnreachable event: %s", ev.Message)
		r.boundedFor(8 * time.Second)
		if st := r.status(); st == nil || st.Phase != policy.PhaseBlocked {
			t.Errorf("status = %+v after 8s with the server paused, want Blocked", st)
		}

		if err := servers.Secondary.Resume(); err != nil {
			t.Fatal(err)
		}
		resumed = true
		r.waitRolledOut(rev, 5)
		if p := r.watch.Peak(); p > r.maxUnavail {
			t.Errorf("peak unavailable = %d, want at most %d", p, r.maxUnavail)
		}
	})
	// dead-port: one of --dns-servers refuses every question from the
	// start. The template has only the health gate, so the pods are Ready;
	// the planner alone must hold them unavailable.
	t.Run("dead-port", func(t *testing.T) {
		t.Parallel()
		servers := sharedDNSServers(t)
		dead := deadDNSAddr(t)
		r := newDNSRollout(t, dnsRolloutOptions{replicas: 4, maxUnavailable: 2, servers: servers,
			dnsServers: []string{servers.Primary.Addr, dead}, noDNSReadinessGate: true})
		r.newRevision("2")
		st := r.waitStatus(policy.PhaseBlocked, policy.ReasonDNSUnreachable, 30*time.Second)
		if !strings.Contains(st.Message, dead) {
			t.Errorf("status message %q does not name the dead server %s", st.Message, dead)
		}
		r.waitEvent(policy.ReasonDNSUnreachable, corev1.EventTypeWarning)
		r.noneReplaced(6 * time.Second)
		for _, p := range r.pods() {
			if framework.PodConditionStatus(&p, policy.ConditionDNSPropagated) == corev1.ConditionTrue {
				t.Errorf("pod %s is dns-propagated while %s refuses every question", p.Name, dead)
			}
		}
	})
}
