package tier2

import (
	"fmt"
	"regexp"

	"tessera.dev/conformance/oracle"
)

// KnownDifference is a documented case where both allocators say "does not fit" but only
// one side calls it an error (docs/conformance.md, "What it found"). Any other one-sided
// error fails the run: the scheduler aborts scheduling of the pod on an error but keeps
// trying other nodes on "does not fit", so the difference strands pods.
type KnownDifference struct {
	ID  string
	Doc string
	// Upstream and Tessera match the error text of each side; "" means that side has no error.
	Upstream, Tessera *regexp.Regexp
}

// KnownDifferences is the whole list; every run prints how many cases each one covered.
var KnownDifferences = []KnownDifference{
	{
		ID:       "claim-limit-before-search",
		Doc:      "the scheduler errors before searching when the devices a claim needs at least exceed 32; Tessera answers does-not-fit with the stage that came up short",
		Upstream: regexp.MustCompile(`exceeds the claim limit of 32`),
	},
}

func matches(re *regexp.Regexp, errText string) bool {
	if re == nil {
		return errText == ""
	}
	return errText != "" && re.MatchString(errText)
}

// Known returns the ID of the documented difference that explains an error on one side
// only, or "" when none does.
func Known(o, t oracle.Result) string {
	for _, k := range KnownDifferences {
		if matches(k.Upstream, o.Error) && matches(k.Tessera, t.Error) {
			return k.ID
		}
	}
	return ""
}

// oneSidedError says whether exactly one side reported an error while neither fits.
func oneSidedError(o, t oracle.Result) error {
	if o.Fits || t.Fits || (o.Error != "") == (t.Error != "") {
		return nil
	}
	side := func(r oracle.Result) string {
		if r.Error != "" {
			return "error: " + r.Error
		}
		return "no fit: " + r.Failure
	}
	return fmt.Errorf("error on one side only: upstream (%s); Tessera (%s)", side(o), side(t))
}
