// Package tier2 runs the scheduler's allocator (the oracle) and Tessera's allocator side by
// side on the same cases and reports every disagreement with the case that shows it.
package tier2

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"tessera.dev/conformance/oracle"
)

// Options of one run.
type Options struct {
	Adapter   []string // command that reads case JSON lines and answers result JSON lines
	OutDir    string   // where disagreeing cases are written for reproduction
	Emit      func(name string, err error)
	Collected func(name string, o, t oracle.Result)
}

// RunTessera streams the cases through the adapter process and returns its answers by name.
func RunTessera(ctx context.Context, adapter []string, cases []oracle.Case) (map[string]oracle.Result, error) {
	cmd := exec.CommandContext(ctx, adapter[0], adapter[1:]...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start Tessera adapter %q: %w", strings.Join(adapter, " "), err)
	}
	writeErr := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(in)
		enc := json.NewEncoder(w)
		for i := range cases {
			if err := enc.Encode(&cases[i]); err != nil {
				writeErr <- err
				return
			}
		}
		_ = w.Flush()
		writeErr <- in.Close()
	}()
	results := map[string]oracle.Result{}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r oracle.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			_ = cmd.Process.Kill()
			return nil, fmt.Errorf("adapter printed a line that is not a result: %.200s", sc.Text())
		}
		results[r.Name] = r
	}
	_, _ = io.Copy(io.Discard, out)
	if err := <-writeErr; err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("write cases to adapter: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("Tessera adapter failed: %w", err)
	}
	return results, nil
}

func key(d oracle.Device) string {
	cc := make([]string, 0, len(d.ConsumedCapacity))
	for k, v := range d.ConsumedCapacity {
		cc = append(cc, k+"="+v)
	}
	sort.Strings(cc)
	return fmt.Sprintf("%s=%s/%s/%s admin=%v shared=%v %s", d.Request, d.Driver, d.Pool, d.Device, d.AdminAccess, d.Shared, strings.Join(cc, ","))
}

func devicesString(ds []oracle.Device) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, key(d))
	}
	sort.Strings(out)
	return out
}

// Compare says how two answers differ, or nil when they agree: the same verdict on fit,
// the same kind of "does not fit" (an error on one side only is a difference unless a
// documented KnownDifference explains it; known then names it) and, when both fit, the
// same devices for the same requests (first-fit order is the scheduler's).
func Compare(o, t oracle.Result) (known string, err error) {
	switch {
	case o.Fits != t.Fits:
		why := func(r oracle.Result) string {
			if r.Error != "" {
				return "error: " + r.Error
			}
			if r.Fits {
				return fmt.Sprint(devicesString(r.Devices))
			}
			return "no fit: " + r.Failure
		}
		return "", fmt.Errorf("fit differs: upstream fits=%v (%s); Tessera fits=%v (%s)", o.Fits, why(o), t.Fits, why(t))
	case !o.Fits:
		if err := oneSidedError(o, t); err != nil {
			if k := Known(o, t); k != "" {
				return k, nil
			}
			return "", err
		}
		return "", nil
	}
	canonical(&o)
	canonical(&t)
	a, b := devicesString(o.Devices), devicesString(t.Devices)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		return "", fmt.Errorf("first-fit devices differ: upstream %v, Tessera %v", a, b)
	}
	return "", nil
}

// canonical rewrites quantities as exact decimal values, so "10Gi" and "10737418240" match.
func canonical(r *oracle.Result) {
	for i := range r.Devices {
		for k, v := range r.Devices[i].ConsumedCapacity {
			if q, err := resource.ParseQuantity(v); err == nil {
				r.Devices[i].ConsumedCapacity[k] = q.AsDec().String()
			}
		}
	}
}

// Summary of a run.
type Summary struct {
	Agreed, Disagreed, BothFit, BothNoFit int
	// Known counts the one-sided errors each KnownDifference explained (by ID).
	Known map[string]int
	// Coverage counts, per CoverageFeatures entry, the agreeing "fits" cases that used it.
	Coverage map[string]int
}

// KnownTotal is the number of cases a documented difference explained.
func (s Summary) KnownTotal() int {
	n := 0
	for _, v := range s.Known {
		n += v
	}
	return n
}

func writeCase(dir, name string, v any) {
	if dir == "" {
		return
	}
	_ = os.MkdirAll(dir, 0o755)
	b, _ := json.MarshalIndent(v, "", "  ")
	_ = os.WriteFile(filepath.Join(dir, name+".json"), b, 0o644)
}

// Run compares all cases; disagreeing cases are written to OutDir/<name>.json, cases a
// known difference explains to OutDir/known/<id>/<name>.json.
func Run(ctx context.Context, opt Options, cases []oracle.Case) (Summary, error) {
	s := Summary{Known: map[string]int{}, Coverage: map[string]int{}}
	tess, err := RunTessera(ctx, opt.Adapter, cases)
	if err != nil {
		return s, err
	}
	for i := range cases {
		c := &cases[i]
		// The scheduler gives a node's DRA filter 10 s (DRASchedulerFilterTimeout); so do we.
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		o := oracle.Allocate(octx, c)
		cancel()
		t, ok := tess[c.Name]
		var diff error
		known := ""
		if !ok {
			diff = fmt.Errorf("Tessera adapter gave no answer")
		} else {
			known, diff = Compare(o, t)
		}
		if opt.Collected != nil && ok {
			opt.Collected(c.Name, o, t)
		}
		switch {
		case diff != nil:
			s.Disagreed++
			writeCase(opt.OutDir, c.Name, map[string]any{"case": c, "upstream": o, "tessera": t, "diff": diff.Error()})
		case o.Fits:
			s.Agreed++
			s.BothFit++
			for _, f := range Uses(c, o) {
				s.Coverage[f]++
			}
		default:
			s.Agreed++
			s.BothNoFit++
			if known != "" {
				s.Known[known]++
				if opt.OutDir != "" {
					writeCase(filepath.Join(opt.OutDir, "known", known), c.Name, map[string]any{"case": c, "upstream": o, "tessera": t})
				}
			}
		}
		if opt.Emit != nil {
			opt.Emit(c.Name, diff)
		}
	}
	return s, nil
}
