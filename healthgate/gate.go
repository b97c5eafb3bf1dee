// Package healthgate runs the Prometheus health gate's queries
// (stsroller.io/health-query) in the background and hands the planner what
// it saw of each (policy.HealthState). There is one evaluator per StatefulSet
// with a gate, which runs its query, waits Interval, and runs it again; so
// the cost is O(StatefulSets with a gate), not O(pods), and Observe never
// waits on Prometheus. An answer that cannot be had holds the gate closed: an
// error is never read as healthy.
package healthgate

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/stsroller/stsroller/policy"
)

// Defaults of Options.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 10 * time.Second
)

// Options configure the gate.
type Options struct {
	DefaultURL string        // --prometheus-url; "" for none
	Interval   time.Duration // how often each StatefulSet's query is re-run; default 5s
	Timeout    time.Duration // per evaluation; default 10s
	Clock      clock.Clock   // default clock.RealClock{}
	// OnEvaluation, if set, is called after every evaluation with its result
	// ("healthy", "unhealthy" or "error") and how long it took (for metrics).
	OnEvaluation func(result string, took time.Duration)
}

// Gate keeps one evaluator per StatefulSet with a health query.
type Gate struct {
	ctx     context.Context
	enqueue func(cache.ObjectName)
	opts    Options

	mu    sync.Mutex
	evals map[cache.ObjectName]*evaluator
	// clients holds one Prometheus client per URL, shared by the evaluators
	// that ask it.
	clients map[string]*client
	// running counts the evaluators' goroutines; stopped is signalled when
	// it drops to 0.
	running int
	stopped *sync.Cond
}

// client is a Prometheus API client and how many evaluators use it.
type client struct {
	api   v1.API
	users int
}

// evaluator runs one StatefulSet's query. Its fields other than state never
// change; state is guarded by Gate.mu.
type evaluator struct {
	key        cache.ObjectName
	url, query string
	api        v1.API
	// ctx ends when the evaluator is forgotten, replaced, or the gate's
	// context is done; cancel ends it.
	ctx    context.Context
	cancel context.CancelFunc

	state policy.HealthState
}

// New returns a gate whose evaluators live as long as ctx; enqueue is called
// with a StatefulSet's key when an evaluation changed what the planner
// decides on.
func New(ctx context.Context, enqueue func(cache.ObjectName), opts Options) *Gate {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	g := &Gate{
		ctx: ctx, enqueue: enqueue, opts: opts,
		evals:   map[cache.ObjectName]*evaluator{},
		clients: map[string]*client{},
	}
	g.stopped = sync.NewCond(&g.mu)
	return g
}

// Observe returns what the gate has seen of key's query, starting a background
// evaluator (one goroutine per key) on first use, and replacing it (state reset
// to unchecked) when url or query changed. url "" means opts.DefaultURL; when
// that is empty too, Observe returns a non-nil error (a readable sentence naming
// --prometheus-url and stsroller.io/health-prometheus-url) and starts nothing.
// It never blocks on Prometheus.
//
// A URL that is not an absolute http or https URL is an error too. After the
// gate's context is done, Observe starts nothing and answers unchecked for a
// key it has no evaluator for.
func (g *Gate) Observe(key cache.ObjectName, url, query string) (policy.HealthState, error) {
	if url == "" {
		url = g.opts.DefaultURL
	}
	if url == "" {
		return policy.HealthState{}, fmt.Errorf(
			"the health query has no Prometheus to ask: set the controller's --prometheus-url or the annotation %s",
			policy.AnnotationHealthPrometheusURL)
	}
	if !policy.ValidPrometheusURL(url) {
		return policy.HealthState{}, fmt.Errorf(
			"the Prometheus URL %q is not an absolute http or https URL of a Prometheus server (for example \"http://prometheus.monitoring:9090\")", url)
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.evals[key]
	if old != nil && old.url == url && old.query == query {
		return old.state, nil
	}
	if g.ctx.Err() != nil {
		return policy.HealthState{}, nil
	}
	api, err := g.clientLocked(url)
	if err != nil {
		return policy.HealthState{}, fmt.Errorf("the Prometheus URL %q: %w", url, err)
	}
	e := &evaluator{key: key, url: url, query: query, api: api}
	e.ctx, e.cancel = context.WithCancel(g.ctx)
	if old != nil {
		// A step is stsroller's own doing, not the query's: the new query
		// must hold for stable-seconds after it too.
		e.state.LastStep = old.state.LastStep
		g.removeLocked(old)
	}
	g.evals[key] = e
	g.running++
	go g.run(e)
	return e.state, nil
}

// Stepped records that stsroller removed healthy pods of key at t (HealthState.LastStep).
// It does nothing for a key the gate has no evaluator for.
func (g *Gate) Stepped(key cache.ObjectName, t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.evals[key]; e != nil && t.After(e.state.LastStep) {
		e.state.LastStep = t
	}
}

// Forget stops key's evaluator and drops its state.
func (g *Gate) Forget(key cache.ObjectName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e := g.evals[key]; e != nil {
		g.removeLocked(e)
	}
}

// Len is the number of StatefulSets with an evaluator (for tests/metrics).
func (g *Gate) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.evals)
}

// Wait blocks until every evaluator has stopped (after ctx is done).
func (g *Gate) Wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.running > 0 {
		g.stopped.Wait()
	}
}

// clientLocked returns the client of url, making it on first use. g.mu is held.
func (g *Gate) clientLocked(url string) (v1.API, error) {
	if c := g.clients[url]; c != nil {
		c.users++
		return c.api, nil
	}
	c, err := api.NewClient(api.Config{Address: url})
	if err != nil {
		return nil, err
	}
	g.clients[url] = &client{api: v1.NewAPI(c), users: 1}
	return g.clients[url].api, nil
}

// removeLocked stops e and drops it, and its URL's client when no other
// evaluator uses it. g.mu is held.
func (g *Gate) removeLocked(e *evaluator) {
	e.cancel()
	if g.evals[e.key] == e {
		delete(g.evals, e.key)
	}
	if c := g.clients[e.url]; c != nil {
		c.users--
		if c.users == 0 {
			delete(g.clients, e.url)
		}
	}
}

// run evaluates e's query, then again every Interval, until e's context ends.
func (g *Gate) run(e *evaluator) {
	defer g.exited(e)
	for {
		g.evaluate(e)
		t := g.opts.Clock.NewTimer(g.opts.Interval)
		select {
		case <-e.ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// exited accounts for an evaluator's goroutine that returned; one stopped by
// the gate's context is dropped as well.
func (g *Gate) exited(e *evaluator) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.evals[e.key] == e {
		g.removeLocked(e)
	}
	g.running--
	if g.running == 0 {
		g.stopped.Broadcast()
	}
}

// evaluate runs e's query once and records the outcome, then enqueues the
// StatefulSet when the planner's view of it changed.
func (g *Gate) evaluate(e *evaluator) {
	began := g.opts.Clock.Now()
	ctx, cancel := context.WithTimeout(e.ctx, g.opts.Timeout)
	v, _, _, err := e.api.Query(ctx, e.query, began)
	cancel()
	if e.ctx.Err() != nil {
		return // forgotten, replaced or shutting down: the answer is nobody's
	}
	now := g.opts.Clock.Now()
	o := judge(v, err)
	if g.opts.OnEvaluation != nil {
		g.opts.OnEvaluation(o.result(), now.Sub(began))
	}

	g.mu.Lock()
	if g.evals[e.key] != e {
		g.mu.Unlock()
		return
	}
	before := e.state
	e.state = advance(before, o, now)
	changed := decisive(before, e.state)
	g.mu.Unlock()

	klog.FromContext(g.ctx).V(4).Info("Evaluated health query", "statefulSet", klog.KRef(e.key.Namespace, e.key.Name),
		"result", o.result(), "value", o.value, "err", o.err, "changed", changed)
	if changed {
		g.enqueue(e.key)
	}
}

// advance is the state after an evaluation with outcome o at now.
func advance(s policy.HealthState, o outcome, now time.Time) policy.HealthState {
	s.Checked = true
	s.Healthy = o.healthy
	s.Value = o.value
	s.Err = o.err
	if o.healthy {
		s.UnhealthySince = time.Time{}
		if s.HealthySince.IsZero() {
			s.HealthySince = now
		}
	} else {
		s.HealthySince = time.Time{}
		if s.UnhealthySince.IsZero() {
			s.UnhealthySince = now
		}
	}
	return s
}

// decisive reports whether the planner may decide differently on b than on
// a: the first answer, a flip of Healthy, an error appearing or going, or a
// new value while not healthy (it is in the message). A healthy value that
// moves, or an error whose text changes, plans nothing again.
func decisive(a, b policy.HealthState) bool {
	return a.Checked != b.Checked || a.Healthy != b.Healthy || (a.Err == "") != (b.Err == "") ||
		(!b.Healthy && a.Value != b.Value)
}
