// Package report prints one JSON line per check, the shape scripts/run-conformance.mjs counts.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

type Line struct {
	Tier   int    `json:"tier"`
	Check  string `json:"check"`
	Status string `json:"status"` // pass | fail | skip
	Detail string `json:"detail,omitempty"`
	Count  int    `json:"count,omitempty"` // passes this line stands for (default 1)
}

var mu sync.Mutex

func emit(l Line) {
	mu.Lock()
	defer mu.Unlock()
	b, _ := json.Marshal(l)
	fmt.Fprintln(os.Stdout, string(b))
}

func Pass(tier int, check string) { emit(Line{Tier: tier, Check: check, Status: "pass"}) }

// PassWith reports a pass with a detail (a figure the run measured).
func PassWith(tier int, check, detail string) {
	emit(Line{Tier: tier, Check: check, Status: "pass", Detail: detail})
}

// PassN reports n passing checks of one kind in one line.
func PassN(tier int, check string, n int) {
	emit(Line{Tier: tier, Check: check, Status: "pass", Count: n})
}

func Skip(tier int, check, why string) {
	emit(Line{Tier: tier, Check: check, Status: "skip", Detail: why})
}
func Fail(tier int, check, format string, a ...any) {
	emit(Line{Tier: tier, Check: check, Status: "fail", Detail: fmt.Sprintf(format, a...)})
}

// Check reports pass when err is nil, else fail with the error.
func Check(tier int, check string, err error) bool {
	if err != nil {
		Fail(tier, check, "%v", err)
		return false
	}
	Pass(tier, check)
	return true
}
