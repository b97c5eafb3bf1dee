//go:build e2e

package e2e

// What the benchmark reads of a process and of stsroller: CPU seconds and
// resident memory from /proc, and the Prometheus text of /metrics: stsroller's
// own (its API requests by verb, resource and code, its syncs) and the API
// server's (every client's requests).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
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

// processes returns the pids and arguments (from /proc/PID/cmdline) of the
// processes other than this one whose arguments match, at most limit of
// them (0: all).
func processes(limit int, match func(args []string) bool) map[int][]string {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	out := map[int][]string{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		if match(args) {
			out[pid] = args
			if len(out) == limit {
				break
			}
		}
	}
	return out
}

// findPID returns the pid and arguments of the one process whose command
// line holds every one of parts (NUL-separated arguments joined by spaces),
// or 0.
func findPID(parts ...string) (int, []string) {
	found := processes(1, func(args []string) bool {
		cmd := strings.Join(args, " ")
		for _, p := range parts {
			if !strings.Contains(cmd, p) {
				return false
			}
		}
		return true
	})
	for pid, args := range found {
		return pid, args
	}
	return 0, nil
}

// flagValue returns the value of --name=value in args, or "".
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

// clusterComponents are the processes of a local cluster (e2e/cluster).
var clusterComponents = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true, "kwok": true,
}

// localClusterProcs finds the local cluster's processes (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kwok), those whose
// command line names the work directory of $KUBECONFIG, as pid → component.
// None on kind.
func localClusterProcs() map[int]string {
	kc := os.Getenv("KUBECONFIG")
	if kc == "" {
		return nil
	}
	dir := filepath.Dir(kc) + string(filepath.Separator)
	out := map[int]string{}
	for pid, args := range processes(0, func(args []string) bool {
		return clusterComponents[filepath.Base(args[0])] && strings.Contains(strings.Join(args, " "), dir)
	}) {
		out[pid] = filepath.Base(args[0])
	}
	return out
}

// cpuByName is the CPU seconds so far of procs (pid → name), summed by name
// (those still running).
func cpuByName(procs map[int]string) map[string]float64 {
	out := map[string]float64{}
	for pid, name := range procs {
		if c, err := procCPU(pid); err == nil {
			out[name] += c
		}
	}
	return out
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
	return parsePromText(resp.Body)
}

// scrapeAPIServer reads the API server's /metrics, keeping only the series
// whose name has one of prefixes (the whole text is megabytes).
func scrapeAPIServer(ctx context.Context, client kubernetes.Interface, prefixes ...string) (promText, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rc, err := client.CoreV1().RESTClient().Get().AbsPath("/metrics").Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	all, err := parsePromText(rc)
	if err != nil {
		return nil, err
	}
	out := promText{}
	for k, v := range all {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				out[k] = v
			}
		}
	}
	return out, nil
}

func parsePromText(r io.Reader) (promText, error) {
	out := promText{}
	sc := bufio.NewScanner(r)
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

// seriesLabels splits a series name{a="x",b="y"} into its name and labels.
func seriesLabels(key string) (name string, labels map[string]string) {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return key, nil
	}
	name, rest := key[:i], strings.TrimSuffix(key[i+1:], "}")
	labels = map[string]string{}
	for rest != "" {
		eq := strings.Index(rest, `="`)
		if eq < 0 {
			break
		}
		k := strings.TrimLeft(rest[:eq], ",")
		rest = rest[eq+2:]
		var v strings.Builder
		j := 0
		for ; j < len(rest); j++ {
			if rest[j] == '\\' && j+1 < len(rest) {
				j++
				v.WriteByte(rest[j])
				continue
			}
			if rest[j] == '"' {
				break
			}
			v.WriteByte(rest[j])
		}
		labels[k] = v.String()
		rest = rest[min(j+1, len(rest)):]
	}
	return name, labels
}

// counterDelta sums, per key(labels), the growth of the counter name between
// two scrapes; a series absent before counts from zero.
func counterDelta(name string, before, after promText, key func(labels map[string]string) string) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		n, labels := seriesLabels(k)
		if n != name {
			continue
		}
		if d := int(math.Round(v - before[k])); d > 0 {
			out[key(labels)] += d
		}
	}
	return out
}

// stsrollerRequests are stsroller's API requests between two scrapes of its
// /metrics (stsroller_api_requests_total{verb,resource,code}), as
// "verb resource" → count, and those not answered 2xx as
// "verb resource code" → count (code 0: no answer).
func stsrollerRequests(before, after promText) (all, failed map[string]int) {
	const name = "stsroller_api_requests_total"
	all = counterDelta(name, before, after, func(l map[string]string) string { return l["verb"] + " " + l["resource"] })
	failed = counterDelta(name, before, after, func(l map[string]string) string {
		if strings.HasPrefix(l["code"], "2") {
			return ""
		}
		return l["verb"] + " " + l["resource"] + " " + l["code"]
	})
	delete(failed, "")
	return all, failed
}

// isWrite says whether a Kubernetes verb changes something: every verb but
// get, list and watch (in either case: the API server's are upper case).
func isWrite(verb string) bool {
	switch strings.ToLower(verb) {
	case "get", "list", "watch":
		return false
	}
	return true
}

// writes sums the counts whose key ("verb ...") has a write verb.
func writes(counts map[string]int) int {
	n := 0
	for k, v := range counts {
		verb, _, _ := strings.Cut(k, " ")
		if isWrite(verb) {
			n += v
		}
	}
	return n
}

// apiserverRequestsPrefix selects the API server's request counter.
const apiserverRequestsPrefix = "apiserver_request_total{"

// apiserverWrites are the write requests the API server answered between two
// of its scrapes (apiserver_request_total), every client's, as
// "VERB resource[/subresource]" → count.
func apiserverWrites(before, after promText) map[string]int {
	out := counterDelta("apiserver_request_total", before, after, func(l map[string]string) string {
		if !isWrite(l["verb"]) {
			return ""
		}
		r := l["resource"]
		if l["subresource"] != "" {
			r += "/" + l["subresource"]
		}
		return l["verb"] + " " + r
	})
	delete(out, "")
	return out
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
