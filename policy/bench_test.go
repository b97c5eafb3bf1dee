package policy

import (
	"strconv"
	"testing"
	"time"

	"github.com/stsroller/stsroller/pdb"
)

// BenchmarkCompute plans a rollout a third done: pods at both revisions, some
// not Ready, a leader, and one budget over every pod that allows fewer
// evictions than max-unavailable, so most candidates are tried and held back.
func BenchmarkCompute(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(strconv.Itoa(n)+" pods", func(b *testing.B) {
			sts := newSet(int32(n), ann(AnnotationMaxUnavailable, "10%", AnnotationPartition, "1"))
			in := input(b, sts, nil)
			for o := range n {
				p := newPod(o, oldRev)
				switch {
				case o%3 == 0:
					p = newPod(o, newRev)
				case o%17 == 0:
					notReady(p)
				case o == 1:
					leader(p)
				}
				in.Pods = append(in.Pods, p)
				in.Budgets[p.Name] = []pdb.Budget{{Name: "all", Allowed: 5}}
			}
			in.Previous = rollingSince(time.Minute, int32(n/3))
			b.ReportAllocs()
			for b.Loop() {
				Compute(in)
			}
		})
	}
}
