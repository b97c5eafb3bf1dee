//go:build e2e

package e2e

// What the benchmark reads of a process and of stsroller: CPU seconds and
// resident memory from /proc, the Prometheus text of /metrics, and every API
// request through a counting proxy.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/stsroller/stsroller/metrics"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU seconds of pid so far.
func procCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(ut+st) / clockTicks, nil
}

// procRSS returns the resident set size of pid in MiB (VmRSS).
func procRSS(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			kib, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kib / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// processes returns the pids of the processes other than this one whose
// arguments (from /proc/PID/cmdline) match, at most limit of them (0: all).
func processes(limit int, match func(args []string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if match(strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")) {
			out = append(out, pid)
			if len(out) == limit {
				break
			}
		}
	}
	return out
}

// findPID returns the pid of the one process whose command line holds every
// one of parts (NUL-separated arguments joined by spaces), or 0.
func findPID(parts ...string) int {
	pids := processes(1, func(args []string) bool {
		cmd := strings.Join(args, " ")
		for _, p := range parts {
			if !strings.Contains(cmd, p) {
				return false
			}
		}
		return true
	})
	if len(pids) == 0 {
		return 0
	}
	return pids[0]
}

// controllerManagerPID finds the local cluster's kube-controller-manager: its
// kubeconfig lives in the work directory of $KUBECONFIG.
func controllerManagerPID() int {
	dir := filepath.Dir(os.Getenv("KUBECONFIG"))
	return findPID("kube-controller-manager", "--kubeconfig="+filepath.Join(dir, "kube-controller-manager.kubeconfig"))
}

// localClusterPIDs finds the local cluster's processes (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok): those whose
// command line names the work directory of $KUBECONFIG. None on kind.
func localClusterPIDs() []int {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		return nil
	}
	dir := filepath.Dir(kc) + string(filepath.Separator)
	return processes(0, func(args []string) bool {
		switch filepath.Base(args[0]) {
		case "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok":
			return strings.Contains(strings.Join(args, " "), dir)
		}
		return false
	})
}

// sumCPU is the CPU seconds of pids together (those still running).
func sumCPU(pids []int) float64 {
	var s float64
	for _, p := range pids {
		if c, err := procCPU(p); err == nil {
			s += c
		}
	}
	return s
}

// promText is a scrape of a Prometheus text endpoint: every sample by its
// full series name (name{labels}).
type promText map[string]float64

func scrape(ctx context.Context, addr string) (promText, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	out := promText{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// histogram returns the cumulative buckets (upper bound → count) of a
// histogram without labels other than le.
func (p promText) histogram(name string) (bounds []float64, counts []float64) {
	type b struct{ le, n float64 }
	var bs []b
	prefix := name + `_bucket{le="`
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, b{le, v})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	for _, x := range bs {
		bounds = append(bounds, x.le)
		counts = append(counts, x.n)
	}
	return bounds, counts
}

// histDelta subtracts an earlier scrape's buckets from a later one's.
func histDelta(name string, before, after promText) (bounds, counts []float64) {
	bounds, counts = after.histogram(name)
	bb, bc := before.histogram(name)
	for i := range counts {
		if i < len(bb) && bb[i] == bounds[i] {
			counts[i] -= bc[i]
		}
	}
	return bounds, counts
}

// quantile estimates the q-quantile of cumulative histogram buckets the way
// Prometheus' histogram_quantile does (linear within a bucket). It returns
// NaN without observations.
func quantile(q float64, bounds, counts []float64) float64 {
	if len(counts) == 0 || counts[len(counts)-1] == 0 {
		return math.NaN()
	}
	total := counts[len(counts)-1]
	rank := q * total
	prevBound, prevCount := 0.0, 0.0
	for i, c := range counts {
		if c >= rank {
			if math.IsInf(bounds[i], 1) {
				return prevBound
			}
			if c == prevCount {
				return bounds[i]
			}
			return prevBound + (bounds[i]-prevBound)*(rank-prevCount)/(c-prevCount)
		}
		prevBound, prevCount = bounds[i], c
	}
	return bounds[len(bounds)-1]
}

// apiCounter is a plain-HTTP proxy on loopback in front of the API server
// that counts every request by verb and resource; stsroller talks to the
// cluster through it (see kubeconfig), so the counts are its own.
type apiCounter struct {
	srv  *http.Server
	addr string

	mu     sync.Mutex
	counts map[string]int // "verb resource"
	marked time.Time      // lists after this are counted in listsAfter
	after  map[string]int
}

func startAPICounter(cfg *rest.Config) (*apiCounter, error) {
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &apiCounter{addr: l.Addr().String(), counts: map[string]int{}, after: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = tr
	proxy.FlushInterval = -1 // watches stream
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.count(r)
		proxy.ServeHTTP(w, r)
	})}
	go func() { _ = c.srv.Serve(l) }()
	return c, nil
}

// classify returns the Kubernetes verb and resource (with subresource) of a
// request, e.g. "list pods", "create pods/eviction".
func classify(r *http.Request) (verb, resource string) {
	verb, resource = metrics.RequestKind(r.Method, r.URL.Path, r.URL.Query().Get("watch"))
	if resource == "-" {
		// Outside the resource API (discovery, /version): by path.
		return strings.ToLower(r.Method), r.URL.Path
	}
	return verb, resource
}

func (c *apiCounter) count(r *http.Request) {
	verb, res := classify(r)
	k := verb + " " + res
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[k]++
	if !c.marked.IsZero() && verb == "list" {
		c.after[k]++
	}
}

// mark starts counting LISTs from now on (the informers have synced).
func (c *apiCounter) mark() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marked = time.Now()
}

func (c *apiCounter) snapshot() (counts, listsAfter map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts, listsAfter = map[string]int{}, map[string]int{}
	for k, v := range c.counts {
		counts[k] = v
	}
	for k, v := range c.after {
		listsAfter[k] = v
	}
	return counts, listsAfter
}

// kubeconfig writes a kubeconfig that points at the proxy, without
// credentials (the proxy adds the admin's).
func (c *apiCounter) kubeconfig(dir string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bench"] = &clientcmdapi.Cluster{Server: "http://" + c.addr}
	cfg.AuthInfos["bench"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	cfg.CurrentContext = "bench"
	path := filepath.Join(dir, "proxy.kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

func (c *apiCounter) close() { _ = c.srv.Close() }

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// percentile returns the q-quantile (0..1) of xs by nearest rank, or NaN.
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
