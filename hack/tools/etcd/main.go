// Command etcd is etcd's own server, built from the Go module proxy for the
// local e2e cluster.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
