//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stsroller/stsroller/e2e/framework"
)

// The tests of this file create a StatefulSet and change its pod template the
// way users do, with the pinned kubectl and helm, instead of with a client:
// each tool leaves its own marks on the object (kubectl's
// last-applied-configuration annotation, server-side apply's managed fields,
// kustomize's hashed ConfigMap names, helm's release annotations), and the
// rollout must complete whatever they are (issue 15, item 1: a
// kubectl-applied StatefulSet never rolled).

// appliedReplicas and appliedMaxUnavailable size the applied StatefulSet: two
// batches.
const (
	appliedReplicas       = 4
	appliedMaxUnavailable = 2
)

// lastApplied is the annotation client-side apply writes, which
// informers.Trim keeps out of stsroller's cache.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// dbManifest is what a user keeps in a file: the headless Service and the
// StatefulSet "db" (pods labelled app=db, as the rollout helpers expect),
// OnDelete, Parallel, managed by stsroller with max-unavailable 2. env is the
// container's env or envFrom block, indented for it.
func dbManifest(env string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
  ports:
  - name: db
    port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  annotations:
    stsroller.io/enabled: "true"
    stsroller.io/max-unavailable: "%d"
spec:
  replicas: %d
  serviceName: db
  podManagementPolicy: Parallel
  updateStrategy:
    type: OnDelete
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: db
        image: registry.k8s.io/pause:3.10
%s`, appliedMaxUnavailable, appliedReplicas, env)
}

// versionEnv is the env block that sets VERSION to value (YAML, quoted).
func versionEnv(value string) string {
	return fmt.Sprintf(`        env:
        - name: VERSION
          value: %s
`, value)
}

// writeFiles writes name → content into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runTool runs a command line tool against the cluster of $KUBECONFIG and
// returns its standard output, or fails t with its standard error.
func runTool(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), bin, append(args, "--kubeconfig="+os.Getenv("KUBECONFIG"))...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.String())
	}
	t.Logf("%s %s: %s", bin, strings.Join(args, " "), strings.TrimSpace(string(out)))
	return string(out)
}

// kubectlBinary is the pinned kubectl of $STSROLLER_BIN_DIR, else the one on
// PATH (framework.Kubectl), or fails t.
func kubectlBinary(t *testing.T) string {
	t.Helper()
	k, err := exec.LookPath(framework.Kubectl())
	if err != nil {
		t.Fatalf("no kubectl in $STSROLLER_BIN_DIR (hack/tools.sh build kubernetes) nor on PATH: %v", err)
	}
	return k
}

// userApply is one way users create and change a StatefulSet.
type userApply struct {
	name string
	// apply creates (version "1") or changes the StatefulSet db in ns so
	// that its pods have VERSION=version, from files in dir.
	apply func(t *testing.T, ns, dir, version string)
	// marked checks that the live StatefulSet carries the tool's marks,
	// so that the test exercises what it says.
	marked func(*appsv1.StatefulSet) error
}

// hasLastApplied checks for client-side apply's annotation.
func hasLastApplied(s *appsv1.StatefulSet) error {
	if _, ok := s.Annotations[lastApplied]; !ok {
		return fmt.Errorf("no %s annotation", lastApplied)
	}
	return nil
}

func userApplies() []userApply {
	kubectlApply := func(extra ...string) func(t *testing.T, ns, dir, version string) {
		return func(t *testing.T, ns, dir, version string) {
			writeFiles(t, dir, map[string]string{"db.yaml": dbManifest(versionEnv(fmt.Sprintf("%q", version)))})
			args := append([]string{"apply", "--namespace=" + ns, "-f", filepath.Join(dir, "db.yaml")}, extra...)
			runTool(t, nil, kubectlBinary(t), args...)
		}
	}
	return []userApply{{
		// kubectl's default, and what most users run: the three-way merge
		// that keeps the last applied configuration in an annotation.
		name:   "client-side",
		apply:  kubectlApply(),
		marked: hasLastApplied,
	}, {
		name:  "server-side",
		apply: kubectlApply("--server-side"),
		marked: func(s *appsv1.StatefulSet) error {
			if _, ok := s.Annotations[lastApplied]; ok {
				return fmt.Errorf("a %s annotation: not applied server side only", lastApplied)
			}
			for _, f := range s.ManagedFields {
				if f.Manager == "kubectl" && f.Operation == metav1.ManagedFieldsOperationApply {
					return nil
				}
			}
			return fmt.Errorf("no managed fields of manager kubectl with operation Apply")
		},
	}, {
		// A kustomization whose ConfigMap generator changes: kustomize
		// renames the ConfigMap by its content's hash and rewrites the
		// template's reference, which changes the pod template. kubectl
		// apply -k applies the result client side.
		name: "kustomize",
		apply: func(t *testing.T, ns, dir, version string) {
			writeFiles(t, dir, map[string]string{
				"db.yaml": dbManifest(`        envFrom:
        - configMapRef:
            name: db-env
`),
				"kustomization.yaml": fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %s
resources:
- db.yaml
configMapGenerator:
- name: db-env
  literals:
  - VERSION=%s
`, ns, version),
			})
			runTool(t, nil, kubectlBinary(t), "apply", "-k", dir)
		},
		marked: func(s *appsv1.StatefulSet) error {
			if err := hasLastApplied(s); err != nil {
				return err
			}
			c := s.Spec.Template.Spec.Containers[0]
			if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || !strings.HasPrefix(c.EnvFrom[0].ConfigMapRef.Name, "db-env-") {
				return fmt.Errorf("envFrom %+v, want the ConfigMap db-env-<hash> of kustomize's generator", c.EnvFrom)
			}
			return nil
		},
	}, {
		// A chart whose StatefulSet takes VERSION from a value: helm
		// install, then helm upgrade with the value changed.
		name: "helm",
		apply: func(t *testing.T, ns, dir, version string) {
			helm := helmBinary(t)
			home := filepath.Join(dir, "helm-home")
			env := []string{"HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home}
			chart := filepath.Join(dir, "chart")
			if version == "1" {
				writeFiles(t, chart, map[string]string{
					"Chart.yaml":        "apiVersion: v2\nname: db\nversion: 0.1.0\n",
					"values.yaml":       "version: \"1\"\n",
					"templates/db.yaml": dbManifest(versionEnv("{{ .Values.version | quote }}")),
				})
				runTool(t, env, helm, "install", "db", chart, "--namespace", ns)
				return
			}
			runTool(t, env, helm, "upgrade", "db", chart, "--namespace", ns, "--set-string", "version="+version)
		},
		marked: func(s *appsv1.StatefulSet) error {
			if got := s.Annotations["meta.helm.sh/release-name"]; got != "db" {
				return fmt.Errorf("annotation meta.helm.sh/release-name %q, want db", got)
			}
			return nil
		},
	}}
}

// TestApply creates a StatefulSet and changes its pod template as users do
// (kubectl apply client side and server side, kubectl apply -k, helm install
// and upgrade), and checks that stsroller rolls it out: every pod replaced
// once at the new update revision and Ready, never more than max-unavailable
// unavailable, and the status Complete at that revision.
func TestApply(t *testing.T) {
	t.Parallel()
	for _, tc := range userApplies() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			client := framework.Client(t)
			ns := framework.Namespace(ctx, t, client)
			dir := t.TempDir()
			r := &rollout{t: t, ctx: ctx, client: client, ns: ns, sts: &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}}}
			// stsroller runs already, as it does where users apply.
			r.controller = framework.StartController(t, client, framework.ControllerOptions{Binary: binary(t), Namespace: ns})

			tc.apply(t, ns, dir, "1")
			r.sts = r.current()
			if err := tc.marked(r.sts); err != nil {
				t.Fatalf("after creating: %v", err)
			}
			r.watch = framework.WatchPods(ctx, t, client, r.sts, leaderSelector)
			r.waitAllReady(appliedReplicas)
			r.watch.ResetPeak() // the pods' first start is no concern of ours
			before := r.current().Status.UpdateRevision

			start := time.Now()
			tc.apply(t, ns, dir, "2")
			rev := r.waitNewRevision(before)
			if err := tc.marked(r.current()); err != nil {
				t.Fatalf("after changing: %v", err)
			}
			r.watch.SetUpdateRevision(rev)
			r.waitRolledOut(rev, appliedReplicas)
			if st := r.status(); st == nil || st.UpdateRevision != rev {
				t.Errorf("status %+v, want update revision %s", st, rev)
			}
			r.checkEachOnceWithin(appliedMaxUnavailable, "during the rollout")
			t.Logf("rolled out %s in %s", rev, time.Since(start).Round(time.Millisecond))
		})
	}
}

// waitNewRevision waits until the StatefulSet controller has observed the
// latest generation and computed an update revision other than before, and
// returns it.
func (r *rollout) waitNewRevision(before string) string {
	r.t.Helper()
	var rev string
	err := framework.Eventually(r.ctx, 30*time.Second, 100*time.Millisecond, func(context.Context) error {
		s := r.current()
		if s.Status.ObservedGeneration < s.Generation || s.Status.UpdateRevision == before {
			return fmt.Errorf("update revision still %s (observed generation %d of %d)", s.Status.UpdateRevision, s.Status.ObservedGeneration, s.Generation)
		}
		rev = s.Status.UpdateRevision
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return rev
}
