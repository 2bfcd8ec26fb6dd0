// tessera-conformance drives Tessera with the code Kubernetes runs (imported by module):
//
//	allocator  Tier 2: scheduler allocator vs Tessera's on examples × fixtures and random cases
//	kubelet    Tier 1: the kubelet's gRPC clients against a running `tessera agent`
//	epp        Tier 1: an ext_proc client from envoy's Go API module against a running `tessera epp`
//	gen        print seeded random cases as JSON lines
//	oracle     allocate JSON-line cases from stdin with the scheduler's allocator
//	replay     run both allocators again on saved disagreement files (bin/out/disagreements/*.json)
//
// Every check prints one JSON line {tier, check, status, detail}; the exit code is 1 when
// any check failed.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"tessera.dev/conformance/epp"
	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/oracle"
	"tessera.dev/conformance/report"
	"tessera.dev/conformance/tier2"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tessera-conformance allocator|kubelet|epp|gen|oracle|replay [flags]")
		os.Exit(2)
	}
	// A reader that went away must not kill us before we stop what we started.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var failed bool
	switch os.Args[1] {
	case "allocator":
		failed = runAllocator(ctx, os.Args[2:])
	case "kubelet":
		failed = kubelet.Main(ctx, os.Args[2:])
	case "epp":
		failed = epp.Main(ctx, os.Args[2:])
	case "gen":
		runGen(os.Args[2:])
	case "oracle":
		runOracle(ctx, os.Args[2:])
	case "replay":
		failed = runReplay(ctx, os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

func runGen(args []string) {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	seed := fs.Uint64("seed", 1, "seed")
	count := fs.Int("count", 1000, "cases")
	_ = fs.Parse(args)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for i := 0; i < *count; i++ {
		c := gen.Case(*seed, i)
		_ = enc.Encode(&c)
	}
}

// runOracle answers each case line with a result line; with -repeat N it allocates each
// case N times and reports the median time (for the bench).
func runOracle(ctx context.Context, args []string) {
	fs := flag.NewFlagSet("oracle", flag.ExitOnError)
	repeat := fs.Int("repeat", 1, "allocations per case; ns is the median")
	_ = fs.Parse(args)
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for sc.Scan() {
		var c oracle.Case
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			fmt.Fprintf(os.Stderr, "oracle: bad case line: %v\n", err)
			os.Exit(1)
		}
		var r oracle.Result
		times := make([]int64, 0, *repeat)
		for k := 0; k < *repeat; k++ {
			r = oracle.Allocate(ctx, &c)
			times = append(times, r.Nanos)
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		r.Nanos = times[len(times)/2]
		_ = enc.Encode(&r)
	}
}

func runAllocator(ctx context.Context, args []string) bool {
	fs := flag.NewFlagSet("allocator", flag.ExitOnError)
	repo := fs.String("repo", ".", "Tessera checkout (built)")
	seed := fs.Uint64("seed", 7, "seed of the random cases")
	count := fs.Int("count", 1000, "random cases")
	adapter := fs.String("adapter", "node test/conformance/adapter/tessera-allocate.mjs", "command answering case lines")
	fixtures := fs.String("fixtures", "h100-sxm-8x,a100-80gb-mig,l40s-1x,workstation-2numa-4gpu", "fixture nodes for the examples")
	out := fs.String("out", "", "directory for disagreeing cases")
	verbose := fs.Bool("each", false, "one line per case instead of per group")
	minCoverage := fs.Int("min-coverage", tier2.MinCoverage, "agreeing fits cases each feature needs among the random cases")
	_ = fs.Parse(args)
	failed := false
	argv := strings.Fields(*adapter)

	// Examples × fixtures.
	exCases, errs := tier2.ExampleCases(*repo, strings.Split(*fixtures, ","))
	for _, err := range errs {
		report.Fail(2, "examples-setup", "%v", err)
		failed = true
	}
	if len(exCases) > 0 {
		s, err := tier2.Run(ctx, tier2.Options{Adapter: argv, OutDir: *out, Emit: func(name string, err error) {
			if err != nil {
				failed = true
			}
			report.Check(2, name, err)
		}}, exCases)
		if err != nil {
			report.Fail(2, "examples", "%v", err)
			failed = true
		}
		fmt.Fprintf(os.Stderr, "tier2 examples: %d agreed (%d fit, %d no fit of which %d a known difference), %d disagreed\n", s.Agreed, s.BothFit, s.BothNoFit, s.KnownTotal(), s.Disagreed)
		reportKnown("examples", s)
	}

	// Seeded random cases.
	start := time.Now()
	cases := make([]oracle.Case, 0, *count)
	for i := 0; i < *count; i++ {
		cases = append(cases, gen.Case(*seed, i))
	}
	var firstFails []string
	s, err := tier2.Run(ctx, tier2.Options{Adapter: argv, OutDir: *out, Emit: func(name string, err error) {
		if err != nil {
			failed = true
			if *verbose || len(firstFails) < 20 {
				report.Fail(2, "random/"+name, "%v", err)
			}
			firstFails = append(firstFails, name)
		} else if *verbose {
			report.Pass(2, "random/"+name)
		}
	}}, cases)
	if err != nil {
		report.Fail(2, "random", "%v", err)
		return true
	}
	if !*verbose {
		// One line stands for all agreeing cases: honest counts without 1,000 lines.
		report.PassN(2, fmt.Sprintf("random (seed %d, %d cases)", *seed, len(cases)), s.Agreed)
	}
	fmt.Fprintf(os.Stderr, "tier2 random (seed %d): %d cases, %d agreed (%d fit, %d no fit of which %d a known difference), %d disagreed, %.1fs\n",
		*seed, len(cases), s.Agreed, s.BothFit, s.BothNoFit, s.KnownTotal(), s.Disagreed, time.Since(start).Seconds())
	reportKnown("random", s)
	return reportCoverage(s, *minCoverage) || failed
}

// reportKnown prints how many cases each documented difference explained (0 included).
func reportKnown(group string, s tier2.Summary) {
	for _, k := range tier2.KnownDifferences {
		report.PassWith(2, fmt.Sprintf("%s known-difference/%s", group, k.ID), fmt.Sprintf("%d cases (documented)", s.Known[k.ID]))
	}
}

// reportCoverage prints, per feature, the agreeing "fits" cases that used it, and fails
// each feature below min.
func reportCoverage(s tier2.Summary, min int) (failed bool) {
	fmt.Fprintf(os.Stderr, "tier2 coverage (agreeing fits cases of %d):", s.BothFit)
	for _, f := range tier2.CoverageFeatures {
		fmt.Fprintf(os.Stderr, " %s %d", f, s.Coverage[f])
	}
	fmt.Fprintln(os.Stderr)
	for _, f := range tier2.CoverageFeatures {
		detail := fmt.Sprintf("%d agreeing fits cases (min %d)", s.Coverage[f], min)
		if s.Coverage[f] < min {
			report.Fail(2, "coverage/"+f, "%s; tune gen/gen.go or raise --count", detail)
			failed = true
		} else {
			report.PassWith(2, "coverage/"+f, detail)
		}
	}
	return failed
}

// runReplay re-runs both allocators on saved disagreement files and prints both answers.
func runReplay(ctx context.Context, files []string) bool {
	failed := false
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return true
		}
		var saved struct {
			Case oracle.Case `json:"case"`
		}
		if err := json.Unmarshal(raw, &saved); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f, err)
			return true
		}
		o := oracle.Allocate(ctx, &saved.Case)
		t, err := tier2.RunTessera(ctx, strings.Fields("node test/conformance/adapter/tessera-allocate.mjs"), []oracle.Case{saved.Case})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return true
		}
		known, diff := tier2.Compare(o, t[saved.Case.Name])
		ob, _ := json.Marshal(o)
		tb, _ := json.Marshal(t[saved.Case.Name])
		fmt.Printf("%s\n  upstream: %s\n  tessera:  %s\n  diff:     %v %s\n", f, ob, tb, diff, known)
		failed = failed || diff != nil
	}
	return failed
}
