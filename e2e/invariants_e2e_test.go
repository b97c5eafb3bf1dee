//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/stsroller/stsroller/e2e/framework"
	"github.com/stsroller/stsroller/e2e/invariants"
)

// TestCheckerJudgesRequests: the invariants checker attributes removals by
// the audit log, not by pod state. No stsroller runs; the test plays it with
// stsroller's user agent, and deletes, with grace period 0, a Ready pod of a
// paused StatefulSet that is at the update revision: the three rules fire. The same
// deletion by another actor is no violation of stsroller's.
func TestCheckerJudgesRequests(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	client := framework.Client(t)
	ns := framework.Namespace(ctx, t, client)
	check, err := invariants.Watch(ctx, client, ns)
	if errors.Is(err, invariants.ErrNoAuditLog) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	e := &faultEnv{t: t, ctx: ctx, client: client, ns: ns, check: check}
	e.create(faultSet(ns, "db", 3, map[string]string{invariants.AnnotationPaused: "true"}))
	e.waitReady("db", 3)

	cfg, err := framework.Config()
	if err != nil {
		t.Fatal(err)
	}
	cfg.UserAgent = invariants.DefaultIdentity.UserAgent
	asStsroller, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Another actor first: a test deleting a current pod is not stsroller.
	if err := client.CoreV1().Pods(ns).Delete(ctx, "db-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := asStsroller.CoreV1().Pods(ns).Delete(ctx, "db-2", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	err = framework.Eventually(ctx, 30*time.Second, 250*time.Millisecond, func(context.Context) error {
		check.Resolve(false)
		if v := check.Violations(); len(v) < 3 {
			return fmt.Errorf("violations %q", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check.Resolve(true)
	v := check.Violations()
	joined := strings.Join(v, "\n")
	if len(v) != 3 || !strings.Contains(joined, "pod db-2 of db was deleted while the StatefulSet was paused") ||
		!strings.Contains(joined, "pod db-2 of db was deleted at revision") ||
		!strings.Contains(joined, "pod db-2 of db was deleted though it was Running and Ready") || strings.Contains(joined, "db-1") {
		t.Errorf("violations:\n%s\nwant db-2's deletion as paused, current and Ready, nothing of db-1", joined)
	}
	if st := check.Stats(); st.Removals != 1 || st.Others < 1 {
		t.Errorf("stats %+v, want 1 removal of stsroller's and db-1's by another", st)
	}
}
