// Command pause is the sandbox ("pause") container of the e2e cluster's real
// node: it holds the pod's namespaces, sleeping until SIGTERM or SIGINT, and
// reaps the zombies it inherits as PID 1 of a shared PID namespace. It does
// what registry.k8s.io/pause does, built here so that nothing is pulled; the
// image is made by hack/image like the controller's.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
