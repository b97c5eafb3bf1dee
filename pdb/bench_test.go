package pdb

import (
	"fmt"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkForPods: matching one StatefulSet's pods against its namespace's
// budgets, as every sync does; go test -bench . -benchmem ./pdb/
func BenchmarkForPods(b *testing.B) {
	cases := []struct {
		pods, budgets int
	}{{10, 1}, {1000, 1}, {10000, 1}, {10, 1000}}
	for _, tc := range cases {
		pods := manyPods(tc.pods, "app0")
		budgets := make([]*policyv1.PodDisruptionBudget, tc.budgets)
		for i := range budgets {
			budgets[i] = budget(fmt.Sprintf("app%d", i), 1, 1, 1, matchApp(fmt.Sprintf("app%d", i)))
			budgets[i].UID = types.UID(budgets[i].Name)
		}
		b.Run(fmt.Sprintf("pods=%d/budgets=%d", tc.pods, tc.budgets), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ForPods(budgets, pods); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("cached/pods=%d/budgets=%d", tc.pods, tc.budgets), func(b *testing.B) {
			var s Selectors
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.ForPodsOf(budgets, pods, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		// The pods' own StatefulSet selector, as a sync passes it.
		of := labels.SelectorFromSet(labels.Set{"app": "app0"})
		b.Run(fmt.Sprintf("of/pods=%d/budgets=%d", tc.pods, tc.budgets), func(b *testing.B) {
			var s Selectors
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.ForPodsOf(budgets, pods, of); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
