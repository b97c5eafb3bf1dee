package main

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// TestStsrollerStopsByItself: `make demo` must end by itself (issue 9, bug
// 7). Stopping the in-process stsroller returns even though the demo's own
// context is still live, as it is when run returns normally.
func TestStsrollerStopsByItself(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // only after the test: the stop must not depend on it
	stop, err := startStsroller(ctx, fake.NewClientset())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the informers start
	done := make(chan struct{})
	go func() {
		stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("stopping stsroller did not return within 60s: the demo would hang")
	}
}
