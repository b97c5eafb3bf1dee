//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// staleAnswer is the answer a sidecar that answers what it sees leaves on a
// pod whose request was withdrawn: it must never count for a later request.
const staleAnswer = "stale-answer"

// TestDrainStateBelongsToOneRollout (issue 15, bug 3): a drain-enabled rollout
// of 5 pods, max-unavailable 2, a drain timeout far away, is interrupted
// after two pods were asked, by a revert, a pause, or a partition raised over
// every pod. stsroller withdraws both requests; a sidecar then answers the
// pods anyway. When the rollout goes on, no pod is evicted on that answer:
// each is asked again and goes only on an answer given after its new
// request, and never more than max-unavailable pods are unavailable or
// asked at once.
func TestDrainStateBelongsToOneRollout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// interrupt stops the rollout; resume goes on with it, to the
		// revision it returns.
		interrupt func(r *rollout)
		resume    func(r *rollout) string
	}{{
		name:      "reverted and rolled forward",
		interrupt: func(r *rollout) { r.newRevision("1") },
		resume:    func(r *rollout) string { return r.newRevision("2") },
	}, {
		name:      "paused and resumed",
		interrupt: func(r *rollout) { r.annotate(policy.AnnotationPaused, "true") },
		resume: func(r *rollout) string {
			r.annotate(policy.AnnotationPaused, "")
			return r.current().Status.UpdateRevision
		},
	}, {
		name:      "partition raised and lowered",
		interrupt: func(r *rollout) { r.annotate(policy.AnnotationPartition, "5") },
		resume: func(r *rollout) string {
			r.annotate(policy.AnnotationPartition, "0")
			return r.current().Status.UpdateRevision
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const maxUnavailable = 2
			r := newRollout(t, rolloutOptions{replicas: 5, annotations: map[string]string{
				policy.AnnotationMaxUnavailable:      fmt.Sprint(maxUnavailable),
				policy.AnnotationDrainTimeoutSeconds: "600",
			}})
			old := r.current().Status.UpdateRevision
			d := trackDrains(r, func(string) time.Duration { return -1 })
			r.newRevision("2")
			var asked []string
			err := framework.Eventually(r.ctx, rolloutTimeout, 100*time.Millisecond, func(context.Context) error {
				if asked = d.requested(old); len(asked) < maxUnavailable {
					return fmt.Errorf("pods asked to drain: %v, want %d", asked, maxUnavailable)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			tc.interrupt(r)
			err = framework.Eventually(r.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
				for _, p := range r.pods() {
					if _, ok := p.Annotations[policy.AnnotationDrainRequested]; ok {
						return fmt.Errorf("%s still carries %s", p.Name, p.Annotations[policy.AnnotationDrainRequested])
					}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("the requests were not withdrawn: %v", err)
			}
			if len(r.watch.Deletions()) != 0 {
				t.Fatalf("pods deleted before any answer: %v", names(r.watch.Deletions()))
			}
			for _, n := range asked {
				r.annotatePod(n, policy.AnnotationDrainComplete, staleAnswer)
			}

			d.setAnswer(func(string) time.Duration { return 500 * time.Millisecond })
			rev := tc.resume(r)
			r.waitRolledOut(rev, 5)

			for n, rec := range d.records(old) {
				if rec.deletedAt.IsZero() {
					continue // reverted to: it is current
				}
				if rec.completeValue == "" || rec.completeValue == staleAnswer {
					t.Errorf("%s was evicted with %s=%q on request %q, want the answer to its own request",
						n, policy.AnnotationDrainComplete, rec.completeValue, rec.lastRequest)
				}
			}
			d.mu.Lock()
			peak := d.peak
			d.mu.Unlock()
			if peak > maxUnavailable {
				t.Errorf("peak of pods unavailable or asked to drain = %d, want at most %d", peak, maxUnavailable)
			}
			withdrawn := 0
			for _, n := range asked {
				l, err := r.client.CoreV1().Events(r.ns).List(r.ctx, metav1.ListOptions{
					FieldSelector: "involvedObject.kind=Pod,involvedObject.name=" + n + ",reason=" + policy.ReasonDrainWithdrawn})
				if err != nil {
					t.Fatal(err)
				}
				withdrawn += len(l.Items)
			}
			if withdrawn == 0 {
				t.Errorf("no %s event on %v", policy.ReasonDrainWithdrawn, asked)
			}
			r.checkEachOnceWithin(maxUnavailable, tc.name)
		})
	}
}

// annotate sets (or, with an empty value, removes) an annotation of the
// StatefulSet.
func (r *rollout) annotate(key, value string) {
	r.t.Helper()
	v := fmt.Sprintf("%q", value)
	if value == "" {
		v = "null"
	}
	r.patch(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, key, v))
}

// annotatePod sets an annotation of a pod, as its sidecar would.
func (r *rollout) annotatePod(pod, key, value string) {
	r.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if _, err := r.client.CoreV1().Pods(r.ns).Patch(r.ctx, pod, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "e2e-sidecar"}); err != nil {
		r.t.Fatal(err)
	}
}
