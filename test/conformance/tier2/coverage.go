package tier2

import (
	"strings"

	resourceapi "k8s.io/api/resource/v1"

	"tessera.dev/conformance/oracle"
)

// CoverageFeatures are the allocator features whose agreement Tier 2 must show on cases
// that fit (a "does not fit" agreement says little about a feature). Each is counted only
// when the chosen allocation really used it, as Uses decides.
var CoverageFeatures = []string{
	"counters", "firstAvailable", "All", "adminAccess", "matchAttribute",
	"distinctAttribute", "consumableCapacity", "taints", "priorClaims",
}

// MinCoverage is the number of agreeing "fits" cases each feature needs per run.
const MinCoverage = 50

// Uses lists the features an agreeing "fits" case exercised:
//   - counters: a chosen device consumes shared counters (partitionable GPU or MIG placement);
//   - firstAvailable: a request was answered by one of its subrequests;
//   - All: a request (or the chosen subrequest) in allocation mode All;
//   - adminAccess: a result with admin access;
//   - matchAttribute / distinctAttribute: the claim holds that constraint;
//   - consumableCapacity: a result consumed capacity of a shared device;
//   - taints: a chosen device carries a taint (a toleration let it through);
//   - priorClaims: claims were already allocated on the node.
func Uses(c *oracle.Case, o oracle.Result) []string {
	if !o.Fits {
		return nil
	}
	devices := map[string]*resourceapi.Device{}
	for i := range c.Slices {
		for j := range c.Slices[i].Spec.Devices {
			d := &c.Slices[i].Spec.Devices[j]
			devices[d.Name] = d
		}
	}
	modes := map[string]resourceapi.DeviceAllocationMode{}
	for _, r := range c.Claim.Spec.Devices.Requests {
		if r.Exactly != nil {
			modes[r.Name] = r.Exactly.AllocationMode
		}
		for _, s := range r.FirstAvailable {
			modes[r.Name+"/"+s.Name] = s.AllocationMode
		}
	}
	used := map[string]bool{}
	for _, d := range o.Devices {
		if dev := devices[d.Device]; dev != nil {
			used["counters"] = used["counters"] || len(dev.ConsumesCounters) > 0
			used["taints"] = used["taints"] || len(dev.Taints) > 0
		}
		used["firstAvailable"] = used["firstAvailable"] || strings.Contains(d.Request, "/")
		used["All"] = used["All"] || modes[d.Request] == resourceapi.DeviceAllocationModeAll
		used["adminAccess"] = used["adminAccess"] || d.AdminAccess
		used["consumableCapacity"] = used["consumableCapacity"] || len(d.ConsumedCapacity) > 0
	}
	for _, con := range c.Claim.Spec.Devices.Constraints {
		used["matchAttribute"] = used["matchAttribute"] || con.MatchAttribute != nil
		used["distinctAttribute"] = used["distinctAttribute"] || con.DistinctAttribute != nil
	}
	used["priorClaims"] = len(c.AllocatedClaims) > 0
	var out []string
	for _, f := range CoverageFeatures {
		if used[f] {
			out = append(out, f)
		}
	}
	return out
}
