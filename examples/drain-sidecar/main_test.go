package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"

	"github.com/stsroller/stsroller/policy"
)

func TestParseDownwardAPI(t *testing.T) {
	// As the kubelet writes it: sorted keys, values quoted with %q.
	in := `kubernetes.io/config.seen="2026-12-01T10:00:00Z"
stsroller.io/drain-requested="2026-12-01T10:05:00Z"
with.quotes/x="{\"a\":\"b\\n\"}"
`
	got, err := parseDownwardAPI(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kubernetes.io/config.seen":     "2026-12-01T10:00:00Z",
		policy.AnnotationDrainRequested: "2026-12-01T10:05:00Z",
		"with.quotes/x":                 `{"a":"b\n"}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"novalue", `k=unquoted`} {
		if _, err := parseDownwardAPI(bad); err == nil {
			t.Errorf("parseDownwardAPI(%q) = nil error", bad)
		}
	}
}

// steps records what a sidecar did.
type steps struct {
	annotations map[string]string
	runErr      error
	ran         []string
	completed   int
}

func (s *steps) sidecar() *sidecar {
	return &sidecar{
		Read: func(context.Context) (map[string]string, error) { return s.annotations, nil },
		Run: func(_ context.Context, requested string) error {
			s.ran = append(s.ran, requested)
			return s.runErr
		},
		Complete: func(context.Context) error { s.completed++; return nil },
	}
}

func TestStep(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	const at = "2026-12-01T10:05:00Z"

	t.Run("no request: nothing runs", func(t *testing.T) {
		s := &steps{annotations: map[string]string{"other": "x"}}
		if err := s.sidecar().Step(ctx); err != nil {
			t.Fatal(err)
		}
		if len(s.ran) != 0 || s.completed != 0 {
			t.Errorf("ran %v, completed %d; want nothing", s.ran, s.completed)
		}
	})
	t.Run("request: runs once, then answers once", func(t *testing.T) {
		s := &steps{annotations: map[string]string{policy.AnnotationDrainRequested: at}}
		sc := s.sidecar()
		for range 3 { // the answer may take a while to show in the annotations
			if err := sc.Step(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff([]string{at}, s.ran); diff != "" || s.completed != 1 {
			t.Errorf("ran (-want +got):\n%s completed %d, want 1", diff, s.completed)
		}
	})
	t.Run("already answered: nothing runs", func(t *testing.T) {
		s := &steps{annotations: map[string]string{policy.AnnotationDrainRequested: at, policy.AnnotationDrainComplete: "x"}}
		if err := s.sidecar().Step(ctx); err != nil {
			t.Fatal(err)
		}
		if len(s.ran) != 0 || s.completed != 0 {
			t.Errorf("ran %v, completed %d; want nothing", s.ran, s.completed)
		}
	})
	t.Run("command fails: no answer, tried again", func(t *testing.T) {
		s := &steps{annotations: map[string]string{policy.AnnotationDrainRequested: at}, runErr: errors.New("busy")}
		sc := s.sidecar()
		if err := sc.Step(ctx); err == nil {
			t.Fatal("Step = nil error, want the command's")
		}
		if s.completed != 0 {
			t.Fatalf("completed %d after a failed command, want 0", s.completed)
		}
		s.runErr = nil
		if err := sc.Step(ctx); err != nil {
			t.Fatal(err)
		}
		if len(s.ran) != 2 || s.completed != 1 {
			t.Errorf("ran %v, completed %d; want 2 runs and 1 answer", s.ran, s.completed)
		}
	})
}

// The whole sidecar against a fake API server: the request seen in a
// downward-API file, a real command, the answer patched onto the pod with the
// leader label removed.
func TestSidecarAnswersThroughTheAPI(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	const at = "2026-12-01T10:05:00Z"
	dir := t.TempDir()
	annotations := filepath.Join(dir, "annotations")
	out := filepath.Join(dir, "ran")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "db-0", Namespace: "ns",
		Labels:      map[string]string{"stsroller.io/role": "leader", "app": "db"},
		Annotations: map[string]string{policy.AnnotationDrainRequested: at},
	}}
	client := fake.NewClientset(pod)
	if err := os.WriteFile(annotations, []byte(`stsroller.io/drain-requested="`+at+`"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{
		Read:     fileReader(annotations),
		Run:      commandRunner([]string{"/bin/sh", "-c", `printf %s "$` + envRequested + `" > ` + out}, time.Minute),
		Complete: apiCompleter(client, "ns", "db-0", "stsroller.io/role"),
	}
	if err := s.Step(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("the command did not run: %v", err)
	}
	if string(b) != at {
		t.Errorf("the command saw %s=%q, want %q", envRequested, b, at)
	}
	got, err := client.CoreV1().Pods("ns").Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got.Annotations[policy.AnnotationDrainComplete]; !ok {
		t.Errorf("pod annotations %v lack %s", got.Annotations, policy.AnnotationDrainComplete)
	} else if _, err := time.Parse(time.RFC3339, v); err != nil {
		t.Errorf("%s = %q, want a time: %v", policy.AnnotationDrainComplete, v, err)
	}
	if diff := cmp.Diff(map[string]string{"app": "db"}, got.Labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	for _, a := range client.Actions() {
		if a.GetVerb() == "patch" && a.GetResource().Resource != "pods" {
			t.Errorf("patched %s, want only the pod", a.GetResource())
		}
	}
}

func TestCommandRunnerReportsExitCode(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	err := commandRunner([]string{"/bin/sh", "-c", "exit 3"}, 0)(ctx, "x")
	if err == nil || !strings.Contains(err.Error(), "exited with 3") {
		t.Errorf("error = %v, want one naming exit code 3", err)
	}
}
