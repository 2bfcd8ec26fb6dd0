package tier2

import (
	"testing"

	"tessera.dev/conformance/oracle"
)

func TestCompare(t *testing.T) {
	dev := func(req, name string) oracle.Device {
		return oracle.Device{Request: req, Driver: "gpu.tessera.dev", Pool: "n", Device: name}
	}
	fit := func(ds ...oracle.Device) oracle.Result { return oracle.Result{Fits: true, Devices: ds} }
	cases := []struct {
		name  string
		o, t  oracle.Result
		agree bool
	}{
		{"same devices, other order", fit(dev("a", "gpu-0"), dev("b", "gpu-1")), fit(dev("b", "gpu-1"), dev("a", "gpu-0")), true},
		{"other device", fit(dev("a", "gpu-0")), fit(dev("a", "gpu-1")), false},
		{"same device, other request", fit(dev("a", "gpu-0")), fit(dev("b", "gpu-0")), false},
		{"fits vs no fit", fit(dev("a", "gpu-0")), oracle.Result{}, false},
		{"no fit vs error", oracle.Result{}, oracle.Result{Error: "cel"}, true},
		{"error vs fits", oracle.Result{Error: "limit"}, fit(dev("a", "gpu-0")), false},
		{"shared flag differs", fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true}), fit(oracle.Device{Request: "a", Device: "gpu-0"}), false},
		{"consumed capacity differs", fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true, ConsumedCapacity: map[string]string{"memory": "10Gi"}}),
			fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true, ConsumedCapacity: map[string]string{"memory": "20Gi"}}), false},
	}
	for _, c := range cases {
		if got := Compare(c.o, c.t) == nil; got != c.agree {
			t.Errorf("%s: agree=%v, want %v (%v)", c.name, got, c.agree, Compare(c.o, c.t))
		}
	}
}

func TestCanonicalQuantities(t *testing.T) {
	a := oracle.Result{Devices: []oracle.Device{{ConsumedCapacity: map[string]string{"memory": "10737418240"}}}}
	b := oracle.Result{Devices: []oracle.Device{{ConsumedCapacity: map[string]string{"memory": "10Gi"}}}}
	canonical(&a)
	canonical(&b)
	if a.Devices[0].ConsumedCapacity["memory"] != b.Devices[0].ConsumedCapacity["memory"] {
		t.Fatalf("10737418240 and 10Gi canonicalize differently: %q vs %q", a.Devices[0].ConsumedCapacity["memory"], b.Devices[0].ConsumedCapacity["memory"])
	}
}
