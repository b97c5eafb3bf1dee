package cluster

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// live are the clusters of this test binary that have not been stopped.
var live = struct {
	sync.Mutex
	clusters map[*Cluster]bool
	once     sync.Once
}{clusters: map[*Cluster]bool{}}

func register(c *Cluster) {
	live.Lock()
	live.clusters[c] = true
	live.Unlock()
	live.once.Do(func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go stopOnSignal(sigs)
	})
}

func unregister(c *Cluster) {
	live.Lock()
	delete(live.clusters, c)
	live.Unlock()
}

// stopOnSignal stops every live cluster when the test binary gets SIGINT or
// SIGTERM, then lets the signal do what it would have done.
//
// The components run in their own process groups, so a Ctrl-C on the
// terminal does not reach them; without this they would die only by
// Pdeathsig, with no chance to flush logs.
func stopOnSignal(sigs chan os.Signal) {
	sig := <-sigs
	live.Lock()
	var clusters []*Cluster
	for c := range live.clusters {
		clusters = append(clusters, c)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, c := range clusters {
		wg.Go(c.Stop)
	}
	wg.Wait()
	signal.Reset(syscall.SIGINT, syscall.SIGTERM)
	_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	select {} // the signal ends the process
}
