package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/policy"
	"github.com/stsroller/stsroller/rollout"
)

// defaultPodReady is the forecast's guess when nothing can be measured.
const defaultPodReady = 30 * time.Second

// maxDeletionGap bounds what counts as "a deletion, then its replacement":
// a longer gap is a pod that came back for another reason.
const maxDeletionGap = 10 * time.Minute

// timingOutput is one member's times in the forecast's JSON output.
type timingOutput struct {
	ReadySeconds     float64 `json:"readySeconds"`
	TerminateSeconds float64 `json:"terminateSeconds"`
	// Source says where the times come from.
	Source string `json:"source"`
}

type forecastPodOutput struct {
	Pod    string `json:"pod"`
	Method string `json:"method"`
	Why    string `json:"why"`
}

type forecastStepOutput struct {
	StatefulSet string              `json:"statefulSet"`
	AtSeconds   float64             `json:"atSeconds"`
	Seconds     float64             `json:"seconds"`
	Pods        []forecastPodOutput `json:"pods"`
	Then        string              `json:"then,omitempty"`
	Waiting     []string            `json:"waiting,omitempty"`
}

type forecastMemberOutput struct {
	Name         string   `json:"name"`
	StartSeconds float64  `json:"startSeconds"`
	EndSeconds   float64  `json:"endSeconds"`
	Removed      int      `json:"removed"`
	Phase        string   `json:"phase"`
	Reason       string   `json:"reason"`
	Message      string   `json:"message"`
	Kept         []string `json:"kept,omitempty"`
}

// forecastOutput is plan --all's JSON output.
type forecastOutput struct {
	StatefulSet ref    `json:"statefulSet"`
	Managed     bool   `json:"managed"`
	Group       string `json:"group,omitempty"`
	// Members in the order they roll.
	Members      []forecastMemberOutput  `json:"members"`
	Timing       map[string]timingOutput `json:"timing"`
	Steps        []forecastStepOutput    `json:"steps"`
	TotalSeconds float64                 `json:"totalSeconds"`
	Complete     bool                    `json:"complete"`
	// Blocked names the members where the rollout would stop.
	Blocked []string `json:"blocked,omitempty"`
	// WaitsForLock names the rollout lock the StatefulSet waits for, and its
	// holder: the forecast starts once the lock is taken.
	WaitsForLock string `json:"waitsForLock,omitempty"`
	// HealthGates names the members with a health query, and their
	// health-stable-seconds: each of their steps waits that long.
	HealthGates []string `json:"healthGates,omitempty"`
}

const forecastNote = `Nothing was deleted. The forecast assumes nothing else changes: no pod crashes,
every replacement turns Ready after the time above, nobody else deletes pods.`

func forecast(ctx context.Context, c kubernetes.Interface, ns, name, output string, podReady, drainAnswer time.Duration, now time.Time, out io.Writer) error {
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	o := forecastOutput{StatefulSet: ref{sts.Namespace, sts.Name}, Managed: policy.Enabled(sts),
		Members: []forecastMemberOutput{}, Steps: []forecastStepOutput{}, Timing: map[string]timingOutput{}}
	if !o.Managed {
		if output == "json" {
			return writeJSON(out, o)
		}
		w := &errWriter{w: out}
		w.printf("StatefulSet %s/%s\nNot managed: it lacks the annotation %s: \"true\", so stsroller deletes none of its pods.\n",
			sts.Namespace, sts.Name, policy.AnnotationEnabled)
		return w.err
	}
	o.Group = policy.RolloutGroupOf(sts)
	if st := policy.ParseStatus(sts.Annotations); st != nil && st.RolloutLock != nil && st.Reason == policy.ReasonWaitingForLock {
		o.WaitsForLock = fmt.Sprintf("rollout lock %q, held by %s", st.RolloutLock.Name, st.RolloutLock.Holder)
	}
	members, err := groupMembers(ctx, c, sts)
	if err != nil {
		return err
	}
	fi := policy.ForecastInput{Group: o.Group, Timing: map[string]policy.ForecastTiming{}, Now: now}
	var events []corev1.Event
	if podReady == 0 {
		l, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Pod"})
		if err == nil {
			events = l.Items
		} // without events, the deletion gap is not measured
	}
	for _, m := range members {
		in, err := rollout.Gather(ctx, rollout.APISource{Client: c}, m)
		if err != nil {
			return err
		}
		controllerViews(&in)
		in.Now = now
		fi.Members = append(fi.Members, in)
		if in.ConfigError == nil && in.Config.HealthQuery != "" {
			o.HealthGates = append(o.HealthGates, fmt.Sprintf("%s (%s)", m.Name, in.Config.HealthStable))
		}
		t, src := policy.ForecastTiming{Ready: podReady}, "--pod-ready"
		if podReady == 0 {
			t, src = measureTiming(in.Pods, events)
		}
		t.Drain = drainAnswer
		fi.Timing[m.Name] = t
		o.Timing[m.Name] = timingOutput{t.Ready.Seconds(), t.Terminate.Seconds(), src}
	}
	fc := policy.RunForecast(fi)
	for _, m := range fc.Members {
		o.Members = append(o.Members, forecastMemberOutput{m.Name, m.Start.Seconds(), m.End.Seconds(), m.Removed,
			string(m.Phase), m.Reason, m.Message, m.Kept})
	}
	for _, s := range fc.Steps {
		so := forecastStepOutput{StatefulSet: s.StatefulSet, AtSeconds: s.At.Seconds(), Seconds: s.Duration.Seconds(),
			Then: s.Then, Waiting: s.Waiting}
		for _, p := range s.Pods {
			so.Pods = append(so.Pods, forecastPodOutput{p.Pod, string(p.Method), p.Why})
		}
		o.Steps = append(o.Steps, so)
	}
	o.TotalSeconds, o.Complete = fc.Total.Seconds(), fc.Complete
	for _, b := range fc.Blocked {
		o.Blocked = append(o.Blocked, b.Name)
	}
	if output == "json" {
		return writeJSON(out, o)
	}
	return writeForecast(out, sts, o, fc)
}

func writeForecast(out io.Writer, sts *appsv1.StatefulSet, o forecastOutput, fc policy.Forecast) error {
	w := &errWriter{w: out}
	if o.Group != "" {
		names := make([]string, len(o.Members))
		for i, m := range o.Members {
			names[i] = m.Name
		}
		w.printf("Forecast for rollout group %q in namespace %s (%d StatefulSets, in the order they roll: %s)\n",
			o.Group, sts.Namespace, len(o.Members), strings.Join(names, ", "))
	} else {
		w.printf("Forecast for StatefulSet %s/%s\n", sts.Namespace, sts.Name)
	}
	w.printf("Times per pod:\n")
	for _, m := range o.Members {
		t := o.Timing[m.Name]
		w.printf("  %s: Ready %s after creation, created %s after its deletion (%s)\n", m.Name,
			seconds(t.ReadySeconds), seconds(t.TerminateSeconds), t.Source)
	}
	w.printf("\n")
	if len(fc.Steps) == 0 {
		w.printf("Nothing would be deleted.\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  STEP\tAT\tTAKES\tSTATEFULSET\tPOD\tMETHOD\tWHY\n")
		for i, s := range fc.Steps {
			for j, p := range s.Pods {
				if j == 0 {
					fmt.Fprintf(tw, "  %d\t+%s\t%s\t%s\t%s\t%s\t%s\n", i+1, dur(s.At), dur(s.Duration), s.StatefulSet, p.Pod, p.Method, oneLine(p.Why))
				} else {
					fmt.Fprintf(tw, "  \t\t\t\t%s\t%s\t%s\n", p.Pod, p.Method, oneLine(p.Why))
				}
			}
			if s.Then != "" {
				fmt.Fprintf(tw, "  \t\t\t\tthen\t\t%s\n", oneLine(s.Then))
			}
			if len(s.Waiting) > 0 {
				fmt.Fprintf(tw, "  \t\t\t\twaiting\t\t%s (%s)\n", strings.Join(s.Waiting, ", "), policy.ReasonWaitingForGroup)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	w.printf("\n")
	for _, m := range fc.Members {
		if len(m.Kept) > 0 {
			w.printf("%s keeps %d pod(s) at an old revision (%s): %s\n", m.Name, len(m.Kept), policy.AnnotationPartition, strings.Join(m.Kept, ", "))
		}
	}
	if fc.Complete {
		w.printf("Complete after %s (estimated).\n", dur(fc.Total))
	} else {
		w.printf("The rollout would not complete. After %s (estimated) it stops at:\n", dur(fc.Total))
		for _, b := range fc.Blocked {
			w.printf("  %s: %s/%s: %s\n", b.Name, b.Phase, b.Reason, oneLine(b.Message))
		}
	}
	if o.WaitsForLock != "" {
		w.printf("It waits for %s: the times above start once it takes the lock (the forecast assumes it gets it now).\n", o.WaitsForLock)
	}
	if len(o.HealthGates) > 0 {
		w.printf("Health gate: each step of %s waits health-stable-seconds after the one before; the forecast assumes the query holds from now on.\n",
			strings.Join(o.HealthGates, ", "))
	}
	w.printf("%s\n", forecastNote)
	return w.err
}

// measureTiming estimates a replacement's times from the StatefulSet's pods:
// the mean from creation to Ready (pods that are Ready now), and the mean
// from stsroller's deletion of a pod (its DeletedUnhealthyPod or EvictedPod
// event on the pod) to the creation of the pod now of that name.
func measureTiming(pods []*corev1.Pod, events []corev1.Event) (policy.ForecastTiming, string) {
	var ready, gaps []time.Duration
	created := map[string]time.Time{}
	for _, p := range pods {
		created[p.Name] = p.CreationTimestamp.Time
		if !policy.IsRunningAndReady(p) || p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && !c.LastTransitionTime.IsZero() && !p.CreationTimestamp.IsZero() {
				if d := c.LastTransitionTime.Sub(p.CreationTimestamp.Time); d >= 0 {
					ready = append(ready, d)
				}
			}
		}
	}
	// The last deletion of each pod before its current incarnation.
	last := map[string]time.Time{}
	for _, e := range events {
		if e.InvolvedObject.Kind != "Pod" || (e.Reason != policy.ReasonEvictedPod && e.Reason != policy.ReasonDeletedUnhealthyPod) {
			continue
		}
		c, ok := created[e.InvolvedObject.Name]
		at := lastSeen(e)
		if ok && !at.After(c) && c.Sub(at) < maxDeletionGap && at.After(last[e.InvolvedObject.Name]) {
			last[e.InvolvedObject.Name] = at
		}
	}
	for n, at := range last {
		gaps = append(gaps, created[n].Sub(at))
	}
	t := policy.ForecastTiming{Ready: defaultPodReady}
	var src []string
	if len(ready) > 0 {
		t.Ready = mean(ready)
		src = append(src, fmt.Sprintf("mean of %d pod(s) from creation to Ready", len(ready)))
	} else {
		src = append(src, fmt.Sprintf("no Ready pod to measure: assumed %s, give --pod-ready", defaultPodReady))
	}
	if len(gaps) > 0 {
		t.Terminate = mean(gaps)
		src = append(src, fmt.Sprintf("mean of %d deletion(s) to re-creation", len(gaps)))
	} else {
		src = append(src, "no recent deletion by stsroller to measure: deletion to re-creation assumed immediate")
	}
	return t, strings.Join(src, "; ")
}

// mean, not the median: the API's times are whole seconds, and the mean of
// differences of truncated times is unbiased where a median of them is not.
func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func dur(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

func seconds(s float64) string { return dur(time.Duration(s * float64(time.Second))) }

// groupMembers returns the members of the StatefulSet's rollout group, itself
// included, or only itself when it is in none.
func groupMembers(ctx context.Context, c kubernetes.Interface, sts *appsv1.StatefulSet) ([]*appsv1.StatefulSet, error) {
	group := policy.RolloutGroupOf(sts)
	if group == "" {
		return []*appsv1.StatefulSet{sts}, nil
	}
	l, err := c.AppsV1().StatefulSets(sts.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var members []*appsv1.StatefulSet
	for i := range l.Items {
		if policy.RolloutGroupOf(&l.Items[i]) == group {
			members = append(members, &l.Items[i])
		}
	}
	return members, nil
}
