package invariants

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// stream is a recorded trace: a StatefulSet "db" of n pods at revision
// "old", Running and Ready, whose update revision is "new", and the audit
// events of what was asked of its pods. Times are the fake clock's, which is
// both the watch's and the API server's.
type stream struct {
	t   *testing.T
	clk *clocktesting.FakeClock
	c   *Checker
	sts *appsv1.StatefulSet
	uid int
}

const nsName = "ns"

func newStream(t *testing.T, n int32, ann map[string]string) *stream {
	return newStreamWith(t, n, ann, Options{})
}

func newStreamWith(t *testing.T, n int32, ann map[string]string, opts Options) *stream {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s := &stream{t: t, clk: clk, c: New(clk, opts)}
	a := map[string]string{AnnotationEnabled: "true"}
	for k, v := range ann {
		a[k] = v
	}
	s.sts = &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: nsName, UID: "db-uid", Generation: 2, Annotations: a},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(n),
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdateRevision: "new"},
	}
	s.c.OnStatefulSet(s.sts)
	for i := range n {
		s.c.OnPod(s.pod(fmt.Sprintf("db-%d", i), "old", true))
	}
	s.step(time.Second)
	return s
}

func (s *stream) step(d time.Duration) { s.clk.Step(d) }

func (s *stream) pod(name, rev string, isReady bool) *corev1.Pod {
	return s.podOf("db", name, rev, isReady)
}

// addSet adds another StatefulSet of n Ready pods at "old", update revision
// "new".
func (s *stream) addSet(set string, n int32, ann map[string]string) {
	a := map[string]string{AnnotationEnabled: "true"}
	for k, v := range ann {
		a[k] = v
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: set, Namespace: nsName, UID: types.UID(set + "-uid"), Generation: 1, Annotations: a},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(n),
			UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, UpdateRevision: "new"},
	}
	s.c.OnStatefulSet(sts)
	for i := range n {
		s.c.OnPod(s.podOf(set, fmt.Sprintf("%s-%d", set, i), "old", true))
	}
	s.step(time.Second)
}

func (s *stream) podOf(set, name, rev string, isReady bool) *corev1.Pod {
	s.uid++
	st := corev1.ConditionFalse
	if isReady {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: nsName, UID: types.UID(fmt.Sprintf("%s-%d", name, s.uid)),
			CreationTimestamp: metav1.NewTime(s.clk.Now().Truncate(time.Second)),
			Labels:            map[string]string{"app": set, appsv1.ControllerRevisionHashLabelKey: rev},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set,
				UID: types.UID(set + "-uid"), Controller: ptr.To(true)}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// change records a new state of the StatefulSet.
func (s *stream) change(f func(*appsv1.StatefulSet)) {
	s.sts = s.sts.DeepCopy()
	f(s.sts)
	s.c.OnStatefulSet(s.sts)
	s.step(100 * time.Millisecond)
}

func (s *stream) annotate(k, v string) {
	s.change(func(sts *appsv1.StatefulSet) { sts.Annotations[k] = v })
}

// edit records a new state of a pod.
func (s *stream) edit(name string, f func(*corev1.Pod)) {
	p := s.c.pods[name].DeepCopy()
	f(p)
	s.c.OnPod(p)
	s.step(10 * time.Millisecond)
}

func (s *stream) setReady(name string, isReady bool) {
	s.edit(name, func(p *corev1.Pod) {
		p.Status.Conditions[0].Status = map[bool]corev1.ConditionStatus{true: corev1.ConditionTrue, false: corev1.ConditionFalse}[isReady]
	})
}

// audit records a request of the pod, by user and agent, answered code.
func (s *stream) audit(user, agent, verb, sub, name string, code int) {
	s.request(user, agent, verb, ObjectRef{Resource: "pods", Namespace: nsName, Name: name, Subresource: sub}, code)
}

// writeLease records a successful update of Lease name by user.
func (s *stream) writeLease(user, name string) {
	s.request(user, "stsroller", "update", ObjectRef{APIGroup: "coordination.k8s.io", Resource: "leases", Namespace: nsName, Name: name}, 200)
}

// request records a request of ref, by user and agent, answered code.
func (s *stream) request(user, agent, verb string, ref ObjectRef, code int) {
	e := &AuditEvent{Stage: "ResponseComplete", Verb: verb, UserAgent: agent, ObjectRef: &ref,
		RequestReceivedTimestamp: s.clk.Now(), StageTimestamp: s.clk.Now().Add(5 * time.Millisecond)}
	e.User.Username = user
	e.ResponseStatus = &struct {
		Code int `json:"code"`
	}{Code: code}
	s.c.OnAudit(e)
	s.step(10 * time.Millisecond)
}

// replaceAs has user evict the pod, which goes and comes back updated and
// Ready.
func (s *stream) replaceAs(user, name string) {
	s.audit(user, "stsroller", "create", "eviction", name, 200)
	s.edit(name, func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now().Add(time.Second))) })
	s.gone(name)
	s.c.OnPod(s.pod(name, "new", true))
	s.step(Lag + time.Second)
}

// remove has stsroller delete or evict the pod (the API server answers
// 200), which then turns terminating.
func (s *stream) remove(verb, name string) {
	sub := ""
	if verb == "evict" {
		verb, sub = "create", "eviction"
	}
	s.audit("stsroller", "stsroller", verb, sub, name, 200)
	s.edit(name, func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now().Add(time.Second))) })
}

// replace removes the pod, which goes, and adds its replacement at rev.
func (s *stream) replace(verb, name, rev string, isReady bool) {
	s.remove(verb, name)
	s.gone(name)
	s.c.OnPod(s.pod(name, rev, isReady))
	s.step(100 * time.Millisecond)
}

// updatedNotReady makes the pod an updated one that is not Ready, replaced
// before the trace begins.
func (s *stream) updatedNotReady(name string) {
	s.gone(name)
	s.c.OnPod(s.pod(name, "new", false))
	s.step(Lag + time.Second)
}

func (s *stream) gone(name string) {
	s.c.OnPodDeleted(s.c.pods[name])
	s.step(100 * time.Millisecond)
}

// requestDrain has stsroller patch a drain request for rev onto the pod.
func (s *stream) requestDrain(name, rev string) {
	at := s.clk.Now()
	s.audit("stsroller", "stsroller", "patch", "", name, 200)
	s.edit(name, func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[AnnotationDrainRequested] = at.Format(time.RFC3339Nano)
		p.Annotations[AnnotationDrainRevision] = rev
		delete(p.Annotations, AnnotationDrainComplete)
	})
}

func (s *stream) answerDrain(name string) {
	s.edit(name, func(p *corev1.Pod) { p.Annotations[AnnotationDrainComplete] = "done" })
}

func (s *stream) violations() []string {
	s.step(Lag + settle)
	s.c.Resolve(true)
	return s.c.Violations()
}

// rollout replaces every pod, highest ordinal first, one at a time, each
// replacement Ready before the next.
func (s *stream) rollout(n int) {
	var names []string
	for i := n - 1; i >= 0; i-- {
		names = append(names, fmt.Sprintf("db-%d", i))
	}
	s.rolloutOf(names...)
}

// rolloutOf replaces the named pods so.
func (s *stream) rolloutOf(names ...string) {
	for _, name := range names {
		s.replace("evict", name, "new", false)
		s.step(time.Second)
		s.setReady(name, true)
		s.step(time.Second)
	}
}

func TestCleanTracesHaveNoViolation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int32
		ann   map[string]string
		trace func(s *stream)
	}{
		{"rollout", 4, nil, func(s *stream) { s.rollout(4) }},
		{"two at a time", 4, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			for _, batch := range [][]string{{"db-3", "db-2"}, {"db-1", "db-0"}} {
				for _, n := range batch {
					s.replace("evict", n, "new", false)
				}
				for _, n := range batch {
					s.setReady(n, true)
				}
				s.step(time.Second)
			}
		}},
		{"unhealthy first, deleted", 3, nil, func(s *stream) {
			s.setReady("db-0", false)
			s.replace("delete", "db-0", "new", true)
			s.step(time.Second)
			s.rolloutOf("db-2", "db-1")
		}},
		{"partition kept", 4, map[string]string{AnnotationPartition: "2"}, func(s *stream) {
			for _, n := range []string{"db-3", "db-2"} {
				s.replace("evict", n, "new", true)
				s.step(time.Second)
			}
		}},
		{"leader last", 3, nil, func(s *stream) {
			s.edit("db-0", func(p *corev1.Pod) { p.Labels["stsroller.io/role"] = "leader" })
			s.rollout(3)
		}},
		{"drain answered, and timed out", 3, map[string]string{AnnotationDrainTimeout: "5"}, func(s *stream) {
			s.requestDrain("db-2", "new")
			s.step(time.Second)
			s.answerDrain("db-2")
			s.replace("evict", "db-2", "new", true)
			s.step(time.Second)
			s.requestDrain("db-1", "new")
			s.step(5 * time.Second)
			s.replace("evict", "db-1", "new", true)
		}},
		{"others remove what they like", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			// kwok's late delete by name hits the replacement, with grace
			// period 0; a test deletes a current pod; the garbage collector.
			s.audit("kwok", "kwok/v0.7", "delete", "", "db-2", 200)
			s.gone("db-2")
			s.audit("stsroller-e2e-admin", "e2e.test", "delete", "", "db-1", 200)
			s.audit("system:serviceaccount:kube-system:generic-garbage-collector", "kube-controller-manager", "delete", "", "db-0", 200)
		}},
		{"one member of a group at a time", 3, map[string]string{AnnotationRolloutGroup: "g"}, func(s *stream) {
			s.addSet("web", 2, map[string]string{AnnotationRolloutGroup: "g"})
			s.setReady("web-1", false)              // web's broken pod is not ours to wait for...
			s.annotate(AnnotationRolloutGroup, "h") // ...once db leaves the group
			s.step(Lag)
			s.rollout(3)
		}},
		{"asked again after a withdrawal", 3, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.requestDrain("db-2", "new")
			s.audit("stsroller", "stsroller", "patch", "", "db-2", 200)
			s.edit("db-2", func(p *corev1.Pod) { delete(p.Annotations, AnnotationDrainRequested) })
			s.step(Lag + time.Second)
			s.requestDrain("db-2", "new")
		}},
		{"unhealthy and healthy in one round", 3, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.setReady("db-0", false)
			s.step(time.Second)
			s.audit("stsroller", "stsroller", "create", "eviction", "db-2", 201)
			s.remove("delete", "db-0")
			s.edit("db-2", func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now())) })
		}},
		{"refused removals take no effect", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			s.audit("stsroller", "stsroller", "create", "eviction", "db-2", 429)
			s.audit("stsroller", "stsroller", "delete", "", "db-2", 409)
		}},
		{"the StatefulSet watch lags the request", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			// A new template: stsroller saw "newer" and evicted db-2 at
			// "new" before the checker's watch showed the StatefulSet.
			s.replace("evict", "db-2", "newer", true)
			s.step(Lag / 2)
			s.change(func(sts *appsv1.StatefulSet) { sts.Status.UpdateRevision = "newer" })
		}},
		{"a pod's Ready arrives late", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", false)
			s.step(time.Second)
			at := s.clk.Now()
			s.remove("evict", "db-1") // stsroller saw db-2 Ready...
			s.clk.SetTime(at.Add(Lag / 2))
			s.setReady("db-2", true) // ...which the checker sees after
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, tc.n, tc.ann)
			tc.trace(s)
			if v := s.violations(); len(v) != 0 {
				t.Fatalf("violations %q", v)
			}
			if st := s.c.Stats(); st.Checks == 0 {
				t.Errorf("stats %+v: nothing checked", st)
			}
		})
	}
}

// TestRulesFire: each rule, fed a trace that violates it, fires.
func TestRulesFire(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int32
		ann   map[string]string
		trace func(s *stream)
		want  string
	}{
		{"paused", 3, nil, func(s *stream) {
			s.annotate(AnnotationPaused, "true")
			s.remove("evict", "db-2")
		}, "while the StatefulSet was paused"},
		{"paused, before the watch shows the resume", 3, map[string]string{AnnotationPaused: "true"}, func(s *stream) {
			s.remove("evict", "db-2")
			s.step(Lag + time.Second)
			s.annotate(AnnotationPaused, "false")
		}, "while the StatefulSet was paused"},
		{"not enabled", 3, map[string]string{AnnotationEnabled: "false"}, func(s *stream) {
			s.remove("evict", "db-2")
		}, "not enabled"},
		{"not OnDelete", 3, nil, func(s *stream) {
			s.change(func(sts *appsv1.StatefulSet) {
				sts.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
			})
			s.remove("evict", "db-2")
		}, "not OnDelete"},
		{"invalid", 3, map[string]string{AnnotationMaxUnavailable: "0"}, func(s *stream) {
			s.remove("evict", "db-2")
		}, "annotation stsroller.io/max-unavailable does not parse"},
		{"being deleted", 3, nil, func(s *stream) {
			s.change(func(sts *appsv1.StatefulSet) { sts.DeletionTimestamp = ptr.To(metav1.NewTime(s.clk.Now())) })
			s.remove("evict", "db-2")
		}, "while the StatefulSet was being deleted"},
		{"generation not observed", 3, nil, func(s *stream) {
			s.change(func(sts *appsv1.StatefulSet) { sts.Generation = 3 })
			s.remove("evict", "db-2")
		}, "before the StatefulSet's generation was observed"},
		{"current pod", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			s.step(time.Second)
			s.remove("evict", "db-2")
		}, "at revision new, which is the update revision"},
		{"current pod, 2 s after a revert", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			s.step(time.Second)
			s.change(func(sts *appsv1.StatefulSet) { sts.Status.UpdateRevision = "old" })
			s.step(2 * time.Second)
			s.remove("evict", "db-1")
		}, "db-1 of db was evicted at revision old, which is the update revision"},
		{"current pod deleted with grace period 0", 3, nil, func(s *stream) {
			s.replace("evict", "db-2", "new", true)
			s.step(time.Second)
			s.setReady("db-2", false)
			s.audit("stsroller", "stsroller", "delete", "", "db-2", 200)
			s.gone("db-2") // at once: no terminating state seen
		}, "which is the update revision"},
		{"no revision label", 3, nil, func(s *stream) {
			s.edit("db-1", func(p *corev1.Pod) { delete(p.Labels, appsv1.ControllerRevisionHashLabelKey) })
			s.remove("evict", "db-1")
		}, "no revision label"},
		{"partition", 5, map[string]string{AnnotationPartition: "4"}, func(s *stream) {
			s.replace("evict", "db-4", "new", true)
			s.step(time.Second)
			s.remove("evict", "db-3")
		}, "leaving 3 pods of the old revision, partition is 4"},
		{"healthy before unhealthy", 3, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.edit("db-0", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending })
			s.remove("evict", "db-2")
		}, "db-2 of db was evicted while 1 unhealthy outdated pods were left (db-0)"},
		{"asked to drain before an unhealthy pod goes", 3, map[string]string{AnnotationDrainTimeout: "30", AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.setReady("db-0", false)
			s.requestDrain("db-2", "new")
		}, "db-2 of db was asked to drain while 1 unhealthy outdated pods were left (db-0)"},
		{"Ready pod deleted", 3, nil, func(s *stream) {
			s.remove("delete", "db-2")
		}, "Ready pods go only by eviction"},
		{"leader first", 3, nil, func(s *stream) {
			s.edit("db-0", func(p *corev1.Pod) { p.Labels["stsroller.io/role"] = "leader" })
			s.remove("evict", "db-0")
		}, "as a leader while 2 other pods were not updated and Ready (db-1,db-2)"},
		{"leader with another replacement not Ready", 3, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.edit("db-0", func(p *corev1.Pod) { p.Labels["app.kubernetes.io/role"] = "primary" })
			s.annotate(AnnotationLeaderSelector, "app.kubernetes.io/role in (primary)")
			s.replace("evict", "db-2", "new", true)
			s.replace("evict", "db-1", "new", false)
			s.remove("evict", "db-0")
		}, "as a leader while 1 other pods were not updated and Ready (db-1)"},
		{"leader asked to drain first", 3, map[string]string{AnnotationDrainTimeout: "60"}, func(s *stream) {
			s.edit("db-0", func(p *corev1.Pod) { p.Labels["stsroller.io/role"] = "leader" })
			s.requestDrain("db-0", "new")
		}, "db-0 of db was asked to drain as a leader"},
		{"evicted unasked", 3, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.remove("evict", "db-2")
		}, "never asked to drain for revision new"},
		{"evicted before the answer or the timeout", 3, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.requestDrain("db-2", "new")
			s.step(10 * time.Second)
			s.remove("evict", "db-2")
		}, "was unanswered and the timeout 30s had not passed"},
		{"evicted on another revision's request", 3, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.requestDrain("db-2", "older")
			s.answerDrain("db-2")
			s.remove("evict", "db-2")
		}, "never asked to drain for revision new"},
		{"requests beyond max-unavailable", 4, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.requestDrain("db-3", "new")
			s.requestDrain("db-2", "new")
		}, "db-2 of db was asked to drain with 1 other pods unavailable or asked to drain (db-3)"},
		{"evicted while another is asked", 4, map[string]string{AnnotationDrainTimeout: "30", AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.requestDrain("db-3", "new")
			s.requestDrain("db-2", "new")
			s.answerDrain("db-3")
			s.updatedNotReady("db-0") // an updated pod crashes meanwhile
			s.remove("evict", "db-3")
		}, "db-3 of db was evicted with 2 other pods unavailable or asked to drain (db-0,db-2)"},
		{"evicted beyond max-unavailable", 4, nil, func(s *stream) {
			s.updatedNotReady("db-1")
			s.remove("evict", "db-3")
		}, "with 1 other pods unavailable or asked to drain (db-1)"},
		{"a missing pod counts", 4, nil, func(s *stream) {
			s.change(func(sts *appsv1.StatefulSet) { sts.Spec.Replicas = ptr.To[int32](5) })
			s.remove("evict", "db-0")
		}, "with 1 other pods unavailable or asked to drain (db-4)"},
		{"a batch too large", 4, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.audit("stsroller", "stsroller", "create", "eviction", "db-3", 201)
			s.audit("stsroller", "stsroller", "create", "eviction", "db-2", 201)
			s.audit("stsroller", "stsroller", "create", "eviction", "db-1", 201)
		}, "db-1 of db was evicted with 2 other pods unavailable or asked to drain (db-2,db-3)"},
		{"unhealthy pods beyond the replacements in flight", 4, nil, func(s *stream) {
			s.setReady("db-3", false)
			s.setReady("db-2", false)
			s.replace("delete", "db-3", "new", false)
			s.remove("delete", "db-2")
		}, "db-2 of db was deleted with 1 other replacements in flight (db-3)"},
		{"asked twice", 3, map[string]string{AnnotationDrainTimeout: "30"}, func(s *stream) {
			s.requestDrain("db-2", "new")
			s.step(time.Second)
			s.requestDrain("db-2", "new")
		}, "db-2 of db was asked to drain while its request of"},
		{"evicted while another member of the group is down", 3, map[string]string{AnnotationRolloutGroup: "g"}, func(s *stream) {
			s.addSet("web", 2, map[string]string{AnnotationRolloutGroup: " g "})
			s.setReady("web-1", false)
			s.remove("evict", "db-2")
		}, "db-2 of db was evicted while web of its rollout group g had pods unavailable or asked to drain (web-1)"},
		{"repaired while another member's replacements are on their way", 3, map[string]string{AnnotationRolloutGroup: "g"}, func(s *stream) {
			s.addSet("web", 2, map[string]string{AnnotationRolloutGroup: "g"})
			s.audit("stsroller", "stsroller", "create", "eviction", "web-1", 201)
			s.setReady("db-2", false)
			s.remove("delete", "db-2")
		}, "db-2 of db was deleted while web of its rollout group g had replacements on their way (web-1)"},
		{"pod of another owner", 3, nil, func(s *stream) {
			stray := s.pod("stray", "old", true)
			stray.OwnerReferences = nil
			s.c.OnPod(stray)
			s.remove("delete", "stray")
		}, "pod stray of another owner (no controller) was deleted"},
		{"a collection", 3, nil, func(s *stream) {
			s.audit("stsroller", "stsroller", "deletecollection", "", "", 200)
		}, "deleted a collection of pods"},
		{"budget exceeded", 4, map[string]string{AnnotationMaxUnavailable: "2"}, func(s *stream) {
			s.c.OnPDB(&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db"},
				Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromString("75%")),
					Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}})
			// A drain takes one (3 of 4 stay), then stsroller another.
			s.audit("stsroller-e2e-admin", "e2e.test", "create", "eviction", "db-0", 201)
			s.remove("evict", "db-3")
		}, "PDB db: evicting Ready pod db-3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, tc.n, tc.ann)
			tc.trace(s)
			v := s.violations()
			if len(v) != 1 || !strings.Contains(v[0], tc.want) {
				t.Fatalf("violations %q, want one saying %q", v, tc.want)
			}
		})
	}
}

// TestOtherOwnerGetsCondition: stsroller's DNS condition on a pod of a
// StatefulSet it does not manage.
func TestOtherOwnerGetsCondition(t *testing.T) {
	s := newStream(t, 3, nil)
	other := s.pod("web-0", "old", true)
	other.OwnerReferences[0].Name, other.OwnerReferences[0].UID = "web", "web-uid"
	s.c.OnPod(other)
	other = other.DeepCopy()
	other.Status.Conditions = append(other.Status.Conditions, corev1.PodCondition{Type: ConditionDNSPropagated, Status: corev1.ConditionTrue})
	s.c.OnPod(other)
	if v := s.violations(); len(v) != 1 || !strings.Contains(v[0], "another owner got condition") {
		t.Fatalf("violations %q", v)
	}
}

// TestOneLeaseHolderAtATime: with Options.Lease, a removal must come from the
// user whose write of the Lease came last before it: two instances never
// remove pods at the same time.
func TestOneLeaseHolderAtATime(t *testing.T) {
	s := newStreamWith(t, 6, nil, Options{Lease: "stsroller"})
	s.replaceAs("a", "db-5") // before anyone held the Lease
	s.writeLease("a", "stsroller")
	s.writeLease("b", "other-lease") // another Lease: not this one
	s.replaceAs("a", "db-4")
	s.replaceAs("b", "db-3") // while a holds it
	s.writeLease("b", "stsroller")
	s.replaceAs("b", "db-2")
	s.replaceAs("a", "db-1") // a acts on after b took over
	s.writeLease("a", "stsroller")
	s.replaceAs("a", "db-0")
	v := s.violations()
	want := []string{"db-5 was evicted by a while nobody held", "db-3 was evicted by b while a held", "db-1 was evicted by a while b held"}
	if len(v) != len(want) {
		t.Fatalf("violations %q, want %d", v, len(want))
	}
	for i, w := range want {
		if !strings.Contains(v[i], w) {
			t.Errorf("violation %d is %q, want one saying %q", i, v[i], w)
		}
	}
}

// TestIdentity: only requests of the identity are stsroller's.
func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		id          Identity
		user, agent string
		want        bool
	}{
		{DefaultIdentity, "anyone", "stsroller", true},
		{DefaultIdentity, "anyone", "kubectl-stsroller", false},
		{Identity{Username: "stsroller-e2e-controller"}, "stsroller-e2e-controller", "x", true},
		{Identity{Username: "stsroller-e2e-controller", UserAgent: "stsroller"}, "stsroller-e2e-controller", "kwok", false},
		{Identity{}, "", "", false},
	} {
		e := &AuditEvent{UserAgent: tc.agent}
		e.User.Username = tc.user
		if got := tc.id.matches(e); got != tc.want {
			t.Errorf("%+v matches user %q agent %q = %v, want %v", tc.id, tc.user, tc.agent, got, tc.want)
		}
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		ann  map[string]string
		want func(c config) bool
	}{
		{map[string]string{AnnotationEnabled: "TRUE"}, func(c config) bool { return c.enabled && c.invalid == "" && c.maxUnavailable == 1 }},
		{map[string]string{AnnotationEnabled: "yes"}, func(c config) bool { return c.enabled && c.invalid == AnnotationEnabled }},
		{map[string]string{AnnotationMaxUnavailable: "25%"}, func(c config) bool { return c.maxUnavailable == 2 }},
		{map[string]string{AnnotationMaxUnavailable: "1%"}, func(c config) bool { return c.maxUnavailable == 1 }},
		{map[string]string{AnnotationMaxUnavailable: "101%"}, func(c config) bool { return c.invalid == AnnotationMaxUnavailable }},
		{map[string]string{AnnotationMaxUnavailable: "2.5"}, func(c config) bool { return c.invalid == AnnotationMaxUnavailable }},
		{map[string]string{AnnotationPartition: "-1"}, func(c config) bool { return c.invalid == AnnotationPartition }},
		{map[string]string{AnnotationPaused: " True "}, func(c config) bool { return c.paused && c.invalid == "" }},
		{map[string]string{AnnotationLeaderSelector: "role in (a,"}, func(c config) bool { return c.invalid == AnnotationLeaderSelector }},
		{map[string]string{AnnotationDNSDomain: "Db.Example.com."}, func(c config) bool { return c.invalid == "" }},
		{map[string]string{AnnotationDNSDomain: "a_b"}, func(c config) bool { return c.invalid == AnnotationDNSDomain }},
		{map[string]string{AnnotationDrainTimeout: "0"}, func(c config) bool { return c.invalid == AnnotationDrainTimeout }},
		{map[string]string{AnnotationDrainTimeout: "7"}, func(c config) bool { return c.drainTimeout == 7*time.Second }},
		{map[string]string{AnnotationRolloutGroupOrder: "-3"}, func(c config) bool { return c.invalid == "" }},
	} {
		sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Annotations: tc.ann},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](8)}}
		if c := parseConfig(sts); !tc.want(c) {
			t.Errorf("%v: %+v", tc.ann, c)
		}
	}
}

// idle lets d pass on the clock, the checker judging every 250ms as Watch
// has it do.
func (s *stream) idle(d time.Duration) {
	for end := s.clk.Now().Add(d); s.clk.Now().Before(end); {
		s.step(250 * time.Millisecond)
		s.c.Resolve(false)
	}
}

// TestStall: with StallAfter, a StatefulSet stsroller could act on for
// longer than that without a request of its own is a violation; one it acts
// on, or one it may not act on, is not.
func TestStall(t *testing.T) {
	opts := Options{StallAfter: 10 * time.Second}
	for _, tc := range []struct {
		name  string
		ann   map[string]string
		trace func(s *stream)
		want  string // "" for no violation
	}{
		{name: "idle", trace: func(s *stream) { s.idle(12 * time.Second) }, want: "StatefulSet db stalled"},
		{name: "acting", trace: func(s *stream) {
			for _, p := range []string{"db-3", "db-2", "db-1", "db-0"} {
				s.idle(4 * time.Second)
				s.replace("evict", p, "new", true)
			}
			s.idle(12 * time.Second) // complete: nothing to do
		}},
		{name: "paused", ann: map[string]string{AnnotationPaused: "true"}, trace: func(s *stream) { s.idle(12 * time.Second) }},
		{name: "partition", ann: map[string]string{AnnotationPartition: "4"}, trace: func(s *stream) { s.idle(12 * time.Second) }},
		{name: "unready pod", trace: func(s *stream) {
			s.setReady("db-1", false)
			s.idle(12 * time.Second)
		}},
		{name: "budget allows none", trace: func(s *stream) {
			s.c.OnPDB(&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "pdb", Namespace: nsName, Generation: 1},
				Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
				Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: 0}})
			s.idle(12 * time.Second)
		}},
		{name: "budget allows one", trace: func(s *stream) {
			s.c.OnPDB(&policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "pdb", Namespace: nsName, Generation: 1},
				Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
				Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: 1}})
			s.idle(12 * time.Second)
		}, want: "StatefulSet db stalled"},
		{name: "slow but acting", trace: func(s *stream) {
			s.idle(8 * time.Second)
			s.replace("evict", "db-3", "new", true)
			s.idle(8 * time.Second)
			s.replace("evict", "db-2", "new", true)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStreamWith(t, 4, tc.ann, opts)
			tc.trace(s)
			var stalls []string
			for _, v := range s.violations() {
				if strings.Contains(v, "stalled") {
					stalls = append(stalls, v)
				}
			}
			switch {
			case tc.want == "" && len(stalls) > 0:
				t.Fatalf("stalls %q, want none", stalls)
			case tc.want != "" && (len(stalls) != 1 || !strings.Contains(stalls[0], tc.want)):
				t.Fatalf("stalls %q, want one saying %q", stalls, tc.want)
			}
		})
	}
}
