// Package rbaccheck checks the API requests a package's unit tests make
// through fake clientsets against the ClusterRole of deploy/base/rbac.yaml.
// A request the controller makes without a rule to grant it then fails the
// tests that make it, not a user's cluster: deploy_test.go keeps the rules
// and the code's comments together, this keeps them and the code's calls.
//
// Use one Recorder per test binary: Watch every fake clientset, and call
// TestMain from the package's TestMain.
package rbaccheck

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	utilruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

// Request is one kind of API request: verb on group/resource[/subresource].
type Request struct {
	Verb, Group, Resource string
}

func (r Request) String() string {
	g := r.Group
	if g == "" {
		g = "core"
	}
	return fmt.Sprintf("%s %s %s", r.Verb, g, r.Resource)
}

// Recorder collects the requests fake clientsets received. The zero value is
// ready to use and safe for concurrent use.
type Recorder struct {
	mu   sync.Mutex
	seen map[Request]int
}

// Watch records every request client receives from now on; it changes no
// answer. The fake sends get, list, create, update, patch, delete and
// evictions through its reaction chain, and watches (an informer's, after
// its list) through a chain of their own: both are hooked.
func (r *Recorder) Watch(client *fake.Clientset) {
	client.PrependReactor("*", "*", func(a k8stesting.Action) (bool, utilruntime.Object, error) {
		r.Add(requestOf(a))
		return false, nil, nil
	})
	client.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		r.Add(requestOf(a))
		return false, nil, nil
	})
}

// Requests are the kinds of request recorded so far, sorted.
func (r *Recorder) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Request, 0, len(r.seen))
	for req := range r.seen {
		out = append(out, req)
	}
	slices.SortFunc(out, func(a, b Request) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// Add records one request.
func (r *Recorder) Add(req Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[Request]int{}
	}
	r.seen[req]++
}

func requestOf(a k8stesting.Action) Request {
	res := a.GetResource()
	name := res.Resource
	if sub := a.GetSubresource(); sub != "" {
		name += "/" + sub
	}
	verb := a.GetVerb()
	if verb == "delete-collection" { // the fake's word for RBAC's verb
		verb = "deletecollection"
	}
	return Request{Verb: verb, Group: res.Group, Resource: name}
}

// ErrNothingRecorded is Check's answer when no request was recorded: a check
// of nothing proves nothing (is every fake clientset watched?).
var ErrNothingRecorded = errors.New("rbaccheck: no API request was recorded; is every fake clientset watched?")

// Check says which recorded requests the ClusterRole of deploy/base/rbac.yaml
// does not grant, or ErrNothingRecorded.
func (r *Recorder) Check() error {
	rules, err := ClusterRoleRules()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return ErrNothingRecorded
	}
	var missing []string
	for req := range r.seen {
		if !Allows(rules, req) {
			missing = append(missing, req.String())
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return fmt.Errorf("rbaccheck: the tests made API requests that deploy/base/rbac.yaml's ClusterRole does not grant: %s (add a rule, with the code that needs it, there, in the Helm chart's rules and in deploy_test.go)",
		strings.Join(missing, "; "))
}

// Allows says whether one of rules grants req (any object name: rules with
// resourceNames do not count, since the controller's names are its users').
func Allows(rules []rbacv1.PolicyRule, req Request) bool {
	for _, ru := range rules {
		if len(ru.ResourceNames) > 0 {
			continue
		}
		if (slices.Contains(ru.APIGroups, req.Group) || slices.Contains(ru.APIGroups, "*")) &&
			(slices.Contains(ru.Resources, req.Resource) || slices.Contains(ru.Resources, "*")) &&
			(slices.Contains(ru.Verbs, req.Verb) || slices.Contains(ru.Verbs, "*")) {
			return true
		}
	}
	return false
}

// ClusterRoleRules reads the rules of the ClusterRole in
// deploy/base/rbac.yaml.
func ClusterRoleRules() ([]rbacv1.PolicyRule, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, errors.New("rbaccheck: cannot locate deploy/base")
	}
	path := filepath.Join(filepath.Dir(self), "..", "base", "rbac.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		var role rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if role.Kind == "ClusterRole" {
			return role.Rules, nil
		}
	}
	return nil, fmt.Errorf("%s: no ClusterRole", path)
}

// TestMain runs the tests, then checks r: the tests fail when one of their
// requests is not granted, or, when every test ran (no -run), when none was
// recorded. Call it as os.Exit(rbaccheck.TestMain(m, &recorder)).
func TestMain(m *testing.M, r *Recorder) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	err := r.Check()
	if errors.Is(err, ErrNothingRecorded) {
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
			return 0 // only some tests ran; they may make no request
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
