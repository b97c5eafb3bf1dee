package kwok

import (
	"bytes"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestStagesSetDelays(t *testing.T) {
	out, err := Stages(StageOptions{ReadyDelay: 1500 * time.Millisecond, DeleteDelay: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	delays := map[string]any{}
	names := map[string]bool{}
	for _, doc := range bytes.Split(out, []byte("---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var stage struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				ResourceRef struct{ APIGroup, Kind string }
				Selector    *struct {
					MatchExpressions []any `json:"matchExpressions"`
				}
				Delay *struct {
					DurationMilliseconds any `json:"durationMilliseconds"`
				}
			}
		}
		if err := yaml.Unmarshal(doc, &stage); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		name := stage.Metadata.Name
		if names[name] {
			t.Errorf("stage %s twice", name)
		}
		names[name] = true
		if stage.Kind != "Stage" || stage.Spec.ResourceRef.Kind != "Pod" || stage.Spec.ResourceRef.APIGroup != "v1" {
			t.Errorf("stage %s: kind %s for %s/%s, want a Stage for v1 Pods", name, stage.Kind, stage.Spec.ResourceRef.APIGroup, stage.Spec.ResourceRef.Kind)
		}
		// A stage without selector would match every pod, all the time.
		if stage.Spec.Selector == nil || len(stage.Spec.Selector.MatchExpressions) == 0 {
			t.Errorf("stage %s has no selector", name)
		}
		if stage.Spec.Delay != nil {
			delays[name] = stage.Spec.Delay.DurationMilliseconds
		}
	}
	want := map[string]any{"pod-containers-ready": float64(1500), "pod-delete": float64(2000)}
	for name, d := range want {
		if delays[name] != d {
			t.Errorf("stage %s: durationMilliseconds %v, want %v", name, delays[name], d)
		}
	}
	for _, name := range []string{"pod-running", "pod-containers-ready", "pod-ready", "pod-unready", "pod-terminating", "pod-delete"} {
		if !names[name] {
			t.Errorf("stage %s missing", name)
		}
	}
}
