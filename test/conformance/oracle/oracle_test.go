package oracle

import (
	"context"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func slice(node string, devices ...string) resourceapi.ResourceSlice {
	s := resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: node + "-s"}}
	s.Spec.Driver, s.Spec.NodeName = "gpu.tessera.dev", &node
	s.Spec.Pool = resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1}
	for _, d := range devices {
		s.Spec.Devices = append(s.Spec.Devices, resourceapi.Device{Name: d})
	}
	return s
}

func class() resourceapi.DeviceClass {
	return resourceapi.DeviceClass{ObjectMeta: metav1.ObjectMeta{Name: "any"}}
}

func claim(count int64) resourceapi.ResourceClaim {
	c := resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "c", Namespace: "d", UID: "u"}}
	c.Spec.Devices.Requests = []resourceapi.DeviceRequest{{Name: "r", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "any", Count: count}}}
	return c
}

// The oracle fills in API defaults (mode, count), honours prior allocations, and reports
// "does not fit" as such, not as an error.
func TestAllocate(t *testing.T) {
	ctx := context.Background()
	base := Case{Node: "n", Slices: []resourceapi.ResourceSlice{slice("n", "gpu-0", "gpu-1")}, DeviceClasses: []resourceapi.DeviceClass{class()}}

	c := base
	c.Claim = claim(0) // defaulted to ExactCount 1
	r := Allocate(ctx, &c)
	if !r.Fits || len(r.Devices) != 1 || r.Devices[0].Device != "gpu-0" || r.Error != "" {
		t.Fatalf("one device: %+v", r)
	}

	prior := claim(1)
	prior.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
		{Request: "r", Driver: "gpu.tessera.dev", Pool: "n", Device: "gpu-0"}}}}
	c.AllocatedClaims = []resourceapi.ResourceClaim{prior}
	if r := Allocate(ctx, &c); !r.Fits || r.Devices[0].Device != "gpu-1" {
		t.Fatalf("with gpu-0 allocated: %+v", r)
	}

	c.Claim = claim(2)
	if r := Allocate(ctx, &c); r.Fits || r.Error != "" {
		t.Fatalf("two devices with one free must not fit (without error): %+v", r)
	}
}
