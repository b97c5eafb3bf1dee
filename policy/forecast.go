package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stsroller/stsroller/pdb"
)

// The forecast runs the planner forward from the cluster as it is: it feeds
// Compute (ComputeInGroup for a rollout group) its own deletions, the pods the
// StatefulSet controller brings back at the update revision, and the budgets'
// headroom as the disruption controller would recompute it, until nothing is
// left to do. Nothing else changes in it: no pod crashes, no template
// changes, every replacement turns Ready after the time it is given.

// ForecastTiming is how long a replacement takes in the forecast.
type ForecastTiming struct {
	// Terminate is from a pod's deletion to its replacement's creation.
	Terminate time.Duration
	// Ready is from a replacement's creation to its Ready condition; the
	// planner adds spec.minReadySeconds itself.
	Ready time.Duration
	// Drain is from a drain request to its answer, with the handshake on;
	// 0, or longer than the drain timeout, plays every pod as answering
	// never, so that it goes at the timeout: the forecast's upper bound.
	Drain time.Duration
}

// ForecastInput is what the forecast starts from.
type ForecastInput struct {
	// Group names the rollout group; empty for one StatefulSet alone.
	Group string
	// Members are the planner's inputs as gathered now: one, or every
	// member of the group.
	Members []Input
	// Timing is by StatefulSet name.
	Timing map[string]ForecastTiming
	Now    time.Time
}

// ForecastPod is one pod a step removes.
type ForecastPod struct {
	Pod    string `json:"pod"`
	Method Method `json:"method"`
	Why    string `json:"why"`
}

// ForecastStep is one batch: the pods one StatefulSet removes together.
type ForecastStep struct {
	StatefulSet string `json:"statefulSet"`
	// At is when the batch goes, from now; Duration until the next batch
	// goes, or, for the last, until the rollout is complete.
	At       time.Duration `json:"at"`
	Duration time.Duration `json:"duration"`
	Pods     []ForecastPod `json:"pods"`
	// Then is what the StatefulSet waits for after the batch: its status
	// reason and message once the batch is gone.
	Then string `json:"then,omitempty"`
	// Waiting names the other members of the group that wait meanwhile,
	// with why.
	Waiting []string `json:"waiting,omitempty"`
}

// ForecastMember sums up one StatefulSet in the forecast.
type ForecastMember struct {
	Name string `json:"name"`
	// Start and End: its first batch, and when it is done; both zero when it
	// removes nothing.
	Start   time.Duration `json:"start"`
	End     time.Duration `json:"end"`
	Removed int           `json:"removed"`
	// Phase, Reason and Message are its status at the end of the forecast.
	Phase   Phase  `json:"phase"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Kept names the pods left at an old revision (the partition).
	Kept []string `json:"kept,omitempty"`
}

// Forecast is every step until the rollout would be complete, or where it
// would block.
type Forecast struct {
	Group   string           `json:"group,omitempty"`
	Members []ForecastMember `json:"members"`
	Steps   []ForecastStep   `json:"steps"`
	// Total is from now until every member is done (or blocked).
	Total time.Duration `json:"total"`
	// Complete: every member reached its target with its pods available.
	Complete bool `json:"complete"`
	// Blocked says where the rollout would stop, when it would.
	Blocked []ForecastMember `json:"blocked,omitempty"`
}

// fcPod is a pod in the forecast, with its future.
type fcPod struct {
	pod *corev1.Pod
	// goneAt: a terminating pod's end; readyAt: when it turns Ready (zero:
	// it is Ready, or never turns Ready by itself); answerAt: when it
	// answers its drain request (zero: it does not, or has).
	goneAt, readyAt, answerAt time.Time
}

type fcMember struct {
	in       Input
	timing   ForecastTiming
	pods     map[int]*fcPod // by ordinal
	createAt map[int]time.Time
	prev     *Status
	last     Plan
	sum      ForecastMember
	// lastChange is when one of its pods last came back or turned Ready.
	lastChange time.Time
	// doneAt is when its plan first said it is no longer rolling.
	doneAt time.Time
}

// maxForecastRounds bounds the forecast of a rollout that would never end.
const maxForecastRounds = 100000

// maxForecastMissing bounds the pods the forecast makes up for the ordinals
// that have none yet: each is played as a pod of its own, so a StatefulSet
// far from its spec.replicas (a scale-up to millions) would cost memory in
// proportion.
const maxForecastMissing = 10000

// RunForecast plays the rollout forward. See ForecastInput.
func RunForecast(fi ForecastInput) Forecast {
	now := fi.Now
	if fc, ok := tooManyMissing(fi); !ok {
		return fc
	}
	ms := make([]*fcMember, len(fi.Members))
	uid := 0
	for i, in := range fi.Members {
		m := &fcMember{in: in, timing: fi.Timing[in.StatefulSet.Name], pods: map[int]*fcPod{}, createAt: map[int]time.Time{}, prev: in.Previous}
		if in.ConfigError == nil && in.Config.HealthQuery != "" {
			// The forecast assumes the health query holds from now on
			// (or since it began to): each step then waits stable-seconds
			// after the one before.
			h := HealthState{Checked: true, Healthy: true, HealthySince: now, LastStep: in.Health.LastStep}
			if in.Health.Healthy && in.Health.Err == "" {
				h.HealthySince = in.Health.HealthySince
			}
			m.in.Health = h
		}
		m.sum.Name = in.StatefulSet.Name
		start, end := ordinalRange(in.StatefulSet)
		for _, p := range in.Pods {
			o, ok := Ordinal(in.StatefulSet, p)
			if !ok || o < start || o >= end {
				continue
			}
			fp := &fcPod{pod: p.DeepCopy()}
			switch {
			case p.DeletionTimestamp != nil:
				fp.goneAt = laterOf(now, p.DeletionTimestamp.Add(m.timing.Terminate))
			case Revision(p) == in.StatefulSet.Status.UpdateRevision && !IsRunningAndReady(p):
				// On its way: assumed Ready once its time is up.
				fp.readyAt = laterOf(now, p.CreationTimestamp.Add(m.timing.Ready))
			default:
				// A drain request under way is answered in its time.
				if d := PodDrain(p); d.For(in.StatefulSet.Status.UpdateRevision) && !d.Complete && !d.RequestedAt.IsZero() {
					if at, ok := m.answerAfter(d.RequestedAt); ok {
						fp.answerAt = laterOf(now, at)
					}
				}
			}
			m.pods[o] = fp
		}
		for o := start; o < end; o++ {
			if m.pods[o] == nil {
				m.createAt[o] = now
			}
		}
		ms[i] = m
	}
	// Budgets: each one's headroom moves with the healthy pods it covers,
	// as the disruption controller recomputes it.
	type budgetState struct {
		b        pdb.Budget
		healthy0 int
	}
	budgets := map[string]*budgetState{}
	healthyUnder := func(name string) int {
		n := 0
		for _, m := range ms {
			for _, fp := range m.pods {
				if fp.pod.DeletionTimestamp == nil && IsRunningAndReady(fp.pod) && slices.ContainsFunc(m.in.Budgets[fp.pod.Name], func(b pdb.Budget) bool { return b.Name == name }) {
					n++
				}
			}
		}
		return n
	}
	for _, m := range ms {
		for _, bs := range m.in.Budgets {
			for _, b := range bs {
				if budgets[b.Name] == nil {
					budgets[b.Name] = &budgetState{b: b}
				}
			}
		}
	}
	for name, s := range budgets {
		s.healthy0 = healthyUnder(name)
	}

	t := now
	var fc Forecast
	fc.Group = fi.Group
	inputAt := func(m *fcMember) Input {
		in := m.in
		in.Now = t
		in.Previous = m.prev
		in.Removing = nil
		in.Pods = nil
		for _, o := range slices.Sorted(maps.Keys(m.pods)) {
			in.Pods = append(in.Pods, m.pods[o].pod)
		}
		if m.in.Budgets != nil {
			in.Budgets = map[string][]pdb.Budget{}
			for pod, bs := range m.in.Budgets {
				for _, b := range bs {
					s := budgets[b.Name]
					nb := s.b
					if !nb.Stale {
						nb.Allowed = max(0, s.b.Allowed+int32(healthyUnder(b.Name)-s.healthy0))
					}
					in.Budgets[pod] = append(in.Budgets[pod], nb)
				}
			}
		}
		if m.in.DNS != nil {
			in.DNS = map[string]DNSState{}
			for _, fp := range m.pods {
				st := m.in.DNS[fp.pod.Name]
				if fp.pod.Labels[forecastLabel] != "" {
					// A replacement's name is published by the time it is Ready.
					st = DNSState{Propagated: IsRunningAndReady(fp.pod)}
					if !st.Propagated {
						st.Message = "not yet published (forecast)"
					}
				}
				in.DNS[fp.pod.Name] = st
			}
		}
		return in
	}
	plans := func() []Plan {
		ins := make([]Input, len(ms))
		for i, m := range ms {
			ins[i] = inputAt(m)
		}
		out := make([]Plan, len(ms))
		if fi.Group == "" {
			for i := range ms {
				out[i] = Compute(ins[i])
			}
			return out
		}
		sums := make([]GroupMember, len(ms))
		for i := range ms {
			sums[i] = MemberOf(ins[i], Compute(ins[i]))
		}
		d := DecideGroup(fi.Group, sums)
		for i, m := range ms {
			out[i] = ComputeInGroup(ins[i], d.View(m.sum.Name))
		}
		return out
	}

	// advance makes happen what is due at t: terminated pods go, the
	// StatefulSet controller recreates them, replacements turn Ready.
	advance := func() {
		for _, m := range ms {
			for o, fp := range m.pods {
				if !fp.goneAt.IsZero() && !fp.goneAt.After(t) {
					delete(m.pods, o)
					m.createAt[o] = t
				}
			}
			for o, at := range m.createAt {
				if at.After(t) {
					continue
				}
				uid++
				m.pods[o] = &fcPod{pod: newForecastPod(m.in.StatefulSet, o, uid, t), readyAt: t.Add(m.timing.Ready)}
				delete(m.createAt, o)
				m.lastChange = t
			}
			for _, fp := range m.pods {
				if !fp.readyAt.IsZero() && !fp.readyAt.After(t) {
					fp.pod = fp.pod.DeepCopy()
					setReady(fp.pod, true, fp.readyAt)
					fp.readyAt = time.Time{}
					m.lastChange = t
				}
				if !fp.answerAt.IsZero() && !fp.answerAt.After(t) {
					fp.pod = fp.pod.DeepCopy()
					fp.pod.Annotations[AnnotationDrainComplete] = "forecast"
					fp.answerAt = time.Time{}
				}
			}
		}
	}
	advance()

	var open []int // steps whose Then is not known yet
	for round := 0; round < maxForecastRounds; round++ {
		// Plan at t until no member removes anything more; each member's
		// deletions are applied before the next plans, as the controller
		// plans a group's members one at a time.
		for {
			ps := plans()
			i := slices.IndexFunc(ps, func(p Plan) bool { return len(p.Deletions) > 0 })
			if i < 0 {
				for j, m := range ms {
					m.prev = &ps[j].Status
					m.last = ps[j]
					if m.sum.Removed > 0 && m.doneAt.IsZero() && !ps[j].Status.Phase.Rolling() {
						m.doneAt = t
					}
				}
				break
			}
			m := ms[i]
			step := ForecastStep{StatefulSet: m.sum.Name, At: t.Sub(now)}
			for _, w := range ps[i].Withdrawals {
				o, _ := Ordinal(m.in.StatefulSet, w.Pod)
				if fp := m.pods[o]; fp != nil {
					fp.pod = fp.pod.DeepCopy()
					for _, k := range []string{AnnotationDrainRequested, AnnotationDrainRevision, AnnotationDrainComplete} {
						delete(fp.pod.Annotations, k)
					}
					fp.answerAt = time.Time{}
				}
			}
			for _, d := range ps[i].Deletions {
				step.Pods = append(step.Pods, ForecastPod{d.Pod.Name, d.Method, d.Message})
				if d.Why != RemovalUnhealthy && m.in.Config.HealthQuery != "" {
					// A step of healthy pods (asked or evicted): the gate
					// waits stable-seconds after it.
					m.in.Health.LastStep = t
				}
				o, _ := Ordinal(m.in.StatefulSet, d.Pod)
				fp := m.pods[o]
				fp.pod = fp.pod.DeepCopy()
				if d.Method == MethodRequestDrain {
					// Asked, not removed: it answers in its time, or goes
					// at the timeout.
					if fp.pod.Annotations == nil {
						fp.pod.Annotations = map[string]string{}
					}
					fp.pod.Annotations[AnnotationDrainRequested] = t.UTC().Format(time.RFC3339Nano)
					fp.pod.Annotations[AnnotationDrainRevision] = m.in.StatefulSet.Status.UpdateRevision
					delete(fp.pod.Annotations, AnnotationDrainComplete)
					fp.answerAt = time.Time{}
					if at, ok := m.answerAfter(t); ok {
						fp.answerAt = at
					}
					continue
				}
				fp.pod.DeletionTimestamp = ptrTime(t)
				setReady(fp.pod, false, t) // its containers get SIGTERM
				fp.goneAt, fp.readyAt, fp.answerAt = t.Add(m.timing.Terminate), time.Time{}, time.Time{}
			}
			for j, o := range ms {
				if j != i && ps[j].Status.Reason == ReasonWaitingForGroup {
					step.Waiting = append(step.Waiting, o.sum.Name)
				}
			}
			if m.sum.Removed == 0 {
				m.sum.Start = step.At
			}
			m.sum.Removed += len(step.Pods)
			m.prev = &ps[i].Status
			if k := len(fc.Steps) - 1; k >= 0 && fc.Steps[k].StatefulSet == step.StatefulSet && fc.Steps[k].At == step.At {
				// The plan right after the first, once its deletions
				// are seen: one batch.
				fc.Steps[k].Pods = append(fc.Steps[k].Pods, step.Pods...)
				continue
			}
			fc.Steps = append(fc.Steps, step)
			open = append(open, len(fc.Steps)-1)
		}
		for _, k := range open {
			s := &fc.Steps[k]
			for _, m := range ms {
				if m.sum.Name == s.StatefulSet {
					s.Then = m.last.Status.Reason + ": " + m.last.Status.Message
				}
			}
		}
		open = nil
		// The next thing that happens.
		var next time.Time
		due := false // something is due now: a pod gone at once
		soonest := func(at time.Time) {
			switch {
			case at.IsZero():
			case !at.After(t):
				due = true
			case next.IsZero() || at.Before(next):
				next = at
			}
		}
		for _, m := range ms {
			if h := m.in.Health; m.in.Config.HealthQuery != "" && m.last.Status.Reason == ReasonWaitingForHealth {
				// The gate opens stable-seconds after the later of the
				// query holding and the last step.
				if at := laterOf(h.HealthySince, h.LastStep).Add(m.in.Config.HealthStable); at.After(t) {
					soonest(at)
				}
			}
			minReady := time.Duration(m.in.StatefulSet.Spec.MinReadySeconds) * time.Second
			timeout := m.in.Config.DrainTimeout
			for _, fp := range m.pods {
				soonest(fp.goneAt)
				soonest(fp.readyAt)
				soonest(fp.answerAt)
				if d := PodDrain(fp.pod); timeout > 0 && fp.pod.DeletionTimestamp == nil && d.For(m.in.StatefulSet.Status.UpdateRevision) &&
					!d.Complete && !d.RequestedAt.IsZero() {
					soonest(d.RequestedAt.Add(timeout))
				}
				if at := readySince(fp.pod).Add(minReady); minReady > 0 && IsRunningAndReady(fp.pod) && at.After(t) {
					soonest(at)
				}
			}
		}
		if due {
			advance()
			continue
		}
		if next.IsZero() {
			break
		}
		t = next
		advance()
	}

	fc.Total = t.Sub(now)
	fc.Complete = true
	for _, m := range ms {
		st := m.last.Status
		m.sum.Phase, m.sum.Reason, m.sum.Message = st.Phase, st.Reason, st.Message
		if m.sum.Removed > 0 {
			m.sum.End = m.lastChange.Sub(now)
			if !m.doneAt.IsZero() {
				m.sum.End = m.doneAt.Sub(now)
			}
		}
		if st.Phase.Rolling() || st.Phase == PhasePaused || st.Phase == PhaseInvalid {
			fc.Complete = false
			fc.Blocked = append(fc.Blocked, m.sum)
		} else {
			// Done: what is left at an old revision, the partition keeps.
			for _, o := range slices.Sorted(maps.Keys(m.pods)) {
				if p := m.pods[o].pod; Revision(p) != m.in.StatefulSet.Status.UpdateRevision {
					m.sum.Kept = append(m.sum.Kept, p.Name)
				}
			}
		}
		fc.Members = append(fc.Members, m.sum)
	}
	for k := range fc.Steps {
		end := fc.Total
		if k+1 < len(fc.Steps) {
			end = fc.Steps[k+1].At
		}
		fc.Steps[k].Duration = end - fc.Steps[k].At
	}
	slices.SortStableFunc(fc.Members, func(a, b ForecastMember) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Name, b.Name))
	})
	return fc
}

// tooManyMissing refuses a forecast that would make up more than
// maxForecastMissing pods, with the members that would, as blocked.
func tooManyMissing(fi ForecastInput) (Forecast, bool) {
	fc := Forecast{Group: fi.Group}
	for _, in := range fi.Members {
		start, end := ordinalRange(in.StatefulSet)
		present := 0
		for _, p := range in.Pods {
			if o, ok := Ordinal(in.StatefulSet, p); ok && o >= start && o < end {
				present++
			}
		}
		m := ForecastMember{Name: in.StatefulSet.Name, Phase: PhaseRolling}
		if missing := end - start - present; missing > maxForecastMissing {
			m.Reason = "TooManyMissingPods"
			m.Message = fmt.Sprintf("%d of its %d pods do not exist yet; the forecast plays at most %d pods the StatefulSet controller has yet to create",
				missing, end-start, maxForecastMissing)
			fc.Blocked = append(fc.Blocked, m)
		}
		fc.Members = append(fc.Members, m)
	}
	return fc, len(fc.Blocked) == 0
}

// answerAfter is when a pod asked at t answers, if it does before its
// timeout (see ForecastTiming.Drain).
func (m *fcMember) answerAfter(t time.Time) (time.Time, bool) {
	d := m.timing.Drain
	if d <= 0 || d >= m.in.Config.DrainTimeout {
		return time.Time{}, false
	}
	return t.Add(d), true
}

// forecastLabel marks the pods the forecast made up.
const forecastLabel = "stsroller.io/forecast"

func newForecastPod(sts *appsv1.StatefulSet, ordinal, uid int, t time.Time) *corev1.Pod {
	lbls := map[string]string{}
	maps.Copy(lbls, sts.Spec.Template.Labels)
	lbls[appsv1.ControllerRevisionHashLabelKey] = sts.Status.UpdateRevision
	lbls[forecastLabel] = "true"
	name := sts.Name + "-" + strconv.Itoa(ordinal)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: sts.Namespace, UID: types.UID("forecast-" + strconv.Itoa(uid)),
			Labels: lbls, CreationTimestamp: metav1.NewTime(t),
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			PodIP: fmt.Sprintf("192.0.2.%d", uid%250+1),
			Conditions: []corev1.PodCondition{{
				Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(t),
			}},
		},
	}
}

func setReady(p *corev1.Pod, ready bool, at time.Time) {
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
		p.Status.Phase = corev1.PodRunning
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == corev1.PodReady {
			p.Status.Conditions[i].Status = s
			p.Status.Conditions[i].LastTransitionTime = metav1.NewTime(at)
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: s, LastTransitionTime: metav1.NewTime(at)})
}

func ordinalRange(sts *appsv1.StatefulSet) (int, int) {
	start := 0
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	return start, start + int(Replicas(sts))
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}
