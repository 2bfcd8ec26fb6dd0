// Package oracle allocates one claim with the allocator the kube-scheduler runs
// (k8s.io/dynamic-resource-allocation/structured), from plain JSON objects. It is the
// reference Tessera's allocator is compared with; nothing here re-implements allocation.
package oracle

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
)

// Case is one allocation problem: a node's slices, the classes, the claims already
// allocated (their status.allocation is what counts) and the claim to allocate.
type Case struct {
	Name            string                      `json:"name"`
	Node            string                      `json:"node"`
	Slices          []resourceapi.ResourceSlice `json:"slices"`
	DeviceClasses   []resourceapi.DeviceClass   `json:"deviceClasses"`
	AllocatedClaims []resourceapi.ResourceClaim `json:"allocatedClaims"`
	Claim           resourceapi.ResourceClaim   `json:"claim"`
}

// Device is one chosen device, the fields both allocators must agree on.
type Device struct {
	Request          string            `json:"request"`
	Driver           string            `json:"driver"`
	Pool             string            `json:"pool"`
	Device           string            `json:"device"`
	AdminAccess      bool              `json:"adminAccess,omitempty"`
	Shared           bool              `json:"shared,omitempty"` // shareID set
	ShareID          string            `json:"-"`                // random per allocation: not compared
	ConsumedCapacity map[string]string `json:"consumedCapacity,omitempty"`
}

// Result is the answer for one case. Error is set when the input is invalid (the
// scheduler would report an error, not "does not fit").
type Result struct {
	Name    string   `json:"name"`
	Fits    bool     `json:"fits"`
	Devices []Device `json:"devices,omitempty"`
	Error   string   `json:"error,omitempty"`
	Failure string   `json:"failure,omitempty"` // why it does not fit, in the allocator's words
	Nanos   int64    `json:"ns"`
}

// Features are the DRA feature gates that matter for a GPU node agent. AdminAccess is on
// too because the API has the field; Tessera implements it.
var Features = structured.Features{
	AdminAccess:          true,
	PrioritizedList:      true,
	PartitionableDevices: true,
	ConsumableCapacity:   true,
	DeviceTaints:         true,
}

var celCache = cel.NewCache(1000, cel.Features{EnableConsumableCapacity: true})

type classLister map[string]*resourceapi.DeviceClass

func (l classLister) List() ([]*resourceapi.DeviceClass, error) {
	out := make([]*resourceapi.DeviceClass, 0, len(l))
	for _, c := range l {
		out = append(out, c)
	}
	return out, nil
}

func (l classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	if c, ok := l[name]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("deviceclass %q not found", name)
}

// AllocatedState turns allocated claims into what the scheduler tracks: exclusive
// devices, shared device IDs and the capacity they consume. Admin-access results do
// not make a device unavailable.
func AllocatedState(claims []resourceapi.ResourceClaim) structured.AllocatedState {
	st := structured.AllocatedState{
		AllocatedDevices:         sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	for i := range claims {
		alloc := claims[i].Status.Allocation
		if alloc == nil {
			continue
		}
		for _, r := range alloc.Devices.Results {
			if r.AdminAccess != nil && *r.AdminAccess {
				continue
			}
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID == nil {
				st.AllocatedDevices.Insert(id)
				continue
			}
			st.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
			if r.ConsumedCapacity != nil {
				cc := map[resourceapi.QualifiedName]resource.Quantity{}
				for k, v := range r.ConsumedCapacity {
					cc[k] = v
				}
				st.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, cc))
			}
		}
	}
	return st
}

// Allocate runs the scheduler's allocator on one case. The time covers building the
// allocator and allocating, as the scheduler pays both per node and claim.
func Allocate(ctx context.Context, c *Case) Result {
	res := Result{Name: c.Name}
	classes := classLister{}
	for i := range c.DeviceClasses {
		classes[c.DeviceClasses[i].Name] = &c.DeviceClasses[i]
	}
	slices := make([]*resourceapi.ResourceSlice, 0, len(c.Slices))
	for i := range c.Slices {
		slices = append(slices, &c.Slices[i])
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.Node}}
	claim := c.Claim.DeepCopy()
	applyDefaults(claim)
	start := time.Now()
	a, err := structured.NewAllocator(ctx, Features, AllocatedState(c.AllocatedClaims), classes, slices, celCache)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	out, err := a.Allocate(ctx, node, []*resourceapi.ResourceClaim{claim})
	res.Nanos = time.Since(start).Nanoseconds()
	if err != nil {
		if errors.Is(err, structured.ErrFailedAllocationOnNode) {
			res.Failure = err.Error()
			return res // does not fit on this node
		}
		res.Error = err.Error()
		return res
	}
	if len(out) == 0 {
		return res
	}
	res.Fits = true
	for _, r := range out[0].Devices.Results {
		d := Device{Request: r.Request, Driver: r.Driver, Pool: r.Pool, Device: r.Device,
			AdminAccess: r.AdminAccess != nil && *r.AdminAccess, Shared: r.ShareID != nil}
		if r.ShareID != nil {
			d.ShareID = string(*r.ShareID)
		}
		if len(r.ConsumedCapacity) > 0 {
			d.ConsumedCapacity = map[string]string{}
			for k, v := range r.ConsumedCapacity {
				d.ConsumedCapacity[string(k)] = v.String()
			}
		}
		res.Devices = append(res.Devices, d)
	}
	return res
}

// applyDefaults does what the API server's defaulting does to a claim before the scheduler
// sees it (users' YAML leaves these out): allocationMode ExactCount, count 1, toleration
// operator Equal.
func applyDefaults(c *resourceapi.ResourceClaim) {
	exact := func(mode *resourceapi.DeviceAllocationMode, count *int64, tols []resourceapi.DeviceToleration) {
		if *mode == "" {
			*mode = resourceapi.DeviceAllocationModeExactCount
		}
		if *mode == resourceapi.DeviceAllocationModeExactCount && *count == 0 {
			*count = 1
		}
		for i := range tols {
			if tols[i].Operator == "" {
				tols[i].Operator = resourceapi.DeviceTolerationOpEqual
			}
		}
	}
	for i := range c.Spec.Devices.Requests {
		r := &c.Spec.Devices.Requests[i]
		if r.Exactly != nil {
			exact(&r.Exactly.AllocationMode, &r.Exactly.Count, r.Exactly.Tolerations)
		}
		for j := range r.FirstAvailable {
			s := &r.FirstAvailable[j]
			exact(&s.AllocationMode, &s.Count, s.Tolerations)
		}
	}
}
