//go:build e2e

package e2e

import (
	"strconv"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/stsroller/stsroller/e2e/invariants"
)

// TestFaultDrainHandshake: a rollout with the drain handshake on, that no
// sidecar answers (each pod goes at the 2 s timeout), and a leader, under
// the invariants checker: each drain request and eviction is judged from the
// audit log against max-unavailable (requests counted), the handshake, the
// partition and leader last.
func TestFaultDrainHandshake(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{})
	e.create(faultSet(e.ns, "db", 6, map[string]string{invariants.AnnotationMaxUnavailable: "2",
		invariants.AnnotationDrainTimeout: "2", invariants.AnnotationPartition: "1"}))
	e.waitReady("db", 6)
	if _, err := e.client.CoreV1().Pods(e.ns).Patch(e.ctx, "db-3", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"stsroller.io/role":"leader"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.roll("db")
	e.waitComplete(faultTimeout, "db")
	e.check.Resolve(true)
	if st := e.check.Stats(); st.DrainRequests < 5 || st.Removals < 5 {
		t.Errorf("checker stats %+v: want at least 5 drain requests and 5 removals judged", st)
	}
}

// TestFaultGroup: two members of a rollout group roll together, one at a
// time, the drain handshake on; the checker judges each request against the
// other member's pods.
func TestFaultGroup(t *testing.T) {
	t.Parallel()
	e := newFaultEnv(t, faultEnvOptions{})
	for i, name := range []string{"a", "b"} {
		e.create(faultSet(e.ns, name, 4, map[string]string{invariants.AnnotationMaxUnavailable: "2",
			invariants.AnnotationDrainTimeout: "1", invariants.AnnotationRolloutGroup: "g",
			invariants.AnnotationRolloutGroupOrder: strconv.Itoa(i)}))
	}
	e.waitReady("a", 4)
	e.waitReady("b", 4)
	e.roll("a", "b")
	e.waitComplete(faultTimeout, "a", "b")
	e.check.Resolve(true)
	if st := e.check.Stats(); st.Removals < 8 {
		t.Errorf("checker stats %+v: want at least 8 removals judged", st)
	}
}
