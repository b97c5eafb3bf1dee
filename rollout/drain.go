package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/policy"
)

// drainPatch is a merge patch of a pod's drain annotations (a nil value
// removes one). It carries the pod's UID and the resourceVersion the plan saw:
// the API server refuses it (409) when the pod changed since, so a request
// that the informer has not shown yet is never made a second time, a pod
// replaced under the same name is never asked for its predecessor, and an
// answer given meanwhile is never lost unseen.
func drainPatch(pod *corev1.Pod, annotations map[string]any) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"uid":             pod.UID,
			"resourceVersion": pod.ResourceVersion,
			"annotations":     annotations,
		},
	})
}

// drainRequestPatch asks a pod to drain for revision rev: the request's
// time, with sub-second precision (so the timeout is never cut short by a
// rounding), the revision, and in the same patch the removal of any earlier
// answer, so that only an answer given after this request counts.
func drainRequestPatch(pod *corev1.Pod, at time.Time, rev string) ([]byte, error) {
	return drainPatch(pod, map[string]any{
		policy.AnnotationDrainRequested: at.UTC().Format(time.RFC3339Nano),
		policy.AnnotationDrainRevision:  rev,
		policy.AnnotationDrainComplete:  nil,
	})
}

// drainWithdrawPatch removes a drain request and its answer.
func drainWithdrawPatch(pod *corev1.Pod) ([]byte, error) {
	return drainPatch(pod, map[string]any{
		policy.AnnotationDrainRequested: nil,
		policy.AnnotationDrainRevision:  nil,
		policy.AnnotationDrainComplete:  nil,
	})
}

// patchDrain sends one drain patch. A pod that changed or went since it was
// planned is no error: the next plan, after conflictRetry, sees it as it is.
func (c *Controller) patchDrain(ctx context.Context, key cache.ObjectName, pod *corev1.Pod, patch []byte) (bool, error) {
	_, err := c.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, mergePatch, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		klog.FromContext(ctx).V(4).Info("Pod changed since it was planned; planning again",
			"pod", klog.KObj(pod), "err", err, "after", conflictRetry)
		c.queue.AddAfter(key, conflictRetry)
		return false, nil
	default:
		return false, err
	}
}

// requestDrain carries out a MethodRequestDrain: it annotates the pod with
// the request and records DrainRequested.
func (c *Controller) requestDrain(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, d policy.Deletion) error {
	patch, err := drainRequestPatch(d.Pod, c.clock.Now(), sts.Status.UpdateRevision)
	if err != nil {
		return err
	}
	ok, err := c.patchDrain(ctx, key, d.Pod, patch)
	if err != nil {
		return fmt.Errorf("asking pod %s/%s to drain: %w", d.Pod.Namespace, d.Pod.Name, err)
	}
	if !ok {
		return nil
	}
	klog.FromContext(ctx).V(2).Info("Asked pod to drain", "pod", klog.KObj(d.Pod), "why", d.Message)
	c.recorder.Eventf(sts, corev1.EventTypeNormal, policy.ReasonDrainRequested, "%s: %s", d.Pod.Name, d.Message)
	c.recorder.Eventf(d.Pod, corev1.EventTypeNormal, policy.ReasonDrainRequested, "stsroller: %s", d.Message)
	return nil
}

// withdrawDrains removes the drain requests the plan no longer stands by,
// each with a DrainWithdrawn event on the pod.
func (c *Controller) withdrawDrains(ctx context.Context, key cache.ObjectName, ws []policy.Withdrawal) error {
	for _, w := range ws {
		patch, err := drainWithdrawPatch(w.Pod)
		if err != nil {
			return err
		}
		ok, err := c.patchDrain(ctx, key, w.Pod, patch)
		if err != nil {
			return fmt.Errorf("withdrawing the drain request of pod %s/%s: %w", w.Pod.Namespace, w.Pod.Name, err)
		}
		if ok {
			klog.FromContext(ctx).V(2).Info("Withdrew drain request", "pod", klog.KObj(w.Pod), "why", w.Message)
			c.recorder.Event(w.Pod, corev1.EventTypeNormal, policy.ReasonDrainWithdrawn, "stsroller: "+w.Message)
		}
	}
	return nil
}

// drained records how the drain of a pod just evicted ended, as the plan
// said: DrainCompleted when it answered, a DrainTimeout warning when it did
// not, and the time from the request in the drain duration metric.
func (c *Controller) drained(ctx context.Context, sts *appsv1.StatefulSet, cfg policy.Config, d policy.Deletion) {
	var typ, reason, msg string
	var result policy.DrainOutcome
	switch d.Why {
	case policy.RemovalDrained:
		typ, reason, result = corev1.EventTypeNormal, policy.ReasonDrainCompleted, policy.DrainCompleted
		msg = fmt.Sprintf("%s answered the drain request (%s), and was evicted", d.Pod.Name, policy.AnnotationDrainComplete)
	case policy.RemovalDrainTimedOut:
		typ, reason, result = corev1.EventTypeWarning, policy.ReasonDrainTimeout, policy.DrainTimedOut
		msg = fmt.Sprintf("%s did not answer the drain request of %s within %s (%s), and was evicted anyway",
			d.Pod.Name, d.Pod.Annotations[policy.AnnotationDrainRequested], cfg.DrainTimeout, policy.AnnotationDrainTimeoutSeconds)
	default:
		return
	}
	if at := policy.PodDrain(d.Pod).RequestedAt; !at.IsZero() {
		c.metrics.DrainDuration.WithLabelValues(string(result)).Observe(c.clock.Since(at).Seconds())
	}
	klog.FromContext(ctx).V(2).Info("Drain ended", "pod", klog.KObj(d.Pod), "result", result)
	c.recorder.Event(sts, typ, reason, msg)
	c.recorder.Event(d.Pod, typ, reason, msg)
}
