// Package faultproxy is a fault-injecting reverse proxy for the Kubernetes
// API: it sits on loopback between a client (the stsroller process under
// test) and the kube-apiserver, and answers a chosen share of the requests
// with a fault instead of the apiserver's answer: 429 Too Many Requests,
// 500, 503, 409 Conflict, a slow answer, a watch stream cut short, or a write
// that reaches the apiserver but whose answer is lost.
//
// The proxy terminates TLS with a self-signed certificate of its own (the
// kubeconfig it writes trusts only that one) and talks to the apiserver with
// the identity of the rest.Config it is given, so the client needs no
// credentials of its own.
package faultproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kind is a kind of fault.
type Kind string

// The faults the proxy injects.
const (
	// TooManyRequests answers 429 with Retry-After: 1, as the apiserver's
	// priority and fairness does; client-go waits and retries by itself.
	TooManyRequests Kind = "429"
	// InternalError answers 500 without Retry-After: the client sees the error.
	InternalError Kind = "500"
	// Unavailable answers 503 without Retry-After.
	Unavailable Kind = "503"
	// Conflict answers 409 Conflict to a write (POST, PUT, PATCH, DELETE) without
	// forwarding it.
	Conflict Kind = "409"
	// Slow forwards the request after a delay between SlowMin and SlowMax.
	Slow Kind = "slow"
	// CutWatch forwards a watch and cuts its stream (the connection's stream
	// is reset) after up to CutAfterMax.
	CutWatch Kind = "cut-watch"
	// LostResponse forwards a write, so that it takes effect, and answers 500
	// as if the answer had been lost on the way: the client must find out
	// what happened from the cluster.
	LostResponse Kind = "lost-response"
)

// AllKinds are every kind of fault, in the order the table prints them.
var AllKinds = []Kind{TooManyRequests, InternalError, Unavailable, Conflict, Slow, CutWatch, LostResponse}

// Options configure Start.
type Options struct {
	// Upstream is the apiserver and the identity the proxy uses there.
	Upstream *rest.Config
	// Rate is the share of requests, from 0 to 1, that get a fault.
	Rate float64
	// Kinds are the faults to choose from, uniformly among those that apply
	// to a request (Conflict and LostResponse only to writes, CutWatch only
	// to watches). Default AllKinds.
	Kinds []Kind
	// Seed seeds the choice; 0 picks one at random.
	Seed uint64
	// SlowMin and SlowMax bound a slow answer's delay; default 200ms and 2s.
	SlowMin, SlowMax time.Duration
	// CutAfterMax bounds how long a cut watch runs; default 5s.
	CutAfterMax time.Duration
}

// Proxy is a running fault proxy.
type Proxy struct {
	opts     Options
	ln       net.Listener
	srv      *http.Server
	rp       *httputil.ReverseProxy
	certPEM  []byte
	upstream *url.URL

	mu       sync.Mutex
	rate     float64
	rnd      *mrand.Rand
	requests int
	faults   map[Kind]int
}

// Start listens on a free port of 127.0.0.1 and serves until Close.
func Start(opts Options) (*Proxy, error) {
	if opts.Upstream == nil {
		return nil, fmt.Errorf("faultproxy: no upstream")
	}
	if len(opts.Kinds) == 0 {
		opts.Kinds = AllKinds
	}
	if opts.SlowMin == 0 {
		opts.SlowMin = 200 * time.Millisecond
	}
	if opts.SlowMax < opts.SlowMin {
		opts.SlowMax = max(opts.SlowMin, 2*time.Second)
	}
	if opts.CutAfterMax == 0 {
		opts.CutAfterMax = 5 * time.Second
	}
	seed := opts.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	host := opts.Upstream.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	up, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", opts.Upstream.Host, err)
	}
	transport, err := rest.TransportFor(opts.Upstream)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream transport: %w", err)
	}
	cert, certPEM, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		opts: opts, ln: ln, certPEM: certPEM, upstream: up,
		rate: opts.Rate, rnd: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		faults: map[Kind]int{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(up)
			r.Out.Host = up.Host
			r.Out.Header.Del("Authorization")
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			writeStatus(w, http.StatusBadGateway, metav1.StatusReasonServiceUnavailable, "faultproxy: upstream: "+err.Error())
		},
	}
	p.srv = &http.Server{
		Handler:   p,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
		ErrorLog:  nil,
	}
	go func() { _ = p.srv.ServeTLS(ln, "", "") }()
	return p, nil
}

// URL is the proxy's address, https://127.0.0.1:PORT.
func (p *Proxy) URL() string { return "https://" + p.ln.Addr().String() }

// CAData is the PEM certificate the proxy serves with.
func (p *Proxy) CAData() []byte { return p.certPEM }

// RestConfig is a client config for the proxy (no credentials: the proxy
// adds the upstream identity).
func (p *Proxy) RestConfig() *rest.Config {
	return &rest.Config{Host: p.URL(), TLSClientConfig: rest.TLSClientConfig{CAData: p.certPEM}}
}

// WriteKubeconfig writes a kubeconfig for the proxy to path.
func (p *Proxy) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["faultproxy"] = &clientcmdapi.Cluster{Server: p.URL(), CertificateAuthorityData: p.certPEM}
	cfg.AuthInfos["faultproxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["faultproxy"] = &clientcmdapi.Context{Cluster: "faultproxy", AuthInfo: "faultproxy"}
	cfg.CurrentContext = "faultproxy"
	return clientcmd.WriteToFile(*cfg, path)
}

// SetRate changes the share of requests that get a fault; 0 clears the
// faults.
func (p *Proxy) SetRate(rate float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = rate
}

// Requests is how many requests the proxy received.
func (p *Proxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Faults is how many faults of each kind were injected.
func (p *Proxy) Faults() map[Kind]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[Kind]int, len(p.faults))
	for k, v := range p.faults {
		out[k] = v
	}
	return out
}

// String summarises the faults injected, for logs.
func (p *Proxy) String() string {
	f := p.Faults()
	var parts []string
	for _, k := range AllKinds {
		if f[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, f[k]))
		}
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d requests, faults: %s", p.Requests(), strings.Join(parts, " "))
}

// Close stops serving and cuts every open connection.
func (p *Proxy) Close() error { return p.srv.Close() }

func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

func isWatch(r *http.Request) bool {
	v := r.URL.Query().Get("watch")
	return r.Method == http.MethodGet && (v == "true" || v == "1")
}

// applies says whether fault k can be given to r.
func applies(k Kind, r *http.Request) bool {
	switch k {
	case Conflict, LostResponse:
		return isWrite(r)
	case CutWatch:
		return isWatch(r)
	case Slow, TooManyRequests, InternalError, Unavailable:
		// A slow or refused watch is a watch that does not start.
		return true
	}
	return false
}

// choose decides r's fault, or "" for none, and counts it.
func (p *Proxy) choose(r *http.Request) (Kind, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	if p.rate <= 0 || p.rnd.Float64() >= p.rate {
		return "", 0
	}
	var ok []Kind
	for _, k := range p.opts.Kinds {
		if applies(k, r) {
			ok = append(ok, k)
		}
	}
	if len(ok) == 0 {
		return "", 0
	}
	k := ok[p.rnd.IntN(len(ok))]
	p.faults[k]++
	var d time.Duration
	switch k {
	case Slow:
		d = p.opts.SlowMin + time.Duration(p.rnd.Int64N(int64(p.opts.SlowMax-p.opts.SlowMin)+1))
	case CutWatch:
		d = time.Duration(p.rnd.Int64N(int64(p.opts.CutAfterMax))) + 100*time.Millisecond
	}
	return k, d
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k, d := p.choose(r)
	switch k {
	case "":
		p.rp.ServeHTTP(w, r)
	case TooManyRequests:
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "faultproxy: too many requests, please try again later")
	case InternalError:
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "faultproxy: internal error")
	case Unavailable:
		writeStatus(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "faultproxy: service unavailable")
	case Conflict:
		writeStatus(w, http.StatusConflict, metav1.StatusReasonConflict, "faultproxy: the object has been modified; please apply your changes to the latest version and try again")
	case Slow:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(d):
		}
		p.rp.ServeHTTP(w, r)
	case CutWatch:
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		p.rp.ServeHTTP(w, r.WithContext(ctx))
		// The stream ended by the timeout: reset it rather than end it
		// cleanly, as a broken connection would.
		if ctx.Err() != nil && r.Context().Err() == nil {
			panic(http.ErrAbortHandler)
		}
	case LostResponse:
		rec := &discard{header: http.Header{}}
		p.rp.ServeHTTP(rec, r)
		writeStatus(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "faultproxy: the answer was lost")
	}
}

// discard is a ResponseWriter that forgets what is written to it.
type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg,
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}

// selfSigned makes a P-256 certificate for 127.0.0.1, valid for a day.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "stsroller-e2e-faultproxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, err
}
