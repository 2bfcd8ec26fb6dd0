package gen

import (
	"encoding/json"
	"testing"
)

// The same seed gives byte-identical cases: disagreements must be reproducible.
func TestCaseDeterministic(t *testing.T) {
	for i := 0; i < 50; i++ {
		a, _ := json.Marshal(Case(3, i))
		b, _ := json.Marshal(Case(3, i))
		if string(a) != string(b) {
			t.Fatalf("case %d differs between two generations", i)
		}
	}
}

// Generated inventories are what the API server would accept for the limits that matter.
func TestInventoryShape(t *testing.T) {
	for i := 0; i < 200; i++ {
		c := Case(5, i)
		sets := map[string]bool{}
		for _, s := range c.Slices {
			for _, cs := range s.Spec.SharedCounters {
				sets[cs.Name] = true
			}
		}
		names := map[string]bool{}
		for _, s := range c.Slices {
			if len(s.Spec.Devices) > 64 {
				t.Fatalf("case %d: slice %s has %d devices (> 64 with counters)", i, s.Name, len(s.Spec.Devices))
			}
			if int(s.Spec.Pool.ResourceSliceCount) != len(c.Slices) {
				t.Fatalf("case %d: resourceSliceCount %d, %d slices", i, s.Spec.Pool.ResourceSliceCount, len(c.Slices))
			}
			for _, d := range s.Spec.Devices {
				if names[d.Name] {
					t.Fatalf("case %d: duplicate device %s", i, d.Name)
				}
				names[d.Name] = true
				for _, cc := range d.ConsumesCounters {
					if !sets[cc.CounterSet] {
						t.Fatalf("case %d: device %s consumes unknown counter set %s", i, d.Name, cc.CounterSet)
					}
				}
			}
		}
		if n := len(c.Claim.Spec.Devices.Requests); n < 1 || n > 4 {
			t.Fatalf("case %d: %d requests", i, n)
		}
	}
}
