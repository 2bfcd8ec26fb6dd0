// Package gen builds seeded random allocation cases shaped like the slices Tessera
// publishes: whole GPUs, static MIG devices, partitionable GPUs (shared counters per
// physical GPU, every MIG placement as a device), shared GPUs (consumable capacity),
// taints; claims with 1-4 requests, CEL selectors over attributes and capacity,
// firstAvailable, constraints; and prior allocations made by the oracle itself so the
// allocated state is always consistent.
package gen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"tessera.dev/conformance/oracle"
)

const Driver = "gpu.tessera.dev"

type product struct {
	name, arch, cc string
	memGi          int64
	mig            bool
}

var products = []product{
	{"NVIDIA H100 80GB HBM3", "Hopper", "9.0.0", 80, true},
	{"NVIDIA A100-SXM4-80GB", "Ampere", "8.0.0", 80, true},
	{"NVIDIA A100-SXM4-40GB", "Ampere", "8.0.0", 40, true},
	{"NVIDIA L40S", "Ada Lovelace", "8.9.0", 48, false},
}

// migProfile: memory slices (of 8) and compute slices (of 7), valid start slices.
type migProfile struct {
	name   string
	mem    int
	sm     int
	starts []int
}

var migProfiles = []migProfile{
	{"1g", 1, 1, []int{0, 1, 2, 3, 4, 5, 6}},
	{"2g", 2, 2, []int{0, 2, 4}},
	{"3g", 4, 3, []int{0, 4}},
	{"4g", 4, 4, []int{0}},
	{"7g", 8, 7, []int{0}},
}

// DeviceClasses are the two classes of the contract.
func DeviceClasses() []resourceapi.DeviceClass {
	mk := func(name, typ string) resourceapi.DeviceClass {
		return resourceapi.DeviceClass{
			TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "DeviceClass"},
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("class-" + typ)},
			Spec: resourceapi.DeviceClassSpec{Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
				Expression: fmt.Sprintf(`device.driver == %q && device.attributes[%q].type == %q`, Driver, Driver, typ)}}}},
		}
	}
	return []resourceapi.DeviceClass{mk("gpu.tessera.dev", "gpu"), mk("mig.tessera.dev", "mig")}
}

func str(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
func num(i int64) resourceapi.DeviceAttribute  { return resourceapi.DeviceAttribute{IntValue: &i} }
func ver(v string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{VersionValue: &v} }
func qty(s string) resource.Quantity           { return resource.MustParse(s) }

type gpuInfo struct {
	minor int
	p     product
	numa  int64
	root  string
}

// Inventory returns the slices of one random node (pool = node name).
func Inventory(r *rand.Rand, node string) []resourceapi.ResourceSlice {
	n := 1 + r.IntN(8)
	var devices []resourceapi.Device
	var counterSets []resourceapi.CounterSet
	mixed := r.IntN(3) == 0
	base := products[r.IntN(len(products))]
	for i := 0; i < n; i++ {
		p := base
		if mixed {
			p = products[r.IntN(len(products))]
		}
		g := gpuInfo{minor: i, p: p, numa: int64(i * 2 / n), root: fmt.Sprintf("pci0000:%02x", 0x10*(i/2+1))}
		mode := r.IntN(10)
		switch {
		case p.mig && mode < 3: // static MIG: some existing MIG devices, no whole GPU
			devices = append(devices, staticMig(r, g)...)
		case p.mig && mode < 5: // partitionable (dynamic MIG)
			ds, cs := partitionable(g)
			devices = append(devices, ds...)
			counterSets = append(counterSets, cs)
		default:
			devices = append(devices, wholeGPU(r, g))
		}
	}
	var slices []resourceapi.ResourceSlice
	const per = 64
	count := (len(devices) + per - 1) / per
	if len(counterSets) > 0 {
		count++
	}
	mkSlice := func(i int) resourceapi.ResourceSlice {
		return resourceapi.ResourceSlice{
			TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceSlice"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", node, "gpu.tessera.dev", i), UID: types.UID(fmt.Sprintf("slice-%d", i))},
			Spec: resourceapi.ResourceSliceSpec{Driver: Driver, NodeName: ptr.To(node),
				Pool: resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: int64(count)}},
		}
	}
	i := 0
	if len(counterSets) > 0 {
		s := mkSlice(i)
		s.Spec.SharedCounters = counterSets
		slices = append(slices, s)
		i++
	}
	for off := 0; off < len(devices); off += per {
		s := mkSlice(i)
		s.Spec.Devices = devices[off:min(off+per, len(devices))]
		slices = append(slices, s)
		i++
	}
	return slices
}

func commonAttrs(g gpuInfo, typ string) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	return map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		"type":                            str(typ),
		"productName":                     str(g.p.name),
		"architecture":                    str(g.p.arch),
		"cudaComputeCapability":           ver(g.p.cc),
		"driverVersion":                   ver("580.65.6"),
		"numaNode":                        num(g.numa),
		"uuid":                            str(fmt.Sprintf("GPU-%08x-0000-0000-0000-%012x", g.minor, g.minor)),
		"resource.kubernetes.io/pcieRoot": str(g.root),
	}
}

func wholeGPU(r *rand.Rand, g gpuInfo) resourceapi.Device {
	d := resourceapi.Device{Name: fmt.Sprintf("gpu-%d", g.minor), Attributes: commonAttrs(g, "gpu"),
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: qty(fmt.Sprintf("%dGi", g.p.memGi))}}}
	if r.IntN(6) == 0 { // a shared GPU: consumable memory in 10Gi steps
		d.AllowMultipleAllocations = ptr.To(true)
		d.Capacity["memory"] = resourceapi.DeviceCapacity{Value: qty(fmt.Sprintf("%dGi", g.p.memGi)),
			RequestPolicy: &resourceapi.CapacityRequestPolicy{Default: ptr.To(qty("10Gi")),
				ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: ptr.To(qty("10Gi")), Step: ptr.To(qty("10Gi"))}}}
	}
	maybeTaint(r, &d, 3)
	return d
}

// maybeTaint taints one device in oneIn (NoSchedule or NoExecute, the key tolerations name).
func maybeTaint(r *rand.Rand, d *resourceapi.Device, oneIn int) {
	if r.IntN(oneIn) != 0 {
		return
	}
	effect := resourceapi.DeviceTaintEffectNoSchedule
	if r.IntN(2) == 0 {
		effect = resourceapi.DeviceTaintEffectNoExecute
	}
	d.Taints = []resourceapi.DeviceTaint{{Key: "gpu.tessera.dev/unhealthy", Value: "xid-79", Effect: effect}}
}

func migDevice(g gpuInfo, p migProfile, start int) resourceapi.Device {
	memGi := g.p.memGi * int64(p.mem) / 8
	a := commonAttrs(g, "mig")
	a["profile"] = str(fmt.Sprintf("%s.%dgb", p.name, memGi))
	a["parentUUID"] = a["uuid"]
	a["uuid"] = str(fmt.Sprintf("MIG-%d-%s-%d", g.minor, p.name, start))
	return resourceapi.Device{Name: fmt.Sprintf("gpu-%d-mig-%s-%d-%d", g.minor, p.name, start, p.mem), Attributes: a,
		Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
			"memory":          {Value: qty(fmt.Sprintf("%dGi", memGi))},
			"multiprocessors": {Value: *resource.NewQuantity(int64(p.sm*16), resource.DecimalSI)},
		}}
}

// staticMig lays out a random valid set of existing MIG devices on one GPU.
func staticMig(r *rand.Rand, g gpuInfo) []resourceapi.Device {
	var used [8]bool
	var out []resourceapi.Device
	for tries := 0; tries < 6; tries++ {
		p := migProfiles[r.IntN(len(migProfiles))]
		s := p.starts[r.IntN(len(p.starts))]
		free := true
		for k := s; k < s+p.mem; k++ {
			free = free && !used[k]
		}
		if !free {
			continue
		}
		for k := s; k < s+p.mem; k++ {
			used[k] = true
		}
		d := migDevice(g, p, s)
		maybeTaint(r, &d, 6)
		out = append(out, d)
	}
	return out
}

// partitionable publishes the whole GPU and every MIG placement, all consuming one
// counter set per physical GPU (memory slices by position, compute slices by count).
func partitionable(g gpuInfo) ([]resourceapi.Device, resourceapi.CounterSet) {
	set := fmt.Sprintf("gpu-%d-counters", g.minor)
	cs := resourceapi.CounterSet{Name: set, Counters: map[string]resourceapi.Counter{"compute": {Value: *resource.NewQuantity(7, resource.DecimalSI)}}}
	for k := 0; k < 8; k++ {
		cs.Counters[fmt.Sprintf("memslice%d", k)] = resourceapi.Counter{Value: *resource.NewQuantity(1, resource.DecimalSI)}
	}
	consume := func(start, mem, sm int) []resourceapi.DeviceCounterConsumption {
		c := map[string]resourceapi.Counter{"compute": {Value: *resource.NewQuantity(int64(sm), resource.DecimalSI)}}
		for k := start; k < start+mem; k++ {
			c[fmt.Sprintf("memslice%d", k)] = resourceapi.Counter{Value: *resource.NewQuantity(1, resource.DecimalSI)}
		}
		return []resourceapi.DeviceCounterConsumption{{CounterSet: set, Counters: c}}
	}
	whole := resourceapi.Device{Name: fmt.Sprintf("gpu-%d", g.minor), Attributes: commonAttrs(g, "gpu"),
		Capacity:         map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: qty(fmt.Sprintf("%dGi", g.p.memGi))}},
		ConsumesCounters: consume(0, 8, 7)}
	out := []resourceapi.Device{whole}
	for _, p := range migProfiles {
		for _, s := range p.starts {
			d := migDevice(g, p, s)
			d.ConsumesCounters = consume(s, p.mem, p.sm)
			out = append(out, d)
		}
	}
	return out, cs
}

var gpuSelectors = []string{
	`device.capacity["gpu.tessera.dev"].memory.compareTo(quantity("48Gi")) >= 0`,
	`device.capacity["gpu.tessera.dev"].memory.isGreaterThan(quantity("40Gi"))`,
	`device.attributes["gpu.tessera.dev"].productName == "NVIDIA H100 80GB HBM3"`,
	`device.attributes["gpu.tessera.dev"].productName.startsWith("NVIDIA A100")`,
	`device.attributes["gpu.tessera.dev"].numaNode == 0`,
	`device.attributes["gpu.tessera.dev"].cudaComputeCapability.isGreaterThan(semver("8.5.0"))`,
	`device.attributes["gpu.tessera.dev"].architecture in ["Hopper", "Ampere"]`,
	`device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:10"`,
}

var migSelectors = []string{
	`device.attributes["gpu.tessera.dev"].profile.startsWith("1g.")`,
	`device.capacity["gpu.tessera.dev"].memory.compareTo(quantity("20Gi")) >= 0`,
	`device.capacity["gpu.tessera.dev"].multiprocessors.compareTo(quantity("32")) >= 0`,
	`device.attributes["gpu.tessera.dev"].numaNode == 1`,
}

func exact(r *rand.Rand, shared bool) resourceapi.ExactDeviceRequest {
	e := resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount}
	sels := gpuSelectors
	if r.IntN(3) == 0 {
		e.DeviceClassName = "mig.tessera.dev"
		sels = migSelectors
	}
	e.Count = int64([]int{1, 1, 1, 1, 1, 1, 2, 2, 2, 3}[r.IntN(10)])
	if r.IntN(4) == 0 {
		e.AllocationMode = resourceapi.DeviceAllocationModeAll
		e.Count = 0
		if r.IntN(4) != 0 { // All over every MIG placement of a partitionable GPU never fits: mostly whole GPUs
			e.DeviceClassName, sels = "gpu.tessera.dev", gpuSelectors
		}
	}
	if r.IntN(5) < 2 {
		e.Selectors = []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: sels[r.IntN(len(sels))]}}}
	}
	if shared && e.DeviceClassName == "gpu.tessera.dev" {
		e.Capacity = &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{
			"memory": qty(fmt.Sprintf("%dGi", 5+5*r.IntN(6)))}}
		e.Selectors = append(e.Selectors, resourceapi.DeviceSelector{CEL: &resourceapi.CELDeviceSelector{Expression: `device.allowMultipleAllocations == true`}})
	}
	if r.IntN(5) == 0 { // admin access: in-use devices stay selectable, nothing is consumed
		e.AdminAccess = ptr.To(true)
	}
	if r.IntN(2) == 0 {
		e.Tolerations = []resourceapi.DeviceToleration{{Key: "gpu.tessera.dev/unhealthy", Operator: resourceapi.DeviceTolerationOpExists}}
	}
	return e
}

// Claim returns a random claim with 1-4 requests.
func Claim(r *rand.Rand, name string) resourceapi.ResourceClaim {
	c := resourceapi.ResourceClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
	}
	nreq := []int{1, 1, 1, 1, 2, 2, 2, 2, 3, 4}[r.IntN(10)]
	pair := r.IntN(4) == 0 // a pair of requests under one constraint: constraints that can fit
	if pair {
		nreq = 2
	}
	var names []string
	for i := 0; i < nreq; i++ {
		req := resourceapi.DeviceRequest{Name: fmt.Sprintf("r%d", i)}
		shared := r.IntN(6) == 0
		if r.IntN(5) == 0 {
			for k := 0; k < 2; k++ {
				req.FirstAvailable = append(req.FirstAvailable, resourceapi.DeviceSubRequest{Name: fmt.Sprintf("s%d", k)})
				e := exact(r, shared)
				sr := &req.FirstAvailable[k]
				sr.DeviceClassName, sr.Selectors, sr.Tolerations, sr.Capacity = e.DeviceClassName, e.Selectors, e.Tolerations, e.Capacity
				sr.AllocationMode, sr.Count = e.AllocationMode, e.Count
			}
		} else {
			e := exact(r, shared)
			req.Exactly = &e
		}
		c.Spec.Devices.Requests = append(c.Spec.Devices.Requests, req)
		names = append(names, req.Name)
	}
	if pair || (nreq > 1 && r.IntN(8) != 0) {
		match := []string{"resource.kubernetes.io/pcieRoot", "gpu.tessera.dev/numaNode", "gpu.tessera.dev/productName"}
		distinct := []string{"resource.kubernetes.io/pcieRoot", "gpu.tessera.dev/numaNode", "gpu.tessera.dev/uuid", "gpu.tessera.dev/uuid"}
		con := resourceapi.DeviceConstraint{Requests: names[:2]} // two requests mostly: more of them fit
		if r.IntN(3) == 0 {
			con.Requests = names[:2+r.IntN(nreq-1)]
		}
		if r.IntN(2) == 0 {
			a := resourceapi.FullyQualifiedName(distinct[r.IntN(len(distinct))])
			con.DistinctAttribute = &a
		} else {
			a := resourceapi.FullyQualifiedName(match[r.IntN(len(match))])
			con.MatchAttribute = &a
		}
		c.Spec.Devices.Constraints = append(c.Spec.Devices.Constraints, con)
	}
	return c
}

// Case builds case i of a seeded run: inventory, up to two prior claims allocated by
// the oracle, then the claim under test.
func Case(seed uint64, i int) oracle.Case {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	node := fmt.Sprintf("node-%d", i)
	c := oracle.Case{Name: fmt.Sprintf("seed%d-case%d", seed, i), Node: node, Slices: Inventory(r, node), DeviceClasses: DeviceClasses()}
	for k, prior := 0, r.IntN(3); k < prior; k++ {
		pc := Claim(r, fmt.Sprintf("prior-%d", k))
		// Bounded like the scheduler's filter timeout: an exhaustive search on an impossible
		// prior claim can run for minutes; such a prior is simply left out.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res := oracle.Allocate(ctx, &oracle.Case{Node: node, Slices: c.Slices, DeviceClasses: c.DeviceClasses, AllocatedClaims: c.AllocatedClaims, Claim: pc})
		cancel()
		if !res.Fits {
			continue
		}
		pc.Status.Allocation = &resourceapi.AllocationResult{}
		for _, d := range res.Devices {
			rr := resourceapi.DeviceRequestAllocationResult{Request: d.Request, Driver: d.Driver, Pool: d.Pool, Device: d.Device}
			if d.AdminAccess {
				rr.AdminAccess = ptr.To(true)
			}
			if d.Shared {
				rr.ShareID = ptr.To(types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012x", k, len(pc.Status.Allocation.Devices.Results))))
				rr.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{}
				for name, v := range d.ConsumedCapacity {
					rr.ConsumedCapacity[resourceapi.QualifiedName(name)] = qty(v)
				}
			}
			pc.Status.Allocation.Devices.Results = append(pc.Status.Allocation.Devices.Results, rr)
		}
		c.AllocatedClaims = append(c.AllocatedClaims, pc)
	}
	c.Claim = Claim(r, "claim")
	return c
}
