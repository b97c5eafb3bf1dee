package healthgate

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"k8s.io/client-go/tools/cache"
	testclock "k8s.io/utils/clock/testing"

	"github.com/stsroller/stsroller/policy"
)

const (
	testQuery    = `min(up{job="db"})`
	testInterval = 5 * time.Second
	// patience bounds every wait for a goroutine to act; the tests do not
	// sleep, they poll.
	patience = 5 * time.Second
)

var (
	t0  = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	key = cache.ObjectName{Namespace: "db", Name: "pg"}
)

// prom serves Prometheus's query API with an answer the test sets, and
// counts the queries it was asked.
type prom struct {
	srv *httptest.Server

	mu      sync.Mutex
	code    int
	body    string
	hang    bool // hold the request until the client gives up
	queries []string
}

func newProm(t *testing.T) *prom {
	t.Helper()
	p := &prom{code: http.StatusOK, body: vector("1")}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *prom) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.queries = append(p.queries, r.Form.Get("query"))
	code, body, hang := p.code, p.body, p.hang
	p.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	if strings.HasPrefix(body, "{") {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(code)
	fmt.Fprint(w, body)
}

// setHang makes the server hold every request until the client gives up.
func (p *prom) setHang() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hang = true
}

// answer sets what the server answers from now on.
func (p *prom) answer(code int, body string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.code, p.body = code, body
}

func (p *prom) requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queries)
}

func (p *prom) lastQuery() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queries) == 0 {
		return ""
	}
	return p.queries[len(p.queries)-1]
}

// vector is a success answer of one sample per value, labelled db-0, db-1…
func vector(values ...string) string {
	samples := make([]string, len(values))
	for i, v := range values {
		samples[i] = fmt.Sprintf(`{"metric":{"__name__":"up","instance":"db-%d","job":"db"},"value":[1796637600,%q]}`, i, v)
	}
	return `{"status":"success","data":{"resultType":"vector","result":[` + strings.Join(samples, ",") + `]}}`
}

func scalar(v string) string {
	return fmt.Sprintf(`{"status":"success","data":{"resultType":"scalar","result":[1796637600,%q]}}`, v)
}

const (
	matrix = `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"job":"db"},"values":[[1796637600,"1"],[1796637615,"1"]]}]}}`
	str    = `{"status":"success","data":{"resultType":"string","result":[1796637600,"up"]}}`
)

func promError(errorType, msg string) string {
	return fmt.Sprintf(`{"status":"error","errorType":%q,"error":%q}`, errorType, msg)
}

// fixture is a gate on a fake clock, recording its enqueues and evaluations.
type fixture struct {
	t      *testing.T
	clock  *testclock.FakeClock
	gate   *Gate
	cancel context.CancelFunc

	mu       sync.Mutex
	enqueued []cache.ObjectName
	results  []string
}

func newFixture(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: testclock.NewFakeClock(t0)}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	opts.Clock = f.clock
	if opts.Interval == 0 {
		opts.Interval = testInterval
	}
	opts.OnEvaluation = func(result string, _ time.Duration) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.results = append(f.results, result)
	}
	f.gate = New(ctx, func(k cache.ObjectName) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.enqueued = append(f.enqueued, k)
	}, opts)
	t.Cleanup(func() {
		cancel()
		f.gate.Wait()
	})
	return f
}

func (f *fixture) enqueues() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.enqueued)
}

func (f *fixture) lastResult() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.results) == 0 {
		return ""
	}
	return f.results[len(f.results)-1]
}

// observe calls Observe and fails the test on an error.
func (f *fixture) observe(k cache.ObjectName, url, query string) policy.HealthState {
	f.t.Helper()
	h, err := f.gate.Observe(k, url, query)
	if err != nil {
		f.t.Fatalf("Observe: %v", err)
	}
	return h
}

// settle waits until n evaluators run and each waits on the clock: it has
// finished its evaluation and recorded it. An evaluator that was replaced or
// forgotten has stopped by then, its timer with it.
func (f *fixture) settle(n int) {
	f.t.Helper()
	waitFor(f.t, func() bool { return f.running() == n && f.clock.Waiters() == n }, fmt.Sprintf("%d evaluators waiting", n))
}

// running is the number of evaluators' goroutines.
func (f *fixture) running() int {
	f.gate.mu.Lock()
	defer f.gate.mu.Unlock()
	return f.gate.running
}

// clients is the number of Prometheus clients the gate keeps.
func (f *fixture) clients() int {
	f.gate.mu.Lock()
	defer f.gate.mu.Unlock()
	return len(f.gate.clients)
}

// tick steps the clock one interval and lets the one evaluator run again.
func (f *fixture) tick() {
	f.t.Helper()
	f.settle(1)
	f.clock.Step(testInterval)
	f.settle(1)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// evaluateOnce starts key's evaluator on p and returns its first state.
func (f *fixture) evaluateOnce(p *prom) policy.HealthState {
	f.t.Helper()
	if h := f.observe(key, p.srv.URL, testQuery); h.Checked {
		f.t.Fatalf("the first Observe answered %+v, want unchecked", h)
	}
	f.settle(1)
	return f.observe(key, p.srv.URL, testQuery)
}

func TestEvaluation(t *testing.T) {
	for _, tc := range []struct {
		name        string
		code        int
		body        string
		wantHealthy bool
		wantValue   string
		wantErr     string // a part of Err; "" for none
	}{
		{name: "one sample", body: vector("1"), wantHealthy: true, wantValue: "1"},
		{name: "several samples", body: vector("1", "3", "2"), wantHealthy: true, wantValue: "min 1, max 3 over 3 samples"},
		{name: "fraction", body: vector("0.25"), wantHealthy: true, wantValue: "0.25"},
		{name: "negative", body: vector("-1"), wantHealthy: true, wantValue: "-1"},
		{name: "zero", body: vector("0"), wantValue: "0"},
		{name: "one zero among several", body: vector("1", "0", "2"),
			wantValue: `min 0, max 2 over 3 samples; 0 at up{instance="db-1", job="db"}`},
		{name: "empty vector", body: vector(), wantValue: "no samples"},
		{name: "NaN", body: vector("NaN"), wantValue: "NaN"},
		{name: "NaN among several", body: vector("1", "NaN"),
			wantValue: `min 1, max 1 over 2 samples, 1 NaN; NaN at up{instance="db-1", job="db"}`},
		{name: "all NaN", body: vector("NaN", "NaN"), wantValue: `NaN over 2 samples; NaN at up{instance="db-0", job="db"}`},
		{name: "scalar non-zero", body: scalar("2"), wantHealthy: true, wantValue: "2"},
		{name: "scalar zero", body: scalar("0"), wantValue: "0"},
		{name: "scalar NaN", body: scalar("NaN"), wantValue: "NaN"},
		{name: "matrix", body: matrix, wantErr: "result type matrix, want a vector or scalar"},
		{name: "string", body: str, wantErr: "string"},
		{name: "HTTP 500", code: http.StatusInternalServerError, body: "internal error\n", wantErr: "server error: 500: internal error"},
		{name: "HTTP 503", code: http.StatusServiceUnavailable, body: promError("unavailable", "too many concurrent queries"),
			wantErr: "server error: 503: too many concurrent queries"},
		{name: "PromQL parse error", code: http.StatusBadRequest,
			body: promError("bad_data", `invalid parameter "query": 1:4: parse error: unexpected end of input`), wantErr: "parse error: unexpected end of input"},
		{name: "PromQL execution error", code: http.StatusUnprocessableEntity,
			body: promError("execution", "query processing would load too many samples into memory"), wantErr: "too many samples"},
		{name: "error with status 200", body: promError("internal", "something broke"), wantErr: "something broke"},
		{name: "not JSON", body: "<html>proxy login</html>", wantErr: "bad_response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProm(t)
			code := tc.code
			if code == 0 {
				code = http.StatusOK
			}
			p.answer(code, tc.body)
			f := newFixture(t, Options{})
			h := f.evaluateOnce(p)

			if !h.Checked {
				t.Errorf("Checked false after an evaluation")
			}
			if h.Healthy != tc.wantHealthy {
				t.Errorf("Healthy %v, want %v (state %+v)", h.Healthy, tc.wantHealthy, h)
			}
			if tc.wantErr == "" && h.Err != "" || tc.wantErr != "" && !strings.Contains(h.Err, tc.wantErr) {
				t.Errorf("Err %q, want it to contain %q", h.Err, tc.wantErr)
			}
			if tc.wantErr == "" && h.Value != tc.wantValue {
				t.Errorf("Value %q, want %q", h.Value, tc.wantValue)
			}
			if tc.wantHealthy {
				if !h.HealthySince.Equal(t0) || !h.UnhealthySince.IsZero() {
					t.Errorf("HealthySince %v, UnhealthySince %v; want %v and zero", h.HealthySince, h.UnhealthySince, t0)
				}
			} else if !h.UnhealthySince.Equal(t0) || !h.HealthySince.IsZero() {
				t.Errorf("UnhealthySince %v, HealthySince %v; want %v and zero", h.UnhealthySince, h.HealthySince, t0)
			}
			wantResult := resultUnhealthy
			switch {
			case tc.wantErr != "":
				wantResult = resultError
			case tc.wantHealthy:
				wantResult = resultHealthy
			}
			if got := f.lastResult(); got != wantResult {
				t.Errorf("OnEvaluation saw %q, want %q", got, wantResult)
			}
			if n := f.enqueues(); n != 1 {
				t.Errorf("enqueued %d times after the first evaluation, want 1", n)
			}
			if q := p.lastQuery(); q != testQuery {
				t.Errorf("Prometheus was asked %q, want %q", q, testQuery)
			}
		})
	}
}

// An unreachable Prometheus holds the gate closed.
func TestUnreachableFailsClosed(t *testing.T) {
	p := newProm(t)
	p.srv.Close()
	f := newFixture(t, Options{})
	h := f.evaluateOnce(p)
	if h.Healthy || !h.Checked || !strings.Contains(h.Err, "connection refused") || h.UnhealthySince.IsZero() {
		t.Errorf("state %+v, want checked, not healthy, an Err naming the refused connection, UnhealthySince set", h)
	}
	if got := f.lastResult(); got != resultError {
		t.Errorf("OnEvaluation saw %q, want %q", got, resultError)
	}
}

// A Prometheus that does not answer within Timeout holds the gate closed.
func TestTimeoutFailsClosed(t *testing.T) {
	p := newProm(t)
	p.setHang()
	f := newFixture(t, Options{Timeout: 50 * time.Millisecond})
	h := f.evaluateOnce(p)
	if h.Healthy || !strings.Contains(h.Err, "deadline exceeded") {
		t.Errorf("state %+v, want not healthy and an Err naming the deadline", h)
	}
}

func TestLongTextsAreCut(t *testing.T) {
	p := newProm(t)
	p.answer(http.StatusBadRequest, promError("bad_data", strings.Repeat("very long parse error ", 50)))
	f := newFixture(t, Options{})
	if h := f.evaluateOnce(p); len(h.Err) > maxErr || !strings.HasSuffix(h.Err, "…") {
		t.Errorf("Err of %d bytes %q, want at most %d, cut with …", len(h.Err), h.Err, maxErr)
	}

	long := strings.Repeat("x", 300)
	p.answer(http.StatusOK, `{"status":"success","data":{"resultType":"vector","result":[`+
		`{"metric":{"pod":"`+long+`"},"value":[1796637600,"0"]},{"metric":{"pod":"b"},"value":[1796637600,"1"]}]}}`)
	f.tick()
	if h := f.observe(key, p.srv.URL, testQuery); len(h.Value) > maxValue || !strings.HasPrefix(h.Value, "min 0, max 1 over 2 samples") {
		t.Errorf("Value of %d bytes %q, want at most %d", len(h.Value), h.Value, maxValue)
	}
}

func TestNumber(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0", 3: "3", -2: "-2", 0.5: "0.5", 1234.5678: "1234.57", 1e20: "1e+20", 123456789: "123456789",
	} {
		if got := number(model.SampleValue(in)); got != want {
			t.Errorf("number(%v) = %q, want %q", in, got, want)
		}
	}
}

// The Since fields move only when the answer flips, and enqueue follows what
// the planner decides on.
func TestTransitions(t *testing.T) {
	p := newProm(t)
	p.answer(http.StatusOK, vector("0"))
	f := newFixture(t, Options{})

	h := f.evaluateOnce(p)
	if h.Healthy || !h.UnhealthySince.Equal(t0) || !h.HealthySince.IsZero() || f.enqueues() != 1 {
		t.Fatalf("after 0: %+v, %d enqueues; want unhealthy since %v, 1 enqueue", h, f.enqueues(), t0)
	}

	p.answer(http.StatusOK, vector("1"))
	f.tick()
	t1 := f.clock.Now()
	h = f.observe(key, p.srv.URL, testQuery)
	if !h.Healthy || !h.HealthySince.Equal(t1) || !h.UnhealthySince.IsZero() || f.enqueues() != 2 {
		t.Fatalf("after 1: %+v, %d enqueues; want healthy since %v, 2 enqueues", h, f.enqueues(), t1)
	}

	p.answer(http.StatusOK, vector("2"))
	f.tick()
	h = f.observe(key, p.srv.URL, testQuery)
	if !h.Healthy || !h.HealthySince.Equal(t1) || h.Value != "2" || f.enqueues() != 2 {
		t.Fatalf("after 2: %+v, %d enqueues; want still healthy since %v, value 2, no enqueue", h, f.enqueues(), t1)
	}

	p.answer(http.StatusServiceUnavailable, "overloaded")
	f.tick()
	t3 := f.clock.Now()
	h = f.observe(key, p.srv.URL, testQuery)
	if h.Healthy || h.Err == "" || !h.UnhealthySince.Equal(t3) || !h.HealthySince.IsZero() || f.enqueues() != 3 {
		t.Fatalf("after 503: %+v, %d enqueues; want an error since %v, 3 enqueues", h, f.enqueues(), t3)
	}

	p.answer(http.StatusBadGateway, "bad gateway")
	f.tick()
	h = f.observe(key, p.srv.URL, testQuery)
	if !strings.Contains(h.Err, "502") || !h.UnhealthySince.Equal(t3) || f.enqueues() != 3 {
		t.Fatalf("after 502: %+v, %d enqueues; want the new error, still since %v, no enqueue", h, f.enqueues(), t3)
	}

	p.answer(http.StatusOK, vector("0"))
	f.tick()
	h = f.observe(key, p.srv.URL, testQuery)
	if h.Healthy || h.Err != "" || h.Value != "0" || !h.UnhealthySince.Equal(t3) || f.enqueues() != 4 {
		t.Fatalf("after 0: %+v, %d enqueues; want unhealthy, Err cleared, still since %v, 4 enqueues", h, f.enqueues(), t3)
	}

	p.answer(http.StatusOK, vector("0", "1"))
	f.tick()
	h = f.observe(key, p.srv.URL, testQuery)
	if h.Healthy || !strings.HasPrefix(h.Value, "min 0, max 1") || !h.UnhealthySince.Equal(t3) || f.enqueues() != 5 {
		t.Fatalf("after 0, 1: %+v, %d enqueues; want unhealthy with the new value, still since %v, 5 enqueues", h, f.enqueues(), t3)
	}

	f.tick()
	if f.enqueues() != 5 {
		t.Fatalf("the same answer again enqueued: %d enqueues, want 5", f.enqueues())
	}
}

// The query runs once per Interval however often Observe is called.
func TestRerunEveryInterval(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{})
	f.evaluateOnce(p)
	for range 100 {
		f.observe(key, p.srv.URL, testQuery)
	}
	if n := p.requests(); n != 1 {
		t.Fatalf("%d requests after 100 Observes, want 1", n)
	}

	for i := 2; i <= 4; i++ {
		// Short of the interval the evaluator's timer is still pending: no
		// query can have run.
		f.clock.Step(testInterval - time.Millisecond)
		if !f.clock.HasWaiters() || p.requests() != i-1 {
			t.Fatalf("short of the interval: %d requests, timer pending %v; want %d, true", p.requests(), f.clock.HasWaiters(), i-1)
		}
		f.clock.Step(time.Millisecond)
		f.settle(1)
		if n := p.requests(); n != i {
			t.Fatalf("after %d intervals: %d requests, want %d", i-1, n, i)
		}
	}
}

func TestDefaultURL(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{DefaultURL: p.srv.URL})
	f.observe(key, "", testQuery)
	f.settle(1)
	if h := f.observe(key, "", testQuery); !h.Healthy || p.requests() != 1 {
		t.Errorf("state %+v after %d requests at the default URL, want healthy after 1", h, p.requests())
	}
}

func TestNoURL(t *testing.T) {
	f := newFixture(t, Options{})
	h, err := f.gate.Observe(key, "", testQuery)
	if err == nil {
		t.Fatalf("Observe without a URL answered %+v and no error", h)
	}
	for _, want := range []string{"--prometheus-url", policy.AnnotationHealthPrometheusURL} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if n := f.gate.Len(); n != 0 {
		t.Errorf("Len %d, want 0", n)
	}
	if f.clock.HasWaiters() {
		t.Errorf("an evaluator started")
	}
}

func TestBadURL(t *testing.T) {
	f := newFixture(t, Options{DefaultURL: "prometheus:9090"})
	if _, err := f.gate.Observe(key, "", testQuery); err == nil || !strings.Contains(err.Error(), "prometheus:9090") {
		t.Errorf("Observe with a URL that is not absolute: error %v, want one naming the URL", err)
	}
	if n := f.gate.Len(); n != 0 {
		t.Errorf("Len %d, want 0", n)
	}
}

func TestQueryChangeResets(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{})
	f.evaluateOnce(p)
	step := t0.Add(-time.Minute)
	f.gate.Stepped(key, step)

	const other = `min(pg_up) > 0`
	p.answer(http.StatusOK, vector("0"))
	h := f.observe(key, p.srv.URL, other)
	if h.Checked || h.Healthy || !h.LastStep.Equal(step) {
		t.Fatalf("after the query changed: %+v, want unchecked, LastStep %v kept", h, step)
	}
	f.settle(1)
	h = f.observe(key, p.srv.URL, other)
	if !h.Checked || h.Healthy || p.lastQuery() != other || f.gate.Len() != 1 {
		t.Errorf("after the new query's evaluation: %+v, asked %q, Len %d; want unhealthy, %q, 1", h, p.lastQuery(), f.gate.Len(), other)
	}
}

func TestURLChangeResets(t *testing.T) {
	a, b := newProm(t), newProm(t)
	f := newFixture(t, Options{})
	f.evaluateOnce(a)

	b.answer(http.StatusOK, vector("0"))
	if h := f.observe(key, b.srv.URL, testQuery); h.Checked {
		t.Fatalf("after the URL changed: %+v, want unchecked", h)
	}
	f.settle(1)
	if h := f.observe(key, b.srv.URL, testQuery); !h.Checked || h.Healthy {
		t.Errorf("state %+v, want the new Prometheus's unhealthy answer", h)
	}
	f.clock.Step(testInterval)
	f.settle(1)
	if a.requests() != 1 || b.requests() != 2 {
		t.Errorf("requests: %d at the old URL, %d at the new; want 1 and 2", a.requests(), b.requests())
	}
	if n := f.clients(); n != 1 {
		t.Errorf("%d clients kept, want 1", n)
	}
}

func TestForget(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{})
	other := cache.ObjectName{Namespace: "db", Name: "mysql"}
	f.observe(key, p.srv.URL, testQuery)
	f.observe(other, p.srv.URL, testQuery)
	f.settle(2)
	if n := f.gate.Len(); n != 2 {
		t.Fatalf("Len %d, want 2", n)
	}
	if n := f.clients(); n != 1 {
		t.Errorf("%d clients for one URL, want 1", n)
	}

	f.gate.Forget(key)
	if n := f.gate.Len(); n != 1 {
		t.Fatalf("Len %d after Forget, want 1", n)
	}
	waitFor(t, func() bool { return f.running() == 1 }, "the forgotten evaluator to stop")
	f.settle(1)
	f.clock.Step(testInterval)
	f.settle(1)
	if n := p.requests(); n != 3 {
		t.Errorf("%d requests, want 3 (two first evaluations, one re-run of the other key)", n)
	}

	f.gate.Forget(other)
	f.settle(0)
	f.gate.Forget(other) // twice is harmless
	if n, c := f.gate.Len(), f.clients(); n != 0 || c != 0 {
		t.Errorf("Len %d, %d clients after forgetting both, want 0, 0", n, c)
	}
	f.clock.Step(10 * testInterval)
	if n := p.requests(); n != 3 {
		t.Errorf("%d requests after both were forgotten, want 3", n)
	}
	if h := f.observe(key, p.srv.URL, testQuery); h.Checked {
		t.Errorf("Observe after Forget answered %+v, want unchecked", h)
	}
}

// An answer that arrives after Forget is dropped: no state, no enqueue.
func TestForgetDuringEvaluation(t *testing.T) {
	p := newProm(t)
	p.setHang()
	f := newFixture(t, Options{})
	f.observe(key, p.srv.URL, testQuery)
	waitFor(t, func() bool { return p.requests() == 1 }, "the query to reach Prometheus")
	f.gate.Forget(key)
	waitFor(t, func() bool { return f.running() == 0 }, "the forgotten evaluator to stop")
	if n := f.enqueues(); n != 0 {
		t.Errorf("%d enqueues for a forgotten key, want 0", n)
	}
	if got := f.lastResult(); got != "" {
		t.Errorf("OnEvaluation saw %q for a cancelled query, want nothing", got)
	}
}

func TestStepped(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{})
	f.gate.Stepped(key, t0) // no evaluator: nothing to record
	f.evaluateOnce(p)
	step := t0.Add(time.Second)
	f.gate.Stepped(key, step)
	h := f.observe(key, p.srv.URL, testQuery)
	if !h.LastStep.Equal(step) {
		t.Fatalf("LastStep %v, want %v", h.LastStep, step)
	}
	f.tick()
	if h := f.observe(key, p.srv.URL, testQuery); !h.LastStep.Equal(step) || !h.HealthySince.Equal(t0) {
		t.Errorf("after another evaluation: %+v, want LastStep %v and HealthySince %v kept", h, step, t0)
	}
}

func TestWaitAfterCancel(t *testing.T) {
	p := newProm(t)
	f := newFixture(t, Options{})
	for i := range 3 {
		f.observe(cache.ObjectName{Namespace: "db", Name: fmt.Sprint("pg-", i)}, p.srv.URL, testQuery)
	}
	f.settle(3)
	p.setHang() // one evaluator is mid-query when the context ends
	f.observe(key, p.srv.URL, testQuery)
	waitFor(t, func() bool { return p.requests() == 4 }, "the fourth query")

	f.cancel()
	done := make(chan struct{})
	go func() {
		f.gate.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(patience):
		t.Fatal("Wait did not return after the context was cancelled")
	}
	if n := f.gate.Len(); n != 0 {
		t.Errorf("Len %d after shutdown, want 0", n)
	}
	if h := f.observe(key, p.srv.URL, testQuery); h.Checked || f.gate.Len() != 0 {
		t.Errorf("Observe after shutdown answered %+v with Len %d, want unchecked and nothing started", h, f.gate.Len())
	}
}
