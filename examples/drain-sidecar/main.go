// Command drain-sidecar is an example sidecar for stsroller's drain handshake.
// It watches its own pod for the stsroller.io/drain-requested annotation, runs
// the command given after "--" (for example a database's "drain" or "step
// down"), and when the command succeeds answers with stsroller.io/drain-complete
// on its pod, optionally removing a label in the same patch (the leader label,
// when the command hands leadership over).
//
//	drain-sidecar --pod-name=$(POD_NAME) --namespace=$(POD_NAMESPACE) \
//	    --annotations=/etc/podinfo/annotations --release-label=stsroller.io/role \
//	    -- /bin/sh -c 'cockroach node drain --self --insecure'
//
// With --annotations it reads the pod's annotations from a downward-API volume
// (no RBAC needed to see the request); without, it gets its pod from the API
// server (then it needs "get" on its pod). Answering needs "patch" on its pod.
// The command gets the request's time in STSROLLER_DRAIN_REQUESTED. It runs
// again at the next look if it fails, so it must be safe to repeat.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/stsroller/stsroller/policy"
)

// fieldManager names the sidecar in the pod's managedFields.
const fieldManager = "drain-sidecar"

// envRequested passes the request's time to the command.
const envRequested = "STSROLLER_DRAIN_REQUESTED"

func main() {
	var (
		podName      = flag.String("pod-name", os.Getenv("POD_NAME"), "this pod's name (default $POD_NAME)")
		namespace    = flag.String("namespace", os.Getenv("POD_NAMESPACE"), "this pod's namespace (default $POD_NAMESPACE)")
		annotations  = flag.String("annotations", "", "file of a downward-API volume holding metadata.annotations; empty: get the pod from the API server")
		kubeconfig   = flag.String("kubeconfig", "", "kubeconfig file; empty: the in-cluster configuration")
		interval     = flag.Duration("interval", 2*time.Second, "how often to look for a drain request")
		releaseLabel = flag.String("release-label", "", "a label to remove from the pod together with the answer (for example stsroller.io/role)")
		cmdTimeout   = flag.Duration("command-timeout", 0, "stop the command after this long (0: no limit; stsroller's drain timeout bounds the wait anyway)")
	)
	klog.InitFlags(nil)
	flag.Parse()
	logger := klog.Background()
	if *podName == "" || *namespace == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: drain-sidecar --pod-name=NAME --namespace=NS [flags] -- COMMAND [ARGS...]")
		os.Exit(2)
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		logger.Error(err, "Loading the client configuration")
		os.Exit(1)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		logger.Error(err, "Creating the client")
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx = klog.NewContext(ctx, logger.WithValues("pod", klog.KRef(*namespace, *podName)))

	s := &sidecar{
		Read:     apiReader(client, *namespace, *podName),
		Run:      commandRunner(flag.Args(), *cmdTimeout),
		Complete: apiCompleter(client, *namespace, *podName, *releaseLabel),
	}
	if *annotations != "" {
		s.Read = fileReader(*annotations)
	}
	s.Loop(ctx, *interval)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}

// sidecar answers drain requests. Its three steps are functions, so a test
// drives them.
type sidecar struct {
	// Read returns the pod's annotations as they are now.
	Read func(ctx context.Context) (map[string]string, error)
	// Run drains: it runs the command for the request made at requested.
	Run func(ctx context.Context, requested string) error
	// Complete answers: it sets stsroller.io/drain-complete on the pod.
	Complete func(ctx context.Context) error

	// answered is the request value already answered, so one request runs
	// the command once.
	answered string
}

// Loop looks every interval until ctx is done.
func (s *sidecar) Loop(ctx context.Context, interval time.Duration) {
	logger := klog.FromContext(ctx)
	logger.Info("Waiting for drain requests", "interval", interval)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Step(ctx); err != nil {
			logger.Error(err, "Answering the drain request failed; trying again")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Step looks once: with a request not answered yet, it runs the command and,
// when that succeeds, answers.
func (s *sidecar) Step(ctx context.Context) error {
	a, err := s.Read(ctx)
	if err != nil {
		return fmt.Errorf("reading the pod's annotations: %w", err)
	}
	requested, ok := a[policy.AnnotationDrainRequested]
	if !ok {
		return nil
	}
	// stsroller removes any earlier answer in the very patch that makes a
	// request, so an answer present is this request's own.
	if _, done := a[policy.AnnotationDrainComplete]; done || s.answered == requested {
		return nil
	}
	logger := klog.FromContext(ctx)
	logger.Info("Drain requested, running the command", "requested", requested)
	if err := s.Run(ctx, requested); err != nil {
		return fmt.Errorf("running the drain command: %w", err)
	}
	if err := s.Complete(ctx); err != nil {
		return fmt.Errorf("answering with %s: %w", policy.AnnotationDrainComplete, err)
	}
	s.answered = requested
	logger.Info("Drain complete, answered", "annotation", policy.AnnotationDrainComplete)
	return nil
}

// fileReader reads a downward-API annotations file: one key="value" line per
// annotation, the value quoted as Go quotes strings. The kubelet replaces the
// file atomically when the annotations change.
func fileReader(path string) func(context.Context) (map[string]string, error) {
	return func(context.Context) (map[string]string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return parseDownwardAPI(string(b))
	}
}

func parseDownwardAPI(s string) (map[string]string, error) {
	out := map[string]string{}
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, q, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %q is not key=\"value\"", line)
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			return nil, fmt.Errorf("line %q: value: %w", line, err)
		}
		out[k] = v
	}
	return out, nil
}

func apiReader(c kubernetes.Interface, ns, name string) func(context.Context) (map[string]string, error) {
	return func(ctx context.Context) (map[string]string, error) {
		p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return p.Annotations, nil
	}
}

// commandRunner runs argv with the request's time in its environment, its
// output going to the sidecar's.
func commandRunner(argv []string, timeout time.Duration) func(context.Context, string) error {
	return func(ctx context.Context, requested string) error {
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), envRequested+"="+requested)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return fmt.Errorf("%s exited with %d", argv[0], ee.ExitCode())
		}
		return err
	}
}

// completePatch is the merge patch of the answer: the annotation, and the
// label to remove (null deletes a key).
func completePatch(now time.Time, releaseLabel string) ([]byte, error) {
	meta := map[string]any{
		"annotations": map[string]any{policy.AnnotationDrainComplete: now.UTC().Format(time.RFC3339)},
	}
	if releaseLabel != "" {
		meta["labels"] = map[string]any{releaseLabel: nil}
	}
	return json.Marshal(map[string]any{"metadata": meta})
}

func apiCompleter(c kubernetes.Interface, ns, name, releaseLabel string) func(context.Context) error {
	return func(ctx context.Context) error {
		patch, err := completePatch(time.Now(), releaseLabel)
		if err != nil {
			return err
		}
		_, err = c.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: fieldManager})
		return err
	}
}
