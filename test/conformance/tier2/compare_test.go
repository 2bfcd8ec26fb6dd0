package tier2

import (
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"

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
		{"no fit vs error", oracle.Result{}, oracle.Result{Error: "cel"}, false},
		{"error vs no fit", oracle.Result{Error: "cel: no such key"}, oracle.Result{}, false},
		{"both error", oracle.Result{Error: "cel: no such key"}, oracle.Result{Error: "cel-error: no such key"}, true},
		{"known: claim limit before search", oracle.Result{Error: "claim default/c, request r0: adding 45 devices exceeds the claim limit of 32"}, oracle.Result{Failure: "only 17 are free"}, true},
		{"claim limit text on the wrong side", oracle.Result{}, oracle.Result{Error: "exceeds the claim limit of 32"}, false},
		{"error vs fits", oracle.Result{Error: "limit"}, fit(dev("a", "gpu-0")), false},
		{"shared flag differs", fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true}), fit(oracle.Device{Request: "a", Device: "gpu-0"}), false},
		{"consumed capacity differs", fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true, ConsumedCapacity: map[string]string{"memory": "10Gi"}}),
			fit(oracle.Device{Request: "a", Device: "gpu-0", Shared: true, ConsumedCapacity: map[string]string{"memory": "20Gi"}}), false},
	}
	for _, c := range cases {
		_, err := Compare(c.o, c.t)
		if got := err == nil; got != c.agree {
			t.Errorf("%s: agree=%v, want %v (%v)", c.name, got, c.agree, err)
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

func TestKnownNamed(t *testing.T) {
	known, err := Compare(oracle.Result{Error: "adding 33 devices exceeds the claim limit of 32"}, oracle.Result{})
	if err != nil || known != "claim-limit-before-search" {
		t.Fatalf("known=%q err=%v, want claim-limit-before-search", known, err)
	}
}

// Uses counts a feature only when the allocation used it.
func TestUses(t *testing.T) {
	c := &oracle.Case{Slices: []resourceapi.ResourceSlice{{Spec: resourceapi.ResourceSliceSpec{Devices: []resourceapi.Device{
		{Name: "gpu-0", ConsumesCounters: []resourceapi.DeviceCounterConsumption{{CounterSet: "s"}}},
		{Name: "gpu-1", Taints: []resourceapi.DeviceTaint{{Key: "k", Effect: resourceapi.DeviceTaintEffectNoSchedule}}},
		{Name: "gpu-2"},
	}}}}}
	c.Claim.Spec.Devices.Requests = []resourceapi.DeviceRequest{
		{Name: "a", Exactly: &resourceapi.ExactDeviceRequest{AllocationMode: resourceapi.DeviceAllocationModeAll}},
		{Name: "b", FirstAvailable: []resourceapi.DeviceSubRequest{{Name: "s0"}, {Name: "s1", AllocationMode: resourceapi.DeviceAllocationModeAll}}},
	}
	got := func(ds ...oracle.Device) string {
		return strings.Join(Uses(c, oracle.Result{Fits: true, Devices: ds}), ",")
	}
	if g := got(oracle.Device{Request: "a", Device: "gpu-2"}); g != "All" {
		t.Errorf("exact All on a plain device: %q", g)
	}
	if g := got(oracle.Device{Request: "b/s0", Device: "gpu-0"}); g != "counters,firstAvailable" {
		t.Errorf("subrequest s0 on a counter device: %q", g)
	}
	if g := got(oracle.Device{Request: "b/s1", Device: "gpu-1", AdminAccess: true, ConsumedCapacity: map[string]string{"memory": "10Gi"}}); g != "firstAvailable,All,adminAccess,consumableCapacity,taints" {
		t.Errorf("subrequest s1 (All) on a tainted device: %q", g)
	}
	if g := Uses(c, oracle.Result{Devices: []oracle.Device{{Request: "a", Device: "gpu-0"}}}); g != nil {
		t.Errorf("a case that does not fit covers nothing: %v", g)
	}
}
