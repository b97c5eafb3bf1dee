// Command soaktable prints the table of `make soak` and decides whether the
// soak passed, from the directory the recipe wrote: stats.jsonl (one JSON
// object a line, appended by each fault test at its end: e2e.FaultStats via
// $STSROLLER_SOAK_STATS), status.txt (one line "NAME EXIT" per command of the
// recipe: "e2e" for the fault suite's go test, "fuzz-list" for go test -list
// of the fuzz targets, "fuzz FuzzX" for each fuzz target), and e2e.log and
// fuzz-list.txt, those commands' output.
//
//	go run ./e2e/soaktable [-fuzztime 60s] DIR
//
// It exits 1 on any problem (see problems): a command that failed or left no
// status, an empty stats file, an expected test that did not run, failed,
// violated an invariant or completed no rollout, a test not in the expected
// list, and a fuzz target that could not be listed, was not run or failed.
// A soak cannot pass empty.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

func main() {
	fuzztime := flag.String("fuzztime", "", "how long each fuzz target ran, for the table")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: soaktable [-fuzztime D] DIR")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	r, probs := load(flag.Arg(0))
	probs = append(probs, problems(r, expected)...)
	printTable(os.Stdout, r, *fuzztime)
	if len(probs) > 0 {
		fmt.Printf("\nSOAK FAILED: %d problems\n", len(probs))
		for _, p := range probs {
			fmt.Println("  " + p)
		}
		os.Exit(1)
	}
	fmt.Println("\nsoak passed")
}

// printTable writes the per-test table, the totals and the fuzz targets.
func printTable(out io.Writer, r soakRun, fuzztime string) {
	all := append([]stats(nil), r.stats...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Test < all[j].Test })

	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "test\tseconds\trestarts\trequests\tfaults\tdeletions\tchecks\tviolated\trollouts\tresult\t")
	var tot stats
	tot.Faults = map[string]int{}
	for _, s := range all {
		res := "ok"
		if s.Failed {
			res = "FAIL"
		}
		n := 0
		for k, v := range s.Faults {
			n += v
			tot.Faults[k] += v
		}
		fmt.Fprintf(w, "%s\t%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.Test, s.Seconds, s.Restarts, s.Requests, n,
			s.Deletions, s.Checks, s.Violations, s.Completed, res)
		tot.Restarts += s.Restarts
		tot.Requests += s.Requests
		tot.Deletions += s.Deletions
		tot.Checks += s.Checks
		tot.Violations += s.Violations
		tot.Completed += s.Completed
	}
	n := 0
	for _, v := range tot.Faults {
		n += v
	}
	fmt.Fprintf(w, "TOTAL\t\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\t\n", tot.Restarts, tot.Requests, n, tot.Deletions, tot.Checks, tot.Violations, tot.Completed)
	w.Flush()

	fmt.Fprintln(out, "\nfaults injected by kind:")
	var kinds []string
	for k := range tot.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(out, "  %-14s %d\n", k, tot.Faults[k])
	}
	fmt.Fprintf(out, "restarts survived: %d\ninvariant checks: %d made, %d violated\nrollouts completed: %d\n",
		tot.Restarts, tot.Checks, tot.Violations, tot.Completed)

	each := ""
	if fuzztime != "" {
		each = ", " + fuzztime + " each"
	}
	fmt.Fprintf(out, "\nfuzz targets (%s%s):\n", fuzzPackage, each)
	for _, s := range r.steps {
		if f, ok := strings.CutPrefix(s.name, stepFuzz+" "); ok {
			res := "ok"
			if s.exit != 0 {
				res = fmt.Sprintf("FAIL (exit %d)", s.exit)
			}
			fmt.Fprintf(out, "  %s %s\n", f, res)
		}
	}
}
