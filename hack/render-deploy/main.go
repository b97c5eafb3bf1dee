// Command render-deploy prints deploy/'s manifests, as `kustomize build
// deploy/` would, with the controller image replaced: `make e2e-kind` pipes it
// into kubectl apply.
//
//	go run ./hack/render-deploy -image stsroller:e2e | kubectl apply -f -
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/stsroller/stsroller/deploy"
)

func main() {
	image := flag.String("image", "", "controller image (name:tag); empty keeps "+deploy.Image)
	flag.Parse()
	out, err := deploy.BuildWith(deploy.Options{Image: *image})
	if err != nil {
		fmt.Fprintln(os.Stderr, "render-deploy:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
