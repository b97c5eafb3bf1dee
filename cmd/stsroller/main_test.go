package main

import (
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/stsroller/stsroller/metrics"
)

func TestDefaults(t *testing.T) {
	fs := flag.NewFlagSet("stsroller", flag.ContinueOnError)
	o := bindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if !o.leaderElect {
		t.Error("leader election is off by default; DESIGN.md wants it on")
	}
	if o.leaseDuration != 15*time.Second || o.renewDeadline >= o.leaseDuration || o.retryPeriod >= o.renewDeadline {
		t.Errorf("lease timings %s/%s/%s are not ordered lease > renew > retry", o.leaseDuration, o.renewDeadline, o.retryPeriod)
	}
	if o.workers < 1 {
		t.Errorf("workers = %d", o.workers)
	}
}

func TestLeaseNamespace(t *testing.T) {
	for _, tc := range []struct {
		flag, pod, scope, want string
	}{
		{"", "", "", "kube-system"},
		{"", "", "team-a", "team-a"},
		{"", "stsroller-system", "team-a", "stsroller-system"},
		{"leases", "stsroller-system", "team-a", "leases"},
	} {
		t.Setenv("POD_NAMESPACE", tc.pod)
		got := leaseNamespace(&options{leaseNamespace: tc.flag, namespace: tc.scope})
		if got != tc.want {
			t.Errorf("leaseNamespace(flag %q, POD_NAMESPACE %q, --namespace %q) = %q, want %q", tc.flag, tc.pod, tc.scope, got, tc.want)
		}
	}
}

func TestLoggingFormat(t *testing.T) {
	if err := setupLogging("text"); err != nil {
		t.Error(err)
	}
	if err := setupLogging("yaml"); err == nil {
		t.Error("an unknown --logging-format was accepted")
	}
}

func TestSplitList(t *testing.T) {
	got := splitList(" 127.0.0.1:53, ,10.0.0.1 ")
	if len(got) != 2 || got[0] != "127.0.0.1:53" || got[1] != "10.0.0.1" {
		t.Errorf("splitList = %q", got)
	}
}

// TestClientAsksNoGzip: stsroller's requests ask for protobuf and never for
// gzip (Go's transport asks for it unless told not to), as the built-in
// controllers' do.
func TestClientAsksNoGzip(t *testing.T) {
	got := make(chan http.Header, 1)
	// TLS, as every API server speaks: over plain HTTP client-go uses Go's
	// default transport, which ignores the setting.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.Header.Clone():
		default:
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}`))
	}))
	defer srv.Close()
	fs := flag.NewFlagSet("stsroller", flag.ContinueOnError)
	o := bindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: srv.URL, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	tune(cfg, o)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("ns").Get(t.Context(), "p", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if enc := h.Get("Accept-Encoding"); strings.Contains(enc, "gzip") {
		t.Errorf("Accept-Encoding = %q: the API server would compress what it sends", enc)
	}
	if accept := h.Get("Accept"); !strings.HasPrefix(accept, "application/vnd.kubernetes.protobuf") {
		t.Errorf("Accept = %q, want protobuf first", accept)
	}
}

// TestProfiling: /debug/pprof/ is served beside /metrics only with
// --profiling.
func TestProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		o := &options{metricsAddr: addr, healthAddr: "0", profiling: on}
		stop, err := serve(t.Context(), o, metrics.New(), new(atomic.Bool))
		if err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]int{"/metrics": http.StatusOK, "/debug/pprof/heap": http.StatusNotFound} {
			if on {
				want = http.StatusOK
			}
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("--profiling=%v: GET %s = %d, want %d", on, path, resp.StatusCode, want)
			}
		}
		stop()
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                int64
		ok                  bool
	}{
		{"v2 limit", "memory.max", "268435456\n", 268435456, true},
		{"v2 no limit", "memory.max", "max\n", 0, false},
		{"v1 limit", "memory/memory.limit_in_bytes", "536870912\n", 536870912, true},
		{"v1 no limit", "memory/memory.limit_in_bytes", "9223372036854771712\n", 0, false},
		{"unreadable", "memory.max", "lots", 0, false},
		{"no cgroup", "", "", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if tc.file != "" {
				p := filepath.Join(root, tc.file)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := cgroupMemoryLimit(root)
			if got != tc.want || ok != tc.ok {
				t.Errorf("cgroupMemoryLimit = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestLimitMemory: 90% of the cgroup's limit, and GOMEMLIMIT wins.
func TestLimitMemory(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory.max"), []byte("1000000000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	t.Setenv("GOMEMLIMIT", "")
	limitMemory(logr.Discard(), root)
	if got := debug.SetMemoryLimit(-1); got != 900000000 {
		t.Errorf("soft memory limit = %d, want 900000000", got)
	}
	debug.SetMemoryLimit(prev)
	t.Setenv("GOMEMLIMIT", "2GiB")
	limitMemory(logr.Discard(), root)
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("with GOMEMLIMIT set, the soft memory limit changed to %d", got)
	}
}
