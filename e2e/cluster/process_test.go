package cluster

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// alive reports whether pid runs; a zombie (dead, not yet reaped by whoever
// inherited it) counts as dead.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i >= 0 && !strings.HasPrefix(string(data[i+1:]), " Z") && !strings.HasPrefix(string(data[i+1:]), " X")
}

func startSleep(t *testing.T, dir string) *process {
	t.Helper()
	p, err := startProcess("sleep", "/bin/sleep", []string{"300"}, nil, filepath.Join(dir, "sleep.log"), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(0) })
	return p
}

// TestReapStale: a work directory whose test binary is gone has its recorded
// components killed and is removed; a pid that now belongs to a process not
// started for that directory is left alone, and so is a directory whose test
// binary still runs.
func TestReapStale(t *testing.T) {
	base := t.TempDir()

	stale := filepath.Join(base, workDirPrefix+"stale")
	must(t, os.MkdirAll(filepath.Join(stale, "pids"), 0o755))
	// The owner: a process that has exited.
	gone := exec.Command("/bin/true")
	must(t, gone.Run())
	must(t, os.WriteFile(filepath.Join(stale, "owner.pid"), fmt.Appendf(nil, "%d 1\n", gone.Process.Pid), 0o644))
	// A component of that run: its command line names the directory.
	component, err := startProcess("etcd", "/bin/sh", []string{"-c", "sleep 300", stale}, nil, filepath.Join(base, "etcd.log"), filepath.Join(stale, "pids"))
	must(t, err)
	t.Cleanup(func() { component.stop(0) })
	// A recorded pid now used by something else.
	other := startSleep(t, base)
	must(t, os.WriteFile(filepath.Join(stale, "pids", "kwok.pid"), []byte(strconv.Itoa(other.cmd.Process.Pid)), 0o644))

	// A directory of a test binary that still runs: this one.
	live := filepath.Join(base, workDirPrefix+"live")
	must(t, os.MkdirAll(filepath.Join(live, "pids"), 0o755))
	must(t, writeOwner(live))
	liveComponent, err := startProcess("etcd", "/bin/sh", []string{"-c", "sleep 300", live}, nil, filepath.Join(base, "live.log"), filepath.Join(live, "pids"))
	must(t, err)
	t.Cleanup(func() { liveComponent.stop(0) })

	reaped := reapStale(base)

	if want := fmt.Sprintf("etcd.pid (pid %d)", component.cmd.Process.Pid); !slices.Equal(reaped, []string{want}) {
		t.Errorf("reaped %q, want only %q", reaped, want)
	}
	select {
	case <-component.done:
	case <-time.After(5 * time.Second):
		t.Error("the stale component still runs")
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale work dir not removed: %v", err)
	}
	if exited, _ := other.exited(); exited {
		t.Error("killed a process that was not started for the stale work dir")
	}
	if exited, _ := liveComponent.exited(); exited {
		t.Error("killed a component of a test binary that still runs")
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("work dir of a live test binary removed: %v", err)
	}
}

func TestOwnerAlive(t *testing.T) {
	dir := t.TempDir()
	must(t, writeOwner(dir))
	if !ownerAlive(dir) {
		t.Error("the running test binary is not alive")
	}
	// Same pid, another start time: the pid was reused.
	must(t, os.WriteFile(filepath.Join(dir, "owner.pid"), fmt.Appendf(nil, "%d 1\n", os.Getpid()), 0o644))
	if ownerAlive(dir) {
		t.Error("a reused pid counts as the owner")
	}
}

func TestPKI(t *testing.T) {
	p, err := newPKI(t.TempDir(), serviceIP)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.caCert))

	serving := readCert(t, p.serving)
	for _, name := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc", serviceIP.String()} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("serving certificate for %s: %v", name, err)
		}
	}
	if !slices.ContainsFunc(serving.IPAddresses, func(ip net.IP) bool { return ip.Equal(serviceIP) }) {
		t.Errorf("serving certificate lacks the kubernetes Service IP %s", serviceIP)
	}
	admin := readCert(t, p.clients["admin"][0])
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin certificate: %v", err)
	}
	if !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin certificate groups %q, want system:masters", admin.Subject.Organization)
	}
	if cn := readCert(t, p.clients["kube-controller-manager"][0]).Subject.CommonName; cn != "system:kube-controller-manager" {
		t.Errorf("controller manager user %q", cn)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("no PEM in %s", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	must(t, err)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
