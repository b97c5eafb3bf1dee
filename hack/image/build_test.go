package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func writeBinary(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "stsroller")
	if err := os.WriteFile(p, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func options(bin string) Options {
	return Options{Binary: bin, User: "65532:65532", Name: "stsroller:test", OS: "linux", Arch: "amd64", Created: time.Unix(0, 0).UTC()}
}

// The same binary gives the same digest and the same tarball, whatever the
// file's own timestamps and permissions; another binary another digest.
func TestReproducible(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	binA := writeBinary(t, a, "#!binary v1")
	binB := writeBinary(t, b, "#!binary v1")
	if err := os.Chtimes(binB, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(binB, 0o755); err != nil {
		t.Fatal(err)
	}
	dA, err := WriteFile(filepath.Join(a, "out.tar"), options(binA))
	if err != nil {
		t.Fatal(err)
	}
	dB, err := WriteFile(filepath.Join(b, "out.tar"), options(binB))
	if err != nil {
		t.Fatal(err)
	}
	if dA != dB {
		t.Errorf("same binary, digests %s and %s", dA, dB)
	}
	tarA, _ := os.ReadFile(filepath.Join(a, "out.tar"))
	tarB, _ := os.ReadFile(filepath.Join(b, "out.tar"))
	if !bytes.Equal(tarA, tarB) {
		t.Error("same binary, different tarballs")
	}

	c := t.TempDir()
	dC, err := WriteFile(filepath.Join(c, "out.tar"), options(writeBinary(t, c, "#!binary v2")))
	if err != nil {
		t.Fatal(err)
	}
	if dC == dA {
		t.Errorf("different binaries, same digest %s", dC)
	}
}

// The tarball is an OCI layout that names the image, and the image is one
// layer holding the binary, run as the user, with the binary as entrypoint.
func TestImage(t *testing.T) {
	dir := t.TempDir()
	bin := writeBinary(t, dir, "#!binary")
	out := filepath.Join(dir, "out.tar")
	digest, err := WriteFile(out, options(bin))
	if err != nil {
		t.Fatal(err)
	}
	layoutDir := filepath.Join(dir, "layout")
	untar(t, out, layoutDir)

	var index v1.IndexManifest
	data, err := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	m := index.Manifests[0]
	if m.Digest.String() != digest {
		t.Errorf("index names %s, WriteFile returned %s", m.Digest, digest)
	}
	if diff := cmp.Diff(map[string]string{
		"io.containerd.image.name":          "docker.io/library/stsroller:test",
		"org.opencontainers.image.ref.name": "test",
	}, m.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}

	p, err := layout.FromPath(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := p.Image(m.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(v1.Config{User: "65532:65532", Entrypoint: []string{"/stsroller"}, WorkingDir: "/", Env: []string{"PATH=/"}}, cf.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Equal(time.Unix(0, 0)) {
		t.Errorf("platform %s/%s created %s", cf.OS, cf.Architecture, cf.Created)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	content, _ := io.ReadAll(tr)
	if h.Name != "stsroller" || h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || string(content) != "#!binary" {
		t.Errorf("layer holds %s mode %o uid %d gid %d content %q", h.Name, h.Mode, h.Uid, h.Gid, content)
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("layer holds more than the binary (%v)", err)
	}
}

func TestFullName(t *testing.T) {
	for in, want := range map[string]string{
		"stsroller:e2e":                 "docker.io/library/stsroller:e2e",
		"stsroller":                     "docker.io/library/stsroller:latest",
		"me/stsroller:v1":               "docker.io/me/stsroller:v1",
		"localhost:5000/stsroller:v1":   "localhost:5000/stsroller:v1",
		"ghcr.io/stsroller/stsroller:1": "ghcr.io/stsroller/stsroller:1",
	} {
		got, err := fullName(in)
		if err != nil || got != want {
			t.Errorf("fullName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "stsroller@sha256:00", "stsroller:"} {
		if _, err := fullName(bad); err == nil {
			t.Errorf("fullName(%q) did not fail", bad)
		}
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
