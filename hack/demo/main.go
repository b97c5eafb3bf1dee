// Command demo starts a local cluster (e2e/cluster), runs stsroller in it,
// creates a small database-like StatefulSet with one crash-looping pod, a
// PodDisruptionBudget and a leader, rolls out a new revision, and draws the
// rollout in the terminal until it completes.
//
//	make demo              # or: go run ./hack/demo
//	go run ./hack/demo -keep   # leave the cluster up afterwards, for kubectl
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/cluster"
	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/informers"
	"github.com/stsroller/stsroller/policy"
	"github.com/stsroller/stsroller/rollout"
)

const (
	ns       = "demo"
	name     = "db"
	replicas = 10
	// healthGate is the demo's stand-in for a database's readiness: the demo
	// sets it True on a pod a while after the pod starts, except on the
	// crash-looping one.
	healthGate corev1.PodConditionType = "demo.stsroller.io/healthy"
	startTime                          = 2 * time.Second
	broken                             = "db-3"
	leader                             = "db-7"
)

func main() {
	keep := flag.Bool("keep", false, "keep the cluster running after the rollout (Ctrl-C to stop)")
	flag.Parse()
	klog.InitFlags(nil)
	_ = flag.Set("v", "0")
	_ = flag.Set("logtostderr", "false")
	_ = flag.Set("stderrthreshold", "FATAL")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, keep bool) error {
	say("Starting a local Kubernetes (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)...")
	began := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Nodes: 3})
	if err != nil {
		return err
	}
	defer c.Stop()
	say("Cluster up in %s. KUBECONFIG=%s", time.Since(began).Round(100*time.Millisecond), c.Kubeconfig)
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}

	// The demo's own goroutines end before the cluster stops.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopStsroller, err := startStsroller(ctx, client)
	if err != nil {
		return err
	}
	defer stopStsroller()

	if err := setUp(ctx, client); err != nil {
		return err
	}
	go drive(ctx, client)
	say("Waiting for the StatefulSet %s/%s (%d pods; %s crash-loops; %s is the leader)...", ns, name, replicas, broken, leader)
	if err := waitFor(ctx, func() (bool, error) {
		pods, err := list(ctx, client)
		ready := 0
		for _, p := range pods {
			if isReady(&p) {
				ready++
			}
		}
		return ready == replicas-1, err
	}); err != nil {
		return err
	}
	say("Rolling out a new revision: max-unavailable 3, a PDB allowing 2 disruptions, leader last.")
	say("Legend: o old ready  x old broken  N new ready  n new starting  . gone/terminating  * leader")
	if _, err := client.AppsV1().StatefulSets(ns).Patch(ctx, name, types.StrategicMergePatchType,
		[]byte(`{"spec":{"template":{"spec":{"containers":[{"name":"db","env":[{"name":"VERSION","value":"2"}]}]}}}}`),
		metav1.PatchOptions{}); err != nil {
		return err
	}
	start := time.Now()
	lastLine := ""
	err = waitFor(ctx, func() (bool, error) {
		sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pods, err := list(ctx, client)
		if err != nil {
			return false, err
		}
		st := policy.ParseStatus(sts.Annotations)
		line := render(sts, pods, st)
		if line != lastLine {
			fmt.Printf("%6.1fs  %s\n", time.Since(start).Seconds(), line)
			lastLine = line
		}
		return st != nil && st.Phase == policy.PhaseComplete, nil
	})
	if err != nil {
		return err
	}
	say("Rollout complete in %s. Events on the StatefulSet:", time.Since(start).Round(100*time.Millisecond))
	evs, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=StatefulSet"})
	if err == nil {
		slices.SortFunc(evs.Items, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
		for _, e := range evs.Items {
			fmt.Printf("  %-8s %-22s %s\n", e.Type, e.Reason, e.Message)
		}
	}
	if keep {
		say("The cluster keeps running: export KUBECONFIG=%s ; Ctrl-C to stop.", c.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

// startStsroller runs stsroller in this process. The returned func stops it
// and returns once it has stopped: it cancels the controller's context first,
// then waits for the controller and the informers (a factory's Shutdown waits
// for informers that only stop when their context is done: called before the
// cancel, it never returns).
func startStsroller(ctx context.Context, client kubernetes.Interface) (func(), error) {
	ctx, cancel := context.WithCancel(ctx)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	factory := informers.NewFactory(client, ns, 10*time.Minute)
	podFactory := informers.NewPodFactory(client, ns, 10*time.Minute)
	ctrl, err := rollout.New(ctx, client, factory, rollout.Options{
		Recorder:   broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "stsroller"}),
		PodFactory: podFactory,
	})
	if err != nil {
		cancel()
		broadcaster.Shutdown()
		return nil, err
	}
	factory.Start(ctx.Done())
	podFactory.Start(ctx.Done())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		_ = ctrl.Run(ctx, 2)
	}()
	return func() {
		cancel()
		<-ran
		factory.Shutdown()
		podFactory.Shutdown()
		broadcaster.Shutdown()
	}, nil
}

func setUp(ctx context.Context, client kubernetes.Interface) error {
	labels := map[string]string{"app": name}
	objs := []func() error{
		func() error {
			_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: labels,
					Ports: []corev1.ServicePort{{Name: "db", Port: 5432}}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(2)),
					Selector: &metav1.LabelSelector{MatchLabels: labels}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
				ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{
					policy.AnnotationEnabled:        "true",
					policy.AnnotationMaxUnavailable: "3",
				}},
				Spec: appsv1.StatefulSetSpec{
					Replicas:            ptr.To[int32](replicas),
					ServiceName:         name,
					PodManagementPolicy: appsv1.ParallelPodManagement,
					UpdateStrategy:      appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
					Selector:            &metav1.LabelSelector{MatchLabels: labels},
					Template: corev1.PodTemplateSpec{
						ObjectMeta: metav1.ObjectMeta{Labels: labels},
						Spec: corev1.PodSpec{
							Containers: []corev1.Container{{Name: "db", Image: "registry.k8s.io/pause:3.10",
								Env: []corev1.EnvVar{{Name: "VERSION", Value: "1"}}}},
							ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: healthGate}},
							TerminationGracePeriodSeconds: ptr.To[int64](1),
						},
					},
				},
			}, metav1.CreateOptions{})
			return err
		},
	}
	for _, f := range objs {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// drive plays the database and its leader-election sidecar: pods turn healthy
// startTime after they start, except the broken one at the first revision; the
// leader label sits on the leader pod.
func drive(ctx context.Context, client kubernetes.Interface) {
	first := ""
	for ctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		sts, err := client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if first == "" {
			first = sts.Status.UpdateRevision
		}
		pods, err := list(ctx, client)
		if err != nil {
			continue
		}
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Name == leader && p.Labels["stsroller.io/role"] != "leader" {
				_, _ = client.CoreV1().Pods(ns).Patch(ctx, p.Name, types.MergePatchType,
					[]byte(`{"metadata":{"labels":{"stsroller.io/role":"leader"}}}`), metav1.PatchOptions{})
			}
			want := corev1.ConditionTrue
			if p.Name == broken && revision(&p) == first {
				want = corev1.ConditionFalse
			} else if time.Since(p.CreationTimestamp.Time) < startTime {
				continue
			}
			if framework.PodConditionStatus(&p, healthGate) == want {
				continue
			}
			_ = framework.SetPodCondition(ctx, client, ns, p.Name, healthGate, want, "SetByDemo")
		}
	}
}

// render draws one line: a glyph per ordinal, then the status.
func render(sts *appsv1.StatefulSet, pods []corev1.Pod, st *policy.Status) string {
	byName := map[string]*corev1.Pod{}
	for i := range pods {
		byName[pods[i].Name] = &pods[i]
	}
	var b strings.Builder
	b.WriteString("[")
	for i := range replicas {
		p := byName[fmt.Sprintf("%s-%d", name, i)]
		g := "."
		switch {
		case p == nil || p.DeletionTimestamp != nil:
		case revision(p) == sts.Status.UpdateRevision && isReady(p):
			g = "N"
		case revision(p) == sts.Status.UpdateRevision:
			g = "n"
		case isReady(p):
			g = "o"
		default:
			g = "x"
		}
		if p != nil && p.Labels["stsroller.io/role"] == "leader" {
			g += "*"
		} else {
			g += " "
		}
		b.WriteString(g)
	}
	b.WriteString("]")
	if st != nil {
		fmt.Fprintf(&b, "  %-8s updated %d/%d available %d  %s", st.Phase, st.Updated, st.Replicas, st.Available, st.Reason)
	}
	return b.String()
}

func list(ctx context.Context, client kubernetes.Interface) ([]corev1.Pod, error) {
	l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func revision(p *corev1.Pod) string { return p.Labels[appsv1.ControllerRevisionHashLabelKey] }

func isReady(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && framework.PodReady(p)
}

func waitFor(ctx context.Context, done func() (bool, error)) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ok, err := done()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out (last error: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func say(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}
