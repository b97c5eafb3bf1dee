package rollout

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/policy"
)

// writeStatus patches the status annotation when what it says changed, and
// records the events the change deserves. A change that deserves no event
// and keeps the phase and revision (counts, words, or a reason such as
// DeletingPods turning into WaitingForAvailability and back) is written at
// most every statusCountsInterval: in a large rollout every pod's every step
// would otherwise be a write to the API server, and each write of the
// StatefulSet wakes the built-in StatefulSet controller too.
func (c *Controller) writeStatus(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, prev, next *policy.Status) error {
	if prev.SameAs(next) {
		return nil
	}
	now := c.clock.Now()
	events := policy.Events(prev, next)
	if prev != nil && prev.Phase == next.Phase && prev.UpdateRevision == next.UpdateRevision && len(events) == 0 {
		c.mu.Lock()
		last := c.lastWrite[key]
		c.mu.Unlock()
		if wait := statusCountsInterval - now.Sub(last); wait > 0 {
			c.queue.AddAfter(key, wait)
			return nil
		}
	}
	patch, err := annotationPatch(policy.AnnotationStatus, next.Encode())
	if err != nil {
		return err
	}
	got, err := c.client.AppsV1().StatefulSets(sts.Namespace).Patch(ctx, sts.Name, mergePatch, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing status of %s/%s: %w", sts.Namespace, sts.Name, err)
	}
	w := writtenStatus{status: policy.ParseStatus(map[string]string{policy.AnnotationStatus: next.Encode()}), readAt: sts.ResourceVersion}
	if got != nil {
		w.writtenAt = got.ResourceVersion
	}
	c.mu.Lock()
	c.lastWrite[key] = now
	c.written[key] = w
	c.mu.Unlock()
	for _, e := range events {
		c.recorder.Event(sts, e.Type, e.Reason, e.Message)
	}
	klog.FromContext(ctx).V(2).Info("Status changed", "phase", next.Phase, "reason", next.Reason, "message", next.Message)
	return nil
}

// observe keeps the phase gauges and the rollout duration.
func (c *Controller) observe(key cache.ObjectName, prev, next *policy.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if next.Phase.Rolling() {
		if _, ok := c.starts[key]; !ok {
			start := c.clock.Now()
			if prev != nil && prev.Phase.Rolling() && prev.LastTransitionTime.Time.Before(start) {
				start = prev.LastTransitionTime.Time
			}
			c.starts[key] = start
		}
	} else if start, ok := c.starts[key]; ok {
		if next.Phase == policy.PhaseComplete {
			c.metrics.RolloutDuration.Observe(c.clock.Since(start).Seconds())
		}
		delete(c.starts, key)
	}
	c.healthWaitLocked(key, next)
	s := *next
	c.phases[key] = &s
	c.gaugeLocked(key, &s)
}

func (c *Controller) forget(key cache.ObjectName) {
	c.expectations.forget(key)
	c.sender.forget(key)
	if c.gate != nil {
		c.gate.Forget(key)
	}
	if c.health != nil {
		c.health.Forget(key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.phases, key)
	delete(c.starts, key)
	delete(c.healthWaits, key)
	delete(c.lastWrite, key)
	delete(c.written, key)
	c.gaugeLocked(key, nil)
	c.budgets.set(key, nil)
}

// gaugeLabels is where one StatefulSet counts in the phase gauges.
type gaugeLabels struct {
	phase   policy.Phase
	blocked string // the reason, when blocked, stalled or invalid
}

func labelsOf(s *policy.Status) (gaugeLabels, bool) {
	if s == nil {
		return gaugeLabels{}, false
	}
	l := gaugeLabels{phase: s.Phase}
	if s.Phase == policy.PhaseBlocked || s.Phase == policy.PhaseStalled || s.Phase == policy.PhaseInvalid {
		l.blocked = s.Reason
	}
	return l, true
}

// gaugeLocked moves the StatefulSet in the phase gauges from where it counted
// to where next puts it (nil: nowhere). The gauges change by one step at a
// time, never reset, so a scrape never sees a managed StatefulSet missing.
// c.mu is held.
func (c *Controller) gaugeLocked(key cache.ObjectName, next *policy.Status) {
	old, had := c.gauged[key]
	cur, has := labelsOf(next)
	if had == has && old == cur {
		return
	}
	if has {
		c.metrics.Rollouts.WithLabelValues(string(cur.phase)).Inc()
		if cur.blocked != "" {
			c.metrics.RolloutsBlocked.WithLabelValues(cur.blocked).Inc()
		}
		c.gauged[key] = cur
	} else {
		delete(c.gauged, key)
	}
	if had {
		c.metrics.Rollouts.WithLabelValues(string(old.phase)).Dec()
		if old.blocked != "" {
			c.metrics.RolloutsBlocked.WithLabelValues(old.blocked).Dec()
		}
	}
}
