package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Options describe a one-binary image.
type Options struct {
	// Binary is the path of the static binary on this machine.
	Binary string
	// Entrypoint is its absolute path in the image; default /<base name>.
	Entrypoint string
	// User is "uid:gid" (numbers, as there is no /etc/passwd).
	User string
	// Name is the image reference recorded in the tarball ("name:tag").
	Name string
	// OS and Arch are the platform of the binary.
	OS, Arch string
	// Created is every timestamp of the image.
	Created time.Time
}

func (o *Options) complete() error {
	if o.Entrypoint == "" {
		o.Entrypoint = "/" + filepath.Base(o.Binary)
	}
	if !path.IsAbs(o.Entrypoint) {
		return fmt.Errorf("entrypoint %q is not an absolute path", o.Entrypoint)
	}
	if o.User == "" {
		return errors.New("no user")
	}
	if o.OS == "" || o.Arch == "" {
		return errors.New("no OS or architecture")
	}
	if _, err := fullName(o.Name); err != nil {
		return err
	}
	return nil
}

// Build makes the image: no base, one layer holding the binary (mode 0755,
// owned by root, so the user the container runs as cannot change it), a
// config with the user and the entrypoint, and OCI media types throughout.
func Build(o Options) (v1.Image, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := layerTar(strings.TrimPrefix(o.Entrypoint, "/"), bin, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "hack/image: " + o.Entrypoint,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = o.OS, o.Arch
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		User:       o.User,
		Entrypoint: []string{o.Entrypoint},
		WorkingDir: "/",
		Env:        []string{"PATH=/"},
	}
	return mutate.ConfigFile(img, cf)
}

// layerTar is an uncompressed tar of one file at name; its only timestamp is
// created, its owner root, and no user or group names are recorded.
func layerTar(name string, content []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     0o755,
		Size:     int64(len(content)),
		ModTime:  created,
		Format:   tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// fullName turns a reference as Kubernetes writes it (stsroller:dev) into the
// full name containerd records (docker.io/library/stsroller:dev). It wants a
// tag: a digest cannot name an image before it is built.
func fullName(ref string) (string, error) {
	if ref == "" || strings.Contains(ref, "@") {
		return "", fmt.Errorf("image name %q: want name:tag", ref)
	}
	repo, tag := ref, "latest"
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		repo, tag = ref[:i], ref[i+1:]
	}
	if repo == "" || tag == "" {
		return "", fmt.Errorf("image name %q: want name:tag", ref)
	}
	first, _, hasSlash := strings.Cut(repo, "/")
	switch {
	case !hasSlash:
		repo = "docker.io/library/" + repo
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		repo = "docker.io/" + repo
	}
	return repo + ":" + tag, nil
}

// WriteTar writes img as an OCI image layout in a tar stream: oci-layout,
// index.json naming the image, and the blobs. Entries are in a fixed order
// with fixed metadata, so equal images give equal tarballs.
func WriteTar(w io.Writer, img v1.Image, name string, mtime time.Time) error {
	full, err := fullName(name)
	if err != nil {
		return err
	}
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configDigest, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mediaType,
			Digest:    digest,
			Size:      int64(len(manifest)),
			Annotations: map[string]string{
				// containerd (ctr images import) names the image by this one.
				"io.containerd.image.name": full,
				// The OCI annotation: by convention the tag alone.
				"org.opencontainers.image.ref.name": full[strings.LastIndexByte(full, ':')+1:],
			},
		}},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	file := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		if err == nil && n != size {
			err = fmt.Errorf("%s: wrote %d bytes, want %d", name, n, size)
		}
		return err
	}
	blob := func(d v1.Hash) string { return "blobs/" + d.Algorithm + "/" + d.Hex }

	if err := file("oci-layout", int64(len(`{"imageLayoutVersion":"1.0.0"}`)), strings.NewReader(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := file("index.json", int64(len(index)), bytes.NewReader(index)); err != nil {
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	if err := file(blob(digest), int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
		return err
	}
	if err := file(blob(configDigest), int64(len(config)), bytes.NewReader(config)); err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = file(blob(d), size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile builds the image of o into the OCI tarball out (written to a
// temporary file, then renamed) and returns the image's manifest digest.
func WriteFile(out string, o Options) (string, error) {
	img, err := Build(o)
	if err != nil {
		return "", err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".image-*.tar")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if err := WriteTar(f, img, o.Name, o.Created); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return "", err
	}
	return digest.String(), nil
}
