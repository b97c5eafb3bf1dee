// Command soaktable prints the table of `make soak` from the counts the
// fault suite appends to $STSROLLER_SOAK_STATS (one JSON object a line) and
// the fuzz results the Makefile appends (lines "fuzz NAME DURATION ok|FAIL").
//
//	go run ./e2e/soaktable STATS_FILE [FUZZ_FILE]
//
// It exits 1 when an invariant was violated, a test failed or a fuzz target
// failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

type stats struct {
	Test       string         `json:"test"`
	Faults     map[string]int `json:"faults"`
	Requests   int            `json:"requests"`
	Restarts   int            `json:"restarts"`
	Checks     int            `json:"checks"`
	Violations int            `json:"violations"`
	Deletions  int            `json:"deletions"`
	Completed  int            `json:"completed"`
	Failed     bool           `json:"failed"`
	Seconds    float64        `json:"seconds"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: soaktable STATS_FILE [FUZZ_FILE]")
		os.Exit(2)
	}
	bad := false
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var all []stats
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s stats
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[1], err)
			bad = true
			continue
		}
		all = append(all, s)
	}
	f.Close()
	sort.Slice(all, func(i, j int) bool { return all[i].Test < all[j].Test })

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "test\tseconds\trestarts\trequests\tfaults\tdeletions\tchecks\tviolated\trollouts\tresult\t")
	var tot stats
	tot.Faults = map[string]int{}
	for _, s := range all {
		res := "ok"
		if s.Failed {
			res, bad = "FAIL", true
		}
		if s.Violations > 0 {
			bad = true
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

	fmt.Println("\nfaults injected by kind:")
	var kinds []string
	for k := range tot.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Printf("  %-14s %d\n", k, tot.Faults[k])
	}
	fmt.Printf("restarts survived: %d\ninvariant checks: %d made, %d violated\nrollouts completed: %d\n",
		tot.Restarts, tot.Checks, tot.Violations, tot.Completed)

	if len(os.Args) > 2 {
		if data, err := os.ReadFile(os.Args[2]); err == nil {
			fmt.Println("\nfuzz targets (./policy/):")
			for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				if line == "" {
					continue
				}
				fmt.Println("  " + line)
				if strings.HasSuffix(line, "FAIL") {
					bad = true
				}
			}
		}
	}
	if bad {
		fmt.Println("\nSOAK FAILED")
		os.Exit(1)
	}
}
