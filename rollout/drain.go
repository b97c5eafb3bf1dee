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

// drainRequestPatch is the merge patch that asks a pod to drain. It carries
// the pod's UID and the resourceVersion the plan saw: the API server refuses
// it (409) when the pod changed since, so a request that the informer has not
// shown yet is never made a second time, and a pod replaced under the same
// name is never asked for its predecessor.
func drainRequestPatch(pod *corev1.Pod, at time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{
			"uid":             pod.UID,
			"resourceVersion": pod.ResourceVersion,
			"annotations":     map[string]string{policy.AnnotationDrainRequested: at.UTC().Format(time.RFC3339)},
		},
	})
}

// requestDrain carries out a MethodRequestDrain: it annotates the pod with
// the request's time and records DrainRequested. A pod that changed or went
// since it was planned is no error: the next plan sees it as it is.
func (c *Controller) requestDrain(ctx context.Context, key cache.ObjectName, sts *appsv1.StatefulSet, d policy.Deletion) error {
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(d.Pod))
	patch, err := drainRequestPatch(d.Pod, c.clock.Now())
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Pods(d.Pod.Namespace).Patch(ctx, d.Pod.Name, mergePatch, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	switch {
	case err == nil:
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		logger.V(4).Info("Pod changed since it was planned; planning again", "err", err)
		c.queue.Add(key)
		return nil
	default:
		return fmt.Errorf("asking pod %s/%s to drain: %w", d.Pod.Namespace, d.Pod.Name, err)
	}
	logger.V(2).Info("Asked pod to drain", "why", d.Message)
	c.recorder.Eventf(sts, corev1.EventTypeNormal, policy.ReasonDrainRequested, "%s: %s", d.Pod.Name, d.Message)
	c.recorder.Eventf(d.Pod, corev1.EventTypeNormal, policy.ReasonDrainRequested, "stsroller: %s", d.Message)
	return nil
}

// drained records how the drain of a pod just evicted ended: DrainCompleted
// when it answered, a DrainTimeout warning when it did not, and the time from
// the request in the drain duration metric. Evictions without a request are
// not drains.
func (c *Controller) drained(ctx context.Context, sts *appsv1.StatefulSet, cfg policy.Config, pod *corev1.Pod) {
	dr := policy.PodDrain(pod)
	if !dr.Requested {
		return
	}
	typ, reason, result := corev1.EventTypeNormal, policy.ReasonDrainCompleted, policy.DrainCompleted
	msg := fmt.Sprintf("%s answered the drain request (%s), and was evicted", pod.Name, policy.AnnotationDrainComplete)
	if !dr.Complete {
		typ, reason, result = corev1.EventTypeWarning, policy.ReasonDrainTimeout, policy.DrainTimedOut
		msg = fmt.Sprintf("%s did not answer the drain request of %s within %s (%s), and was evicted anyway",
			pod.Name, pod.Annotations[policy.AnnotationDrainRequested], cfg.DrainTimeout, policy.AnnotationDrainTimeoutSeconds)
	}
	if !dr.RequestedAt.IsZero() {
		c.metrics.DrainDuration.WithLabelValues(string(result)).Observe(c.clock.Since(dr.RequestedAt).Seconds())
	}
	klog.FromContext(ctx).V(2).Info("Drain ended", "pod", klog.KObj(pod), "result", result)
	c.recorder.Event(sts, typ, reason, msg)
	c.recorder.Event(pod, typ, reason, msg)
}
