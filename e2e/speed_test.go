//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/policy"
)

// BenchmarkRollout100 rolls out 100 pods twice on the same cluster, side by
// side: once by the built-in StatefulSet controller (RollingUpdate, one pod at
// a time) and once by stsroller (OnDelete, max-unavailable 10). Every new pod
// turns healthy 1s after it is created, as a slow-starting database would.
//
//	make bench-e2e   # or: go test -tags e2e -run '^$' -bench Rollout100 -benchtime 1x ./e2e/
//
// It reports seconds per rollout for each, and their ratio.
func BenchmarkRollout100(b *testing.B) {
	const replicas = 100
	var builtin, ours time.Duration
	b.Run("builtin", func(b *testing.B) {
		for range b.N {
			builtin = timeRollout(b, rolloutOptions{replicas: replicas, strategy: appsv1.RollingUpdateStatefulSetStrategyType, noController: true})
		}
		b.ReportMetric(builtin.Seconds(), "s/rollout")
	})
	b.Run("stsroller", func(b *testing.B) {
		for range b.N {
			ours = timeRollout(b, rolloutOptions{replicas: replicas, annotations: map[string]string{policy.AnnotationMaxUnavailable: "10"}})
		}
		b.ReportMetric(ours.Seconds(), "s/rollout")
	})
	if builtin > 0 && ours > 0 {
		b.Logf("100-pod rollout: built-in %s, stsroller (max-unavailable 10) %s: %.1fx faster",
			builtin.Round(time.Millisecond), ours.Round(time.Millisecond), builtin.Seconds()/ours.Seconds())
	}
}

// timeRollout sets up a StatefulSet, then times one rollout of a new revision
// until every pod is updated and Ready.
func timeRollout(b *testing.B, o rolloutOptions) time.Duration {
	b.StopTimer()
	r := newRollout(b, o)
	r.watch.SetHealthyAfter(time.Second)
	b.StartTimer()
	start := time.Now()
	rev := r.newRevision("2")
	err := framework.Eventually(r.ctx, 20*time.Minute, 250*time.Millisecond, func(context.Context) error {
		up, old := r.counts(rev)
		ready := 0
		for _, p := range r.pods() {
			if p.DeletionTimestamp == nil && framework.PodReady(&p) &&
				p.Labels[appsv1.ControllerRevisionHashLabelKey] == rev {
				ready++
			}
		}
		if up != o.replicasInt() || old != 0 || ready != o.replicasInt() {
			return fmt.Errorf("%d updated (%d ready), %d old", up, ready, old)
		}
		return nil
	})
	d := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func (o rolloutOptions) replicasInt() int { return int(o.replicas) }
