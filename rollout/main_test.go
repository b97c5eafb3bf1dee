package rollout

import (
	"os"
	"testing"

	"github.com/stsroller/stsroller/deploy/rbaccheck"
)

// apiCalls records the requests of every fake clientset of these tests; once
// they pass, each must be granted by deploy/base/rbac.yaml's ClusterRole.
var apiCalls rbaccheck.Recorder

func TestMain(m *testing.M) { os.Exit(rbaccheck.TestMain(m, &apiCalls)) }
