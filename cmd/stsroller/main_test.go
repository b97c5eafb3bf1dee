package main

import (
	"flag"
	"testing"
	"time"
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
