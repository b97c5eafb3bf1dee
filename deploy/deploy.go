// Package deploy holds stsroller's kustomize base (the YAML beside this file,
// installed with `kubectl apply -k deploy/`) and renders it from Go, so tests
// can apply exactly what cluster admins apply: the RBAC, the Deployment, the
// restricted namespace. The YAML is embedded, so this works from any working
// directory.
package deploy

import (
	"bufio"
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
	"sigs.k8s.io/yaml"
)

//go:embed kustomization.yaml base/*.yaml overlays/servicemonitor/*.yaml overlays/rollout-lock/*.yaml coordination/*.yaml
var files embed.FS

// The names and image of the base, as the YAML sets them.
const (
	Namespace      = "stsroller-system"
	ServiceAccount = "stsroller"
	Image          = "stsroller:latest"
	// ImageName is the name kustomize's images: matches.
	ImageName = "stsroller"
	// LockKubeconfigSecret is the Secret, created by the user, that
	// overlays/rollout-lock mounts: key "kubeconfig", the coordination
	// cluster's kubeconfig.
	LockKubeconfigSecret = "stsroller-lock-kubeconfig"
	// LockConfig is overlays/rollout-lock's ConfigMap (cluster-name,
	// lock-namespace, lock-ttl).
	LockConfig = "stsroller-lock"
	// LockNamespace and LockServiceAccount are coordination/'s namespace and
	// ServiceAccount.
	LockNamespace      = "stsroller-locks"
	LockServiceAccount = "stsroller-lock"
	// AdmissionPolicy names the ValidatingAdmissionPolicy (and its binding)
	// that confines the ServiceAccount's writes (base/admission-policy.yaml).
	AdmissionPolicy = "stsroller-own-fields"
)

// ServiceAccountUsername is the name the API server gives a ServiceAccount's
// requests: what the admission policy's matchCondition compares with.
func ServiceAccountUsername(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// admissionPolicyMatch is the admission policy's matchCondition for the
// ServiceAccount name in namespace.
func admissionPolicyMatch(namespace string) string {
	return "request.userInfo.username == '" + ServiceAccountUsername(namespace, ServiceAccount) + "'"
}

// Options change what is rendered, the way a kustomize overlay would.
type Options struct {
	// Image replaces stsroller:latest in the Deployment (kustomize images:);
	// "name:tag" or "name@digest". Empty: keep.
	Image string
	// Namespace replaces stsroller-system everywhere: the Namespace, the
	// namespaced objects and the bindings' subjects (kustomize namespace:),
	// and the ServiceAccount the admission policy matches (a patch:
	// kustomize does not look into CEL). Empty: keep.
	Namespace string
	// ServiceMonitor adds overlays/servicemonitor's ServiceMonitor; its CRD
	// (monitoring.coreos.com/v1) must be installed to apply it.
	ServiceMonitor bool
	// RolloutLock renders overlays/rollout-lock instead of the base: the
	// coordination cluster's kubeconfig mounted from the Secret
	// LockKubeconfigSecret, and the lock flags from the ConfigMap LockConfig.
	// It excludes ServiceMonitor.
	RolloutLock bool
	// Args are appended to the controller container's arguments (a JSON
	// patch of the overlay): a site's settings, such as --dns-servers.
	Args []string
}

// Build renders the base as `kustomize build deploy/` does: YAML documents
// separated by "---".
func Build() ([]byte, error) { return BuildWith(Options{}) }

// Objects renders the base into typed API objects (*corev1.Namespace,
// *rbacv1.ClusterRole, *appsv1.Deployment, ...), in kustomize's order:
// namespaces first, then RBAC, then the rest.
func Objects() ([]runtime.Object, error) { return ObjectsWith(Options{}) }

// embedded is the embedded YAML in an in-memory file system, under
// /stsroller/deploy.
func embedded() (filesys.FileSystem, error) {
	mem := filesys.MakeFsInMemory()
	const root = "/stsroller/deploy"
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(path.Join(root, p), b)
	})
	return mem, err
}

// Coordination renders coordination/, what the coordination cluster of
// rollout locks needs (the locks' namespace, the Role, a ServiceAccount bound
// to it), as `kustomize build deploy/coordination` does; namespace, when not
// empty, replaces stsroller-locks. The objects come back typed.
func Coordination(namespace string) ([]runtime.Object, error) {
	mem, err := embedded()
	if err != nil {
		return nil, err
	}
	var overlay *types.Kustomization
	if namespace != "" {
		overlay = &types.Kustomization{
			TypeMeta:  types.TypeMeta{APIVersion: types.KustomizationVersion, Kind: types.KustomizationKind},
			Resources: []string{"../deploy/coordination"},
			Namespace: namespace,
		}
	}
	b, err := build(mem, "deploy/coordination", overlay)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// BuildWith renders the base, or one of its overlays, changed by opts.
func BuildWith(opts Options) ([]byte, error) {
	mem, err := embedded()
	if err != nil {
		return nil, err
	}
	base := "deploy"
	switch {
	case opts.ServiceMonitor && opts.RolloutLock:
		return nil, errors.New("deploy: ServiceMonitor and RolloutLock are two overlays; write one of your own for both")
	case opts.ServiceMonitor:
		base = "deploy/overlays/servicemonitor"
	case opts.RolloutLock:
		base = "deploy/overlays/rollout-lock"
	}
	if opts.Image != "" || opts.Namespace != "" || len(opts.Args) > 0 {
		// An overlay of our own, as a user would write it.
		k := types.Kustomization{
			TypeMeta:  types.TypeMeta{APIVersion: types.KustomizationVersion, Kind: types.KustomizationKind},
			Resources: []string{path.Join("..", base)},
			Namespace: opts.Namespace,
		}
		if opts.Image != "" {
			img := types.Image{Name: ImageName}
			name, digest, hasDigest := strings.Cut(opts.Image, "@")
			if hasDigest {
				img.NewName, img.Digest = name, digest
			} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
				img.NewName, img.NewTag = name[:i], name[i+1:]
			} else {
				img.NewName = name
			}
			k.Images = []types.Image{img}
		}
		if opts.Namespace != "" {
			patch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/matchConditions/0/expression",
				"value": admissionPolicyMatch(opts.Namespace)}})
			if err != nil {
				return nil, err
			}
			k.Patches = append(k.Patches, types.Patch{Patch: string(patch),
				Target: &types.Selector{ResId: resid.ResId{Gvk: resid.Gvk{Group: "admissionregistration.k8s.io", Version: "v1",
					Kind: "ValidatingAdmissionPolicy"}, Name: AdmissionPolicy}}})
		}
		if len(opts.Args) > 0 {
			var ops []map[string]any
			for _, a := range opts.Args {
				ops = append(ops, map[string]any{"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": a})
			}
			patch, err := json.Marshal(ops)
			if err != nil {
				return nil, err
			}
			k.Patches = append(k.Patches, types.Patch{Patch: string(patch),
				Target: &types.Selector{ResId: resid.ResId{Gvk: resid.Gvk{Group: "apps", Version: "v1", Kind: "Deployment"}, Name: "stsroller"}}})
		}
		return build(mem, base, &k)
	}
	return build(mem, base, nil)
}

// build runs kustomize on the embedded directory dir, or, when overlay is
// set, on that kustomization written beside it (its resources name dir as
// "../<dir>"), as a user's overlay would be.
func build(mem filesys.FileSystem, dir string, overlay *types.Kustomization) ([]byte, error) {
	root := path.Join("/stsroller", dir)
	if overlay != nil {
		b, err := yaml.Marshal(overlay)
		if err != nil {
			return nil, err
		}
		root = "/stsroller/overlay"
		if err := mem.WriteFile(path.Join(root, "kustomization.yaml"), b); err != nil {
			return nil, err
		}
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, root)
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", err)
	}
	return res.AsYaml()
}

// ObjectsWith renders like BuildWith and decodes each object strictly (an
// unknown or duplicate field is an error) into its typed API object. Kinds
// client-go does not know (the ServiceMonitor) come back as
// *unstructured.Unstructured.
func ObjectsWith(opts Options) ([]runtime.Object, error) {
	b, err := BuildWith(opts)
	if err != nil {
		return nil, err
	}
	return Decode(b)
}

// strict decodes into the types client-go knows, rejecting unknown fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Decode splits a multi-document YAML stream and decodes each document
// strictly into a typed API object; kinds client-go does not know come back
// as *unstructured.Unstructured.
func Decode(stream []byte) ([]runtime.Object, error) {
	var out []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, gvk, err := strict.Decode(doc, nil, nil)
		if runtime.IsNotRegisteredError(err) {
			u := &unstructured.Unstructured{}
			j, jerr := utilyaml.ToJSON(doc)
			if jerr != nil {
				return nil, jerr
			}
			if jerr := u.UnmarshalJSON(j); jerr != nil {
				return nil, jerr
			}
			out = append(out, u)
			continue
		}
		if err != nil {
			what := "document"
			if gvk != nil {
				what = gvk.String()
			}
			return nil, fmt.Errorf("decoding %s: %w", what, err)
		}
		out = append(out, obj)
	}
}
