package bind

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as a fake external-dns: with fakeModeEnv set it
// records its arguments, serves /healthz on --metrics-address ("serve") or
// fails at once ("exit"), instead of running the tests.
const (
	fakeModeEnv = "STSROLLER_BIND_FAKE_EXTERNAL_DNS"
	fakeArgsEnv = "STSROLLER_BIND_FAKE_ARGS"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeModeEnv); mode != "" {
		fakeExternalDNS(mode)
		return
	}
	os.Exit(m.Run())
}

func fakeExternalDNS(mode string) {
	args := os.Args[1:]
	_ = os.WriteFile(os.Getenv(fakeArgsEnv), []byte(strings.Join(args, "\n")), 0o644)
	if mode == "exit" {
		fmt.Fprintln(os.Stderr, "fake external-dns: config validation failed")
		os.Exit(1)
	}
	var addr string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--metrics-address="); ok {
			addr = v
		}
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") })
	fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, nil))
	os.Exit(1)
}

// fakeServers are Servers as StartExternalDNS sees them; no named runs.
func fakeServers(t *testing.T) *Servers {
	return &Servers{
		Zone:    "example.test.",
		Primary: &Server{Name: "primary", Host: "127.0.0.1", Port: 5301, Addr: "127.0.0.1:5301"},
		TSIG:    TSIGKey{Name: "stsroller-e2e.", Secret: "c2VjcmV0", Algorithm: "hmac-sha256"},
		Dir:     t.TempDir(),
	}
}

func fakeBinary(t *testing.T, mode string) (bin, argsFile string) {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	argsFile = filepath.Join(t.TempDir(), "args")
	t.Setenv(fakeModeEnv, mode)
	t.Setenv(fakeArgsEnv, argsFile)
	return bin, argsFile
}

func TestExternalDNSArgs(t *testing.T) {
	s := fakeServers(t)
	rfc2136 := []string{
		"--provider=rfc2136",
		"--rfc2136-host=127.0.0.1",
		"--rfc2136-port=5301",
		"--rfc2136-zone=example.test",
		"--rfc2136-tsig-keyname=stsroller-e2e.",
		"--rfc2136-tsig-secret=c2VjcmV0",
		"--rfc2136-tsig-secret-alg=hmac-sha256",
		"--rfc2136-axfr",
	}
	tests := []struct {
		name string
		opts ExternalDNSOptions
		want []string
	}{
		{
			name: "defaults",
			opts: ExternalDNSOptions{Servers: s, Kubeconfig: "/k/admin.kubeconfig"},
			want: append(append([]string{"--source=service"}, rfc2136...),
				"--policy=sync",
				"--registry=txt",
				"--txt-owner-id=stsroller-e2e",
				"--domain-filter=example.test",
				"--interval=2s",
				"--min-event-sync-interval=1s",
				"--events",
				"--kubeconfig=/k/admin.kubeconfig",
				"--metrics-address=127.0.0.1:7979",
				"--log-level=info",
			),
		},
		{
			name: "everything set",
			opts: ExternalDNSOptions{
				Servers:              s,
				Kubeconfig:           "/k/admin.kubeconfig",
				Sources:              []string{"service", "pod"},
				Interval:             500 * time.Millisecond,
				MinEventSyncInterval: 100 * time.Millisecond,
				AnnotationPrefix:     "e2e.example/",
				Namespace:            "db",
				OwnerID:              "owner-2",
				LogLevel:             "debug",
				ExtraArgs:            []string{"--txt-prefix=x-"},
			},
			want: append(append([]string{"--source=service", "--source=pod"}, rfc2136...),
				"--policy=sync",
				"--registry=txt",
				"--txt-owner-id=owner-2",
				"--domain-filter=example.test",
				"--interval=500ms",
				"--min-event-sync-interval=100ms",
				"--events",
				"--kubeconfig=/k/admin.kubeconfig",
				"--metrics-address=127.0.0.1:7979",
				"--log-level=debug",
				"--annotation-prefix=e2e.example/",
				"--namespace=db",
				"--txt-prefix=x-",
			),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, externalDNSArgs(tc.opts, "127.0.0.1:7979")); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStartExternalDNS(t *testing.T) {
	bin, argsFile := fakeBinary(t, "serve")
	s := fakeServers(t)
	e, err := StartExternalDNS(t.Context(), ExternalDNSOptions{Binary: bin, Kubeconfig: "/k/admin.kubeconfig", Servers: s})
	if err != nil {
		t.Fatal(err)
	}
	pid := e.proc.Pid()

	got, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e.Args, strings.Split(string(got), "\n")); diff != "" {
		t.Errorf("the binary got other arguments than Args (-Args +got):\n%s", diff)
	}
	if !strings.HasPrefix(e.MetricsAddr, "127.0.0.1:") || !strings.Contains(strings.Join(e.Args, " "), "--metrics-address="+e.MetricsAddr) {
		t.Errorf("MetricsAddr %q not passed as --metrics-address", e.MetricsAddr)
	}
	if e.LogPath != filepath.Join(s.Dir, "external-dns.log") {
		t.Errorf("LogPath = %q", e.LogPath)
	}
	if !e.Running() {
		t.Fatal("not running after Start")
	}

	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	if e.Running() {
		t.Error("running after Stop")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("pid %d still exists after Stop", pid)
	}
	if err := e.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartExternalDNSExitsEarly(t *testing.T) {
	bin, _ := fakeBinary(t, "exit")
	_, err := StartExternalDNS(t.Context(), ExternalDNSOptions{Binary: bin, Kubeconfig: "/k", Servers: fakeServers(t), StartTimeout: 10 * time.Second})
	if err == nil {
		t.Fatal("StartExternalDNS succeeded with a binary that exits")
	}
	if !strings.Contains(err.Error(), "config validation failed") {
		t.Errorf("error %q does not include the log", err)
	}
}

func TestStartExternalDNSStopsWithContext(t *testing.T) {
	bin, _ := fakeBinary(t, "serve")
	ctx, cancel := context.WithCancel(t.Context())
	e, err := StartExternalDNS(ctx, ExternalDNSOptions{Binary: bin, Kubeconfig: "/k", Servers: fakeServers(t)})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(10 * time.Second)
	for e.Running() {
		if time.Now().After(deadline) {
			t.Fatal("still running 10s after the context was cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartExternalDNSNeedsOptions(t *testing.T) {
	s := fakeServers(t)
	for _, opts := range []ExternalDNSOptions{
		{Kubeconfig: "/k", Servers: s},
		{Binary: "/bin/true", Servers: s},
		{Binary: "/bin/true", Kubeconfig: "/k"},
	} {
		if _, err := StartExternalDNS(t.Context(), opts); err == nil {
			t.Errorf("StartExternalDNS(%+v) succeeded", opts)
		}
	}
}
