// Package kwok holds the pod stages that kwok plays on the local e2e cluster.
//
// kwok's default stages set every readiness-gate condition to True by
// themselves, which would hide the very thing stsroller's gates are about. These
// stages act like a kubelet instead:
//
//   - pod-running: a pod bound to a kwok node gets an IP and runs at once;
//     its containers are not ready yet.
//   - pod-containers-ready: after the ready delay, ContainersReady is True.
//   - pod-ready / pod-unready: Ready is True exactly when ContainersReady is True
//     and every condition named in spec.readinessGates is present and True.
//     Gate conditions are never written by kwok: tests and controllers set them
//     through pods/status.
//   - pod-terminating: a pod being deleted stops being ready at once.
//   - pod-delete: after the delete delay the pod is removed, once its
//     finalizers are gone.
//
// The selectors of the stages exclude each other, so kwok never picks one at
// random. Pod IPs come from the node's spec.podCIDR through kwok's allocator,
// which hands out the CIDR's first address too (10.244.0.0 is a valid pod IP
// here) and reuses the IPs of removed pods.
package kwok

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"time"

	"sigs.k8s.io/yaml"
)

// Annotations that override the delays for one pod, as Go durations ("3s").
const (
	ReadyDelayAnnotation  = "e2e.stsroller.io/ready-delay"
	DeleteDelayAnnotation = "e2e.stsroller.io/delete-delay"
)

// NodeAnnotation marks the nodes kwok manages; kwok runs with
// --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake.
const (
	NodeAnnotation      = "kwok.x-k8s.io/node"
	NodeAnnotationValue = "fake"
)

//go:embed *.yaml
var files embed.FS

// StageOptions are the delays of the pod lifecycle. Zero means no delay.
type StageOptions struct {
	// ReadyDelay is the time from a pod running (with an IP) to its
	// containers being ready.
	ReadyDelay time.Duration
	// DeleteDelay is the time from a pod's deletion (once not ready and
	// without finalizers) to its removal.
	DeleteDelay time.Duration
}

// delayed names the stages whose delay the options set.
var delayed = map[string]func(StageOptions) time.Duration{
	"pod-containers-ready": func(o StageOptions) time.Duration { return o.ReadyDelay },
	"pod-delete":           func(o StageOptions) time.Duration { return o.DeleteDelay },
}

// Stages returns the pod stages as one multi-document YAML stream, ready to be
// passed to kwok with --config.
func Stages(opts StageOptions) ([]byte, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out bytes.Buffer
	seen := map[string]bool{}
	for _, name := range names {
		raw, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		var stage map[string]any
		if err := yaml.Unmarshal(raw, &stage); err != nil {
			return nil, fmt.Errorf("parsing %s: %w", name, err)
		}
		if stage["kind"] != "Stage" {
			return nil, fmt.Errorf("%s: kind is %v, want Stage", name, stage["kind"])
		}
		meta, _ := stage["metadata"].(map[string]any)
		stageName, _ := meta["name"].(string)
		if stageName == "" {
			return nil, fmt.Errorf("%s: stage has no name", name)
		}
		seen[stageName] = true
		if delay, ok := delayed[stageName]; ok {
			spec, _ := stage["spec"].(map[string]any)
			d, _ := spec["delay"].(map[string]any)
			if d == nil {
				return nil, fmt.Errorf("%s: stage %s has no spec.delay", name, stageName)
			}
			d["durationMilliseconds"] = delay(opts).Milliseconds()
		}
		doc, err := yaml.Marshal(stage)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(doc)
	}
	for name := range delayed {
		if !seen[name] {
			return nil, fmt.Errorf("stage %s is missing", name)
		}
	}
	return out.Bytes(), nil
}
