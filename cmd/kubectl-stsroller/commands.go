package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/stsroller/stsroller/dnsgate"
	"github.com/stsroller/stsroller/policy"
	"github.com/stsroller/stsroller/rollout"
)

// fieldManager names the plugin in managedFields.
const fieldManager = "kubectl-stsroller"

// maxEvents is how many of the StatefulSet's events status shows.
const maxEvents = 10

// ref names the StatefulSet in JSON output.
type ref struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// event is one Event in status's JSON output.
type event struct {
	Type     string    `json:"type"`
	Reason   string    `json:"reason"`
	Message  string    `json:"message"`
	Count    int32     `json:"count"`
	LastSeen time.Time `json:"lastSeen"`
}

// statusOutput is status's JSON output.
type statusOutput struct {
	StatefulSet ref `json:"statefulSet"`
	// Managed: the StatefulSet carries stsroller.io/enabled: "true".
	Managed bool `json:"managed"`
	// Status is the stsroller.io/status annotation; null when there is none.
	Status *policy.Status `json:"status"`
	Events []event        `json:"events"`
}

func status(ctx context.Context, c kubernetes.Interface, ns, name, output string, out io.Writer) error {
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	events, eventsErr := recentEvents(ctx, c, sts)
	if output == "json" {
		if eventsErr != nil {
			return eventsErr
		}
		o := statusOutput{
			StatefulSet: ref{sts.Namespace, sts.Name},
			Managed:     policy.Enabled(sts),
			Status:      policy.ParseStatus(sts.Annotations),
			Events:      make([]event, 0, len(events)),
		}
		for _, e := range events {
			o.Events = append(o.Events, event{e.Type, e.Reason, e.Message, max(e.Count, 1), lastSeen(e)})
		}
		return writeJSON(out, o)
	}

	w := &errWriter{w: out}
	w.printf("StatefulSet %s/%s\n", sts.Namespace, sts.Name)
	if !policy.Enabled(sts) {
		w.printf("Not managed: it lacks the annotation %s: \"true\".\n", policy.AnnotationEnabled)
	}
	st := policy.ParseStatus(sts.Annotations)
	if _, ok := sts.Annotations[policy.AnnotationStatus]; ok && st == nil {
		w.printf("Status: annotation %s cannot be read.\n", policy.AnnotationStatus)
	} else if st == nil {
		w.printf("Status: none yet (stsroller has not planned this StatefulSet; is the controller running?)\n")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		writeStatus(tw, "", st)
		if st.ObservedGeneration != 0 && st.ObservedGeneration < sts.Generation {
			fmt.Fprintf(tw, "Note:\tthe status describes generation %d; the StatefulSet is now at %d\n", st.ObservedGeneration, sts.Generation)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if v, ok := sts.Annotations[policy.AnnotationPaused]; ok {
		w.printf("Annotation %s: %q\n", policy.AnnotationPaused, v)
	}
	w.printf("\n")
	switch {
	case eventsErr != nil:
		w.printf("Events: cannot be listed: %v\n", eventsErr)
	case len(events) == 0:
		w.printf("Events: none\n")
	default:
		w.printf("Events (newest last):\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  LAST SEEN\tTYPE\tREASON\tCOUNT\tMESSAGE\n")
		for _, e := range events {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", lastSeen(e).UTC().Format(time.RFC3339),
				e.Type, e.Reason, max(e.Count, 1), oneLine(e.Message))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return w.err
}

// writeStatus renders a status as "Key:\tvalue" lines for a tabwriter, each
// line starting with prefix.
func writeStatus(w io.Writer, prefix string, st *policy.Status) {
	line := func(format string, args ...any) { fmt.Fprintf(w, prefix+format, args...) }
	line("Phase:\t%s\n", st.Phase)
	if st.Reason != "" {
		line("Reason:\t%s\n", st.Reason)
	}
	if st.Message != "" {
		line("Message:\t%s\n", oneLine(st.Message))
	}
	line("Revision:\t%s\n", st.UpdateRevision)
	line("Replicas:\t%d (updated %d, available %d, updated and available %d)\n",
		st.Replicas, st.Updated, st.Available, st.UpdatedAvailable)
	if !st.LastTransitionTime.IsZero() {
		line("Since:\t%s\n", st.LastTransitionTime.UTC().Format(time.RFC3339))
	}
	if st.LastProgressTime != nil {
		line("Last progress:\t%s\n", st.LastProgressTime.UTC().Format(time.RFC3339))
	}
	if g := st.HealthGate; g != nil {
		msg := g.State
		if g.Since != nil {
			msg += " since " + g.Since.UTC().Format(time.RFC3339)
		}
		if g.Value != "" {
			msg += ", last value " + oneLine(g.Value)
		}
		if g.Error != "" {
			msg += ", error: " + oneLine(g.Error)
		}
		line("Health gate:\t%s\n", msg)
	}
	if l := st.RolloutLock; l != nil {
		switch {
		case l.Holder == "":
			line("Rollout lock:\t%s (Lease %s): free\n", l.Name, policy.LeaseName(l.Name))
		case l.Since != nil:
			line("Rollout lock:\t%s (Lease %s): held by %s%s for %s (since %s)\n", l.Name, policy.LeaseName(l.Name), l.Holder,
				map[bool]string{true: " (this StatefulSet)"}[l.Held],
				time.Since(l.Since.Time).Truncate(time.Second), l.Since.UTC().Format(time.RFC3339))
		default:
			line("Rollout lock:\t%s (Lease %s): held by %s\n", l.Name, policy.LeaseName(l.Name), l.Holder)
		}
	}
	namedPods(line, "Waiting for DNS:", "%s", st.WaitingForDNS, int(st.WaitingForDNSCount))
	namedPods(line, "Waiting for drain:", "asked at %s", st.WaitingForDrain, len(st.WaitingForDrain))
}

// namedPods prints the pods a status names, by name, one a line under key,
// with how many more there are of total.
func namedPods(line func(string, ...any), key, format string, pods map[string]string, total int) {
	names := make([]string, 0, len(pods))
	for n := range pods {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		line("%s\t%s: "+format+"\n", key, n, pods[n])
		key = ""
	}
	if more := total - len(names); more > 0 {
		line("\tand %d more\n", more)
	}
}

// recentEvents are the StatefulSet's last maxEvents core/v1 Events, oldest
// first. The field selector asks the API server to filter; the check after it
// keeps the answer right where a server (or a fake) does not.
func recentEvents(ctx context.Context, c kubernetes.Interface, sts *appsv1.StatefulSet) ([]corev1.Event, error) {
	sel := fields.Set{
		"involvedObject.kind": "StatefulSet",
		"involvedObject.name": sts.Name,
		"involvedObject.uid":  string(sts.UID),
	}.AsSelector().String()
	l, err := c.CoreV1().Events(sts.Namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("listing events of %s/%s: %w", sts.Namespace, sts.Name, err)
	}
	var evs []corev1.Event
	for _, e := range l.Items {
		o := e.InvolvedObject
		if o.Kind == "StatefulSet" && o.Name == sts.Name && o.UID == sts.UID {
			evs = append(evs, e)
		}
	}
	slices.SortStableFunc(evs, func(a, b corev1.Event) int {
		return cmp.Or(lastSeen(a).Compare(lastSeen(b)), cmp.Compare(a.Name, b.Name))
	})
	if len(evs) > maxEvents {
		evs = evs[len(evs)-maxEvents:]
	}
	return evs, nil
}

// lastSeen is when an event last happened, whichever API wrote it.
func lastSeen(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.FirstTimestamp.IsZero():
		return e.FirstTimestamp.Time
	}
	return e.CreationTimestamp.Time
}

// deletion is one pod in plan's JSON output.
type deletion struct {
	Pod     string `json:"pod"`
	Method  string `json:"method"`
	Message string `json:"message"`
}

// planOutput is plan's JSON output.
type planOutput struct {
	StatefulSet ref  `json:"statefulSet"`
	Managed     bool `json:"managed"`
	// Deletions are the pods stsroller would remove now, in order; empty when
	// it is not managed.
	Deletions []deletion `json:"deletions"`
	// Status is the status the controller would write; null when not managed.
	Status *policy.Status `json:"status"`
	// Draining are the pods asked to drain (stsroller.io/drain-requested)
	// and not yet gone, by name.
	Draining []draining `json:"draining"`
}

// planNote is what plan cannot see, said after every text plan.
const planNote = `Nothing was deleted. The controller also waits for deletions of its own that it
has not yet seen take effect, which cannot be seen from here: its next plan can differ.`

func plan(ctx context.Context, c kubernetes.Interface, ns, name, output string, now time.Time, out io.Writer) error {
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	o := planOutput{StatefulSet: ref{sts.Namespace, sts.Name}, Managed: policy.Enabled(sts), Deletions: []deletion{},
		Draining: []draining{}}
	var dnsFromConditions bool
	if o.Managed {
		in, err := rollout.Gather(ctx, rollout.APISource{Client: c}, sts)
		if err != nil {
			return err
		}
		if in.ConfigError == nil && in.Config.DNSDomain != "" {
			dnsFromConditions = true
		}
		controllerViews(&in)
		in.Now = now
		p, err := planInGroup(ctx, c, sts, in, now)
		if err != nil {
			return err
		}
		for _, d := range p.Deletions {
			o.Deletions = append(o.Deletions, deletion{d.Pod.Name, string(d.Method), d.Message})
		}
		o.Status = &p.Status
		o.Draining = drainingPods(in.Pods, in.Config.DrainTimeout)
	}
	if output == "json" {
		return writeJSON(out, o)
	}

	w := &errWriter{w: out}
	w.printf("StatefulSet %s/%s\n", sts.Namespace, sts.Name)
	if !o.Managed {
		w.printf("Not managed: it lacks the annotation %s: \"true\", so stsroller deletes none of its pods.\n",
			policy.AnnotationEnabled)
		return w.err
	}
	if len(o.Deletions) == 0 {
		w.printf("Nothing would be deleted now.\n")
	} else {
		w.printf("Would delete, in this order:\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  #\tPOD\tMETHOD\tWHY\n")
		for i, d := range o.Deletions {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", i+1, d.Pod, d.Method, oneLine(d.Message))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(o.Draining) > 0 {
		w.printf("\nDraining (asked to drain, not yet evicted):\n")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  POD\tREQUESTED\tANSWER\n")
		for _, d := range o.Draining {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", d.Pod, d.Requested, d.answer(now))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	w.printf("\nStatus it would write:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	st := *o.Status
	st.LastTransitionTime, st.LastProgressTime = metav1.Time{}, nil // the plugin's clock, not the controller's
	writeStatus(tw, "  ", &st)
	if err := tw.Flush(); err != nil {
		return err
	}
	w.printf("\n")
	if dnsFromConditions {
		w.printf("DNS: read from the pods' %s conditions; the controller asks the DNS servers itself.\n",
			policy.ConditionDNSPropagated)
	}
	w.printf("%s\n", planNote)
	return w.err
}

// controllerViews fills in what only the controller observes, as it last
// wrote it down: the DNS gate's answers from the pods' conditions, the health
// gate's from the status (the plugin asks neither DNS nor Prometheus).
func controllerViews(in *policy.Input) {
	if in.ConfigError != nil {
		return
	}
	if in.Config.DNSDomain != "" {
		in.DNS = dnsgate.FromConditions(in.Pods)
	}
	if in.Config.HealthQuery != "" {
		in.Health = policy.HealthFromStatus(in.Previous)
	}
}

// draining is one pod asked to drain, in plan's output.
type draining struct {
	Pod string `json:"pod"`
	// Requested is the stsroller.io/drain-requested annotation, the request's
	// time.
	Requested string `json:"requested"`
	// Complete: the pod answered with stsroller.io/drain-complete.
	Complete bool `json:"complete"`
	// TimeoutAt is when stsroller evicts it without an answer; null when the
	// request's time cannot be read or the handshake is off.
	TimeoutAt *time.Time `json:"timeoutAt"`
}

func (d draining) answer(now time.Time) string {
	switch {
	case d.Complete:
		return "drain complete: evicted at the next plan the budgets allow"
	case d.TimeoutAt == nil:
		return "none yet (no timeout: the request's time cannot be read)"
	case !now.Before(*d.TimeoutAt):
		return fmt.Sprintf("none; timed out at %s", d.TimeoutAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("none yet; evicted anyway at %s (in %s)", d.TimeoutAt.UTC().Format(time.RFC3339),
		d.TimeoutAt.Sub(now).Round(time.Second))
}

// drainingPods lists the pods with a drain request that are not terminating,
// by name.
func drainingPods(pods []*corev1.Pod, timeout time.Duration) []draining {
	out := []draining{}
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		d := policy.PodDrain(p)
		if !d.Requested {
			continue
		}
		o := draining{Pod: p.Name, Requested: p.Annotations[policy.AnnotationDrainRequested], Complete: d.Complete}
		if !d.RequestedAt.IsZero() && timeout > 0 {
			at := d.RequestedAt.Add(timeout)
			o.TimeoutAt = &at
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b draining) int { return cmp.Compare(a.Pod, b.Pod) })
	return out
}

// setPaused sets or removes stsroller.io/paused with a JSON merge patch.
func setPaused(ctx context.Context, c kubernetes.Interface, ns, name string, paused bool, out io.Writer) error {
	sts, err := c.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var value any // null removes the annotation
	if paused {
		value = "true"
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			// The UID makes the patch fail on a new StatefulSet of the same name.
			"uid":         sts.UID,
			"annotations": map[string]any{policy.AnnotationPaused: value},
		},
	})
	if err != nil {
		return err
	}
	if _, err := c.AppsV1().StatefulSets(ns).Patch(ctx, name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: fieldManager}); err != nil {
		return err
	}
	w := &errWriter{w: out}
	verb := "resumed"
	if paused {
		verb = "paused"
	}
	w.printf("statefulset.apps/%s %s\n", name, verb)
	if !policy.Enabled(sts) {
		w.printf("Note: it lacks the annotation %s: \"true\"; stsroller does not manage it.\n", policy.AnnotationEnabled)
	}
	return w.err
}

func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// oneLine keeps a table row on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// errWriter remembers the first write error, so a run of prints is checked once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

// planInGroup is the plan the controller would make for the StatefulSet: in a
// rollout group, what the group allows it, from every member's plan alone.
func planInGroup(ctx context.Context, c kubernetes.Interface, sts *appsv1.StatefulSet, in policy.Input, now time.Time) (policy.Plan, error) {
	group := policy.RolloutGroupOf(sts)
	if group == "" {
		return policy.Compute(in), nil
	}
	members, err := groupMembers(ctx, c, sts)
	if err != nil {
		return policy.Plan{}, err
	}
	var sums []policy.GroupMember
	for _, m := range members {
		mi := in
		if m.UID != sts.UID {
			if mi, err = rollout.Gather(ctx, rollout.APISource{Client: c}, m); err != nil {
				return policy.Plan{}, err
			}
			controllerViews(&mi)
			mi.Now = now
		}
		sums = append(sums, policy.MemberOf(mi, policy.Compute(mi)))
	}
	return policy.ComputeInGroup(in, policy.DecideGroup(group, sums).View(sts.Name)), nil
}
