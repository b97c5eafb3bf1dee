// Command kubectl-stsroller is the kubectl plugin for stsroller: with the
// binary on $PATH, `kubectl stsroller status|plan|pause|resume NAME`.
//
// It talks to the API server as the user, with the user's kubeconfig; it
// needs get on statefulsets, list on pods, poddisruptionbudgets and events,
// get on services, and patch on statefulsets for pause and resume.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const usage = `kubectl stsroller: see and steer stsroller's rollouts of StatefulSets.

Usage:
  kubectl stsroller status NAME [-n NAMESPACE] [-o text|json]
      The status stsroller wrote on the StatefulSet (annotation stsroller.io/status:
      phase, revision, replicas, reason, message, since) and its recent Events.
  kubectl stsroller plan NAME [-n NAMESPACE] [-o text|json]
      What stsroller would delete next, in order, how (Delete or Evict) and why,
      and the status it would write, computed from the cluster as it is now by
      stsroller's own planner. Deletes nothing. The controller also waits for
      deletions of its own it has not yet seen take effect, which this command
      cannot see, and with stsroller.io/dns-domain it asks DNS servers itself
      where this command reads the pods' stsroller.io/dns-propagated condition:
      its next plan can differ.
  kubectl stsroller plan NAME --all [--pod-ready DURATION] [--drain-answer DURATION] [-n NAMESPACE] [-o text|json]
      The forecast: stsroller's planner run forward from the cluster as it is now,
      fed its own deletions, the pods the StatefulSet controller brings back at the
      update revision, and the PodDisruptionBudgets' headroom as they would change,
      until the rollout would be complete. Prints every step: which pods go
      together, how and why, what each step then waits for (max-unavailable, a
      PodDisruptionBudget, the leader, the rollout group), where it would block
      (a budget, a paused or invalid member, the partition's kept pods), and an
      estimated time per step and in total. For a StatefulSet in a rollout group
      (stsroller.io/rollout-group) it covers every member of the group, in order.
      Times come from this StatefulSet's pods: the mean time from a pod's
      creation to Ready, and from stsroller's deletion of a pod to its
      replacement's creation (from stsroller's events, when there are any); or
      --pod-ready DURATION (for example 40s), the time from a deletion to the
      replacement being Ready, for every pod. With the drain handshake
      (stsroller.io/drain-timeout-seconds) a pod asked to drain goes at the
      timeout, unless --drain-answer DURATION says how long pods take to answer.
      Nothing else is assumed to change: no pod crashes, every replacement turns
      Ready. Deletes nothing.
  kubectl stsroller pause NAME [-n NAMESPACE]
      Set stsroller.io/paused: "true": stsroller deletes nothing until resumed.
  kubectl stsroller resume NAME [-n NAMESPACE]
      Remove stsroller.io/paused.

Flags:
  -n, --namespace NAMESPACE   default: the kubeconfig context's namespace
  -o, --output text|json      for status and plan; default text
      --all                   plan: forecast every step until the rollout is complete
      --pod-ready DURATION    plan --all: time from a pod's deletion to its replacement
                              being Ready, instead of the measured times
      --drain-answer DURATION plan --all: time from a drain request to its answer;
                              default: pods go at the drain timeout
      --kubeconfig PATH       default: $KUBECONFIG, else ~/.kube/config
      --context NAME          the kubeconfig context to use
  -h, --help
`

// connector makes a client from the kubeconfig flags and says which namespace
// to use: the flag's, else the context's.
type connector func(kubeconfig, kubeContext, namespace string) (kubernetes.Interface, string, error)

// env is what a command needs from outside; tests give their own.
type env struct {
	out     io.Writer
	connect connector
	now     func() time.Time
}

// usageError is a mistake on the command line: exit status 2, with the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], env{out: os.Stdout, connect: connectKubeconfig, now: time.Now})
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "error: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(os.Stderr, "\n%s", usage)
		os.Exit(2)
	}
	os.Exit(1)
}

// options are the parsed command line.
type options struct {
	verb, name  string
	namespace   string
	output      string
	kubeconfig  string
	kubeContext string
	// all: plan forecasts the whole rollout; podReady overrides its times.
	all      bool
	podReady time.Duration
	// drainAnswer is plan --all's time from a drain request to its answer.
	drainAnswer time.Duration
}

// run parses args (flags may come before or after the subcommand and NAME, as
// with kubectl) and runs the subcommand.
func run(ctx context.Context, args []string, e env) error {
	o, help, err := parse(args)
	if help {
		_, err := io.WriteString(e.out, usage)
		return err
	}
	if err != nil {
		return err
	}
	client, ns, err := e.connect(o.kubeconfig, o.kubeContext, o.namespace)
	if err != nil {
		return err
	}
	switch o.verb {
	case "status":
		return status(ctx, client, ns, o.name, o.output, e.out)
	case "plan":
		if o.all {
			return forecast(ctx, client, ns, o.name, o.output, o.podReady, o.drainAnswer, e.now(), e.out)
		}
		return plan(ctx, client, ns, o.name, o.output, e.now(), e.out)
	case "pause":
		return setPaused(ctx, client, ns, o.name, true, e.out)
	case "resume":
		return setPaused(ctx, client, ns, o.name, false, e.out)
	}
	panic("unreachable: parse checks the verb")
}

func parse(args []string) (options, bool, error) {
	var o options
	fs := flag.NewFlagSet("kubectl-stsroller", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.namespace, "n", "", "")
	fs.StringVar(&o.namespace, "namespace", "", "")
	fs.StringVar(&o.output, "o", "text", "")
	fs.StringVar(&o.output, "output", "text", "")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "")
	fs.StringVar(&o.kubeContext, "context", "", "")
	fs.BoolVar(&o.all, "all", false, "")
	fs.DurationVar(&o.podReady, "pod-ready", 0, "")
	fs.DurationVar(&o.drainAnswer, "drain-answer", 0, "")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return o, true, nil
	}
	if err != nil {
		return o, false, &usageError{err.Error()}
	}
	if len(pos) == 0 {
		return o, false, &usageError{"no subcommand"}
	}
	if pos[0] == "help" {
		return o, true, nil
	}
	o.verb = pos[0]
	if o.verb != "plan" && (o.all || o.podReady != 0 || o.drainAnswer != 0) {
		return o, false, &usageError{fmt.Sprintf("--all, --pod-ready and --drain-answer are for plan, not %s", o.verb)}
	}
	if (o.podReady != 0 || o.drainAnswer != 0) && !o.all {
		return o, false, &usageError{"--pod-ready and --drain-answer need --all"}
	}
	if o.podReady < 0 || o.drainAnswer < 0 {
		return o, false, &usageError{"--pod-ready and --drain-answer must not be negative"}
	}
	switch o.verb {
	case "status", "plan":
		if o.output != "text" && o.output != "json" {
			return o, false, &usageError{fmt.Sprintf("--output %q: want text or json", o.output)}
		}
	case "pause", "resume":
		if o.output != "text" {
			return o, false, &usageError{fmt.Sprintf("--output is for status and plan, not %s", o.verb)}
		}
	default:
		return o, false, &usageError{fmt.Sprintf("unknown subcommand %q", o.verb)}
	}
	switch len(pos) {
	case 1:
		return o, false, &usageError{o.verb + ": the StatefulSet's NAME is missing"}
	case 2:
		o.name = pos[1]
	default:
		return o, false, &usageError{fmt.Sprintf("%s takes one NAME, got %q", o.verb, pos[1:])}
	}
	return o, false, nil
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments, which it returns; after "--" everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// connectKubeconfig loads the kubeconfig as kubectl does.
func connectKubeconfig(kubeconfig, kubeContext, namespace string) (kubernetes.Interface, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	overrides.Context.Namespace = namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-stsroller"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return client, ns, nil
}
