package faultproxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// upstream is a stand-in apiserver: /watch streams a line every 50ms until
// the client goes away, everything else answers "ok"; hits counts requests.
func upstream(t *testing.T) (*rest.Config, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "the client's credentials reached the apiserver", http.StatusBadRequest)
			return
		}
		if r.URL.Query().Get("watch") == "true" {
			w.WriteHeader(http.StatusOK)
			for {
				if _, err := io.WriteString(w, "event\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}, &hits
}

// client is an HTTP client that trusts the proxy through the kubeconfig it
// writes, as the controller would.
func client(t *testing.T, p *Proxy) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := p.WriteKubeconfig(path); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BearerToken = "client-token" // must not be passed on
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func start(t *testing.T, opts Options) *Proxy {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func do(t *testing.T, c *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestPassesThroughWithoutFaults(t *testing.T) {
	up, hits := upstream(t)
	p := start(t, Options{Upstream: up})
	c := client(t, p)
	for range 20 {
		if code, body := do(t, c, http.MethodGet, p.URL()+"/api/v1/pods"); code != 200 || body != "ok" {
			t.Fatalf("got %d %q, want 200 ok", code, body)
		}
	}
	if hits.Load() != 20 || p.Requests() != 20 || len(p.Faults()) != 0 {
		t.Errorf("hits %d, requests %d, faults %v; want 20, 20, none", hits.Load(), p.Requests(), p.Faults())
	}
}

func TestEveryRequestGetsTheFault(t *testing.T) {
	for _, tc := range []struct {
		kind     Kind
		method   string
		wantCode int
		// forwarded: the apiserver saw the request.
		forwarded bool
	}{
		{TooManyRequests, http.MethodGet, 429, false},
		{InternalError, http.MethodGet, 500, false},
		{Unavailable, http.MethodDelete, 503, false},
		{Conflict, http.MethodPatch, 409, false},
		{LostResponse, http.MethodDelete, 500, true},
		{Slow, http.MethodGet, 200, true},
	} {
		t.Run(string(tc.kind), func(t *testing.T) {
			up, hits := upstream(t)
			p := start(t, Options{Upstream: up, Rate: 1, Kinds: []Kind{tc.kind}, SlowMin: 300 * time.Millisecond, SlowMax: 300 * time.Millisecond})
			c := client(t, p)
			began := time.Now()
			code, body := do(t, c, tc.method, p.URL()+"/api/v1/namespaces/x/pods/y")
			if code != tc.wantCode {
				t.Errorf("code %d (%s), want %d", code, body, tc.wantCode)
			}
			if code != 200 && !strings.Contains(body, `"kind":"Status"`) {
				t.Errorf("body %q is not a metav1.Status", body)
			}
			if got := hits.Load() == 1; got != tc.forwarded {
				t.Errorf("forwarded = %v, want %v", got, tc.forwarded)
			}
			if tc.kind == Slow && time.Since(began) < 300*time.Millisecond {
				t.Errorf("a slow answer came after %s", time.Since(began))
			}
			if p.Faults()[tc.kind] != 1 {
				t.Errorf("faults %v, want one %s", p.Faults(), tc.kind)
			}
		})
	}
}

// TestWriteFaultsSpareReads: Conflict and LostResponse apply to writes only;
// a read passes.
func TestWriteFaultsSpareReads(t *testing.T) {
	up, _ := upstream(t)
	p := start(t, Options{Upstream: up, Rate: 1, Kinds: []Kind{Conflict, LostResponse}})
	c := client(t, p)
	if code, _ := do(t, c, http.MethodGet, p.URL()+"/api/v1/pods"); code != 200 {
		t.Errorf("GET got %d, want 200", code)
	}
	if len(p.Faults()) != 0 {
		t.Errorf("faults %v on a read", p.Faults())
	}
}

func TestCutWatch(t *testing.T) {
	up, _ := upstream(t)
	p := start(t, Options{Upstream: up, Rate: 1, Kinds: []Kind{CutWatch}, CutAfterMax: 500 * time.Millisecond})
	c := client(t, p)
	resp, err := c.Get(p.URL() + "/api/v1/pods?watch=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	began := time.Now()
	lines := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines++
	}
	if time.Since(began) > 5*time.Second {
		t.Errorf("the watch ran %s, want it cut within ~600ms", time.Since(began))
	}
	if sc.Err() == nil {
		t.Errorf("the watch ended cleanly after %d events, want it reset", lines)
	}
	if p.Faults()[CutWatch] != 1 {
		t.Errorf("faults %v, want one cut-watch", p.Faults())
	}
}

func TestRateIsAShare(t *testing.T) {
	up, _ := upstream(t)
	p := start(t, Options{Upstream: up, Rate: 0.2, Kinds: []Kind{InternalError}, Seed: 7})
	c := client(t, p)
	failed := 0
	for range 400 {
		if code, _ := do(t, c, http.MethodGet, p.URL()+"/api"); code != 200 {
			failed++
		}
	}
	if failed < 50 || failed > 110 {
		t.Errorf("%d of 400 requests failed at rate 0.2", failed)
	}
	p.SetRate(0)
	if code, _ := do(t, c, http.MethodGet, p.URL()+"/api"); code != 200 {
		t.Errorf("got %d with rate 0", code)
	}
}
