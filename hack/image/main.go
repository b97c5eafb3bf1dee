// Command image builds a container image from one static binary, without
// Docker and without a base image: one layer holding the binary, a config that
// names the user and the entrypoint, written as an OCI image-layout tarball
// that `ctr images import`, `docker load` (25+), `podman load` and `crane push`
// read.
//
// The image is reproducible: every timestamp is fixed (SOURCE_DATE_EPOCH, else
// the Unix epoch), the layer tar and its gzip stream carry no host details, so
// the same binary gives the same digest on any machine. `make image-tar` builds
// the controller's image with it, and e2e/cluster the pause image of its real
// node.
//
//	go run . -binary ../../bin/stsroller -entrypoint /stsroller -user 65532:65532 \
//	    -name stsroller:dev -o ../../bin/stsroller-image.tar
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	var o Options
	flag.StringVar(&o.Binary, "binary", "", "the static binary to put in the image (required)")
	flag.StringVar(&o.Entrypoint, "entrypoint", "", "its path in the image, also the entrypoint; default /<base name of -binary>")
	flag.StringVar(&o.User, "user", "65532:65532", "uid:gid the container runs as")
	flag.StringVar(&o.Name, "name", "", "image reference recorded in the tarball's index (name:tag), e.g. stsroller:dev (required)")
	flag.StringVar(&o.OS, "os", "linux", "the binary's OS")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "the binary's architecture (GOARCH)")
	out := flag.String("o", "", "output tarball (required)")
	digestFile := flag.String("digest-file", "", "also write the image's manifest digest here")
	flag.Parse()
	if o.Binary == "" || o.Name == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	created, err := sourceDateEpoch()
	if err != nil {
		fail(err)
	}
	o.Created = created
	digest, err := WriteFile(*out, o)
	if err != nil {
		fail(err)
	}
	if *digestFile != "" {
		if err := os.WriteFile(*digestFile, []byte(digest+"\n"), 0o644); err != nil {
			fail(err)
		}
	}
	fmt.Printf("%s %s@%s\n", *out, o.Name, digest)
}

// sourceDateEpoch is the image's creation time: $SOURCE_DATE_EPOCH
// (reproducible-builds.org), else the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
	}
	return time.Unix(s, 0).UTC(), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}
