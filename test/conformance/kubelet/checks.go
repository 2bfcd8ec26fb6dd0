package kubelet

import (
	"context"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	drav1 "k8s.io/kubelet/pkg/apis/dra/v1"
	drav1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
	regv1 "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/oracle"
	"tessera.dev/conformance/report"
)

const tier = 1

func dial(sock string) (*grpc.ClientConn, error) {
	// The kubelet dials unix sockets with insecure credentials, as here.
	return grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Main runs Tier 1; it returns true when a check failed. The agent is always stopped.
func Main(ctx context.Context, args []string) (failed bool) {
	fs := flag.NewFlagSet("kubelet", flag.ExitOnError)
	repo := fs.String("repo", ".", "Tessera checkout (built)")
	fixture := fs.String("fixture", "h100-sxm-8x", "fixture node")
	keep := fs.Bool("keep", false, "keep the temporary tree")
	_ = fs.Parse(args)
	check := func(name string, err error) {
		if !report.Check(tier, name, err) {
			failed = true
		}
	}
	a, err := StartAgent(*repo, *fixture, "conformance-node")
	if err != nil {
		check("agent-start", err)
		return
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = a.Stop(10 * time.Second)
		}
		a.Cleanup(*keep || failed)
		if failed {
			fmt.Fprintf(os.Stderr, "tier1: agent tree kept at %s\n", a.Root)
		}
	}()
	if err := a.WaitSockets(30 * time.Second); err != nil {
		check("agent-sockets", err)
		return
	}
	check("agent-sockets", nil)

	checkRegistration(ctx, a, check)

	slicesOnStore, err := a.WaitSlices(ctx, 10*time.Second)
	check("slices-in-store", err)
	if err != nil {
		// Keep testing prepare with the contract's device names (gpu-<minor>) so one missing
		// piece does not hide the others; the failure above stays counted.
		slicesOnStore = ContractSlices(a.Node, 8)
	}
	conn, err := dial(a.DRASocket())
	if err != nil {
		check("dra-dial", err)
		return
	}
	defer conn.Close()
	v1 := drav1.NewDRAPluginClient(conn)
	v1b := drav1beta1.NewDRAPluginClient(conn)
	checkPrepare(ctx, a, slicesOnStore, v1, v1b, check)

	exitErr, gone := a.Stop(10 * time.Second)
	stopped = true
	defer func() {
		// Each on its own agent (own fixture / flags), after the main agent has stopped.
		CDIMultiClaim(ctx, *repo, *keep, check)
		SharedGPU(ctx, *repo, *keep, check)
	}()
	check("sigterm-exit-0", exitErr)
	if !gone {
		check("sigterm-removes-sockets", fmt.Errorf("a socket is still there after exit"))
	} else {
		check("sigterm-removes-sockets", nil)
	}
	return
}

func checkRegistration(ctx context.Context, a *Agent, check func(string, error)) {
	conn, err := dial(a.RegSocket())
	if err != nil {
		check("registration-dial", err)
		return
	}
	defer conn.Close()
	reg := regv1.NewRegistrationClient(conn)
	// The kubelet's plugin watcher gives GetInfo one second.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	start := time.Now()
	info, err := reg.GetInfo(cctx, &regv1.InfoRequest{})
	cancel()
	if err != nil {
		check("getinfo-within-1s", fmt.Errorf("GetInfo: %w (after %s)", err, time.Since(start)))
		return
	}
	check("getinfo-within-1s", nil)
	var problems []string
	if info.Type != regv1.DRAPlugin {
		problems = append(problems, fmt.Sprintf("type %q, want %q", info.Type, regv1.DRAPlugin))
	}
	if info.Name != a.Driver {
		problems = append(problems, fmt.Sprintf("name %q, want %q", info.Name, a.Driver))
	}
	if info.Endpoint != a.DRASocket() {
		problems = append(problems, fmt.Sprintf("endpoint %q, want %q", info.Endpoint, a.DRASocket()))
	}
	check("getinfo-fields", joinProblems(problems))
	// The kubelet's DRA handler takes the first entry it supports; v1 must come first. The
	// optional health service follows, v1 before v1alpha1 (the kubelet picks the first it knows).
	want := []string{"v1.DRAPlugin", "v1beta1.DRAPlugin"}
	got := info.SupportedVersions
	for _, h := range []string{"v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"} {
		if len(got) > 2 && got[2] == h {
			got = append(got[:2:2], got[3:]...)
		}
	}
	if !reflect.DeepEqual(got, want) {
		check("getinfo-supported-versions", fmt.Errorf("supported_versions %q, want %q (in this order), then optionally v1.DRAResourceHealth, v1alpha1.DRAResourceHealth", info.SupportedVersions, want))
	} else {
		check("getinfo-supported-versions", nil)
	}
	_, err = reg.NotifyRegistrationStatus(ctx, &regv1.RegistrationStatus{PluginRegistered: true})
	check("notify-registered", err)
	_, err = reg.NotifyRegistrationStatus(ctx, &regv1.RegistrationStatus{PluginRegistered: false, Error: "conformance: simulated rejection"})
	check("notify-rejected-stays-up", err)
	cctx, cancel = context.WithTimeout(ctx, time.Second)
	_, err = reg.GetInfo(cctx, &regv1.InfoRequest{})
	cancel()
	check("getinfo-after-rejection", err)
}

func joinProblems(p []string) error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(p, "; "))
}

// Allocate uses the scheduler's allocator (Tier 2 oracle) to fill status.allocation.
func Allocate(ctx context.Context, a *Agent, slicesOnStore []resourceapi.ResourceSlice, prior []resourceapi.ResourceClaim, c *resourceapi.ResourceClaim) error {
	res := oracle.Allocate(ctx, &oracle.Case{Node: a.Node, Slices: slicesOnStore, DeviceClasses: gen.DeviceClasses(), AllocatedClaims: prior, Claim: *c})
	if res.Error != "" || !res.Fits {
		return fmt.Errorf("scheduler allocator cannot allocate %s on the agent's slices: fits=%v %s", c.Name, res.Fits, res.Error)
	}
	c.Status.Allocation = &resourceapi.AllocationResult{}
	for _, d := range res.Devices {
		r := resourceapi.DeviceRequestAllocationResult{Request: d.Request, Driver: d.Driver, Pool: d.Pool, Device: d.Device}
		if d.ShareID != "" {
			uid := types.UID(d.ShareID)
			r.ShareID = &uid
			r.ConsumedCapacity = map[resourceapi.QualifiedName]resource.Quantity{}
			for k, v := range d.ConsumedCapacity {
				r.ConsumedCapacity[resourceapi.QualifiedName(k)] = resource.MustParse(v)
			}
		}
		c.Status.Allocation.Devices.Results = append(c.Status.Allocation.Devices.Results, r)
	}
	return nil
}

// NewClaim is a claim in namespace "conformance" with a UID from its name.
func NewClaim(name string, reqs ...resourceapi.DeviceRequest) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "conformance", UID: UIDFor(name)},
		Spec:       resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: reqs}},
	}
}

// UIDFor gives each test claim a stable, distinct UUID-shaped UID.
func UIDFor(name string) types.UID {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return types.UID(fmt.Sprintf("c0ffee00-0000-4000-8000-%012x", h.Sum64()&0xffffffffffff))
}

// GPUs is a request for n whole GPUs of the gpu.tessera.dev class.
func GPUs(name string, n int64) resourceapi.DeviceRequest {
	return resourceapi.DeviceRequest{Name: name, Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: n}}
}

func pbClaim(c *resourceapi.ResourceClaim) *drav1.Claim {
	return &drav1.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
}

// checkDevices compares a prepare answer with the claim's allocation as the kubelet uses it.
func checkDevices(a *Agent, c *resourceapi.ResourceClaim, devs []*drav1.Device) error {
	var problems []string
	want := map[string]string{}     // device -> base request
	shareIDs := map[string]string{} // device -> share ID of the allocation
	for _, r := range c.Status.Allocation.Devices.Results {
		want[r.Device] = strings.SplitN(r.Request, "/", 2)[0]
		if r.ShareID != nil {
			shareIDs[r.Device] = string(*r.ShareID)
		}
	}
	seen := map[string]bool{}
	for _, d := range devs {
		req, ok := want[d.DeviceName]
		if !ok {
			problems = append(problems, fmt.Sprintf("device %q is not in the allocation", d.DeviceName))
			continue
		}
		seen[d.DeviceName] = true
		if d.PoolName != a.Node {
			problems = append(problems, fmt.Sprintf("device %s pool_name %q, want %q", d.DeviceName, d.PoolName, a.Node))
		}
		// The kubelet matches containers' request references against these names, base names only.
		if len(d.RequestNames) > 0 && !slices.Contains(d.RequestNames, req) {
			problems = append(problems, fmt.Sprintf("device %s request_names %q, want to contain %q (subrequest suffix stripped)", d.DeviceName, d.RequestNames, req))
		}
		wantCDI := fmt.Sprintf("k8s.gpu.tessera.dev/claim=%s-%s", c.UID, d.DeviceName)
		if !slices.Contains(d.CdiDeviceIds, wantCDI) {
			problems = append(problems, fmt.Sprintf("device %s cdi_device_ids %q, want to contain %q", d.DeviceName, d.CdiDeviceIds, wantCDI))
		}
		wantShare := shareIDs[d.DeviceName]
		switch {
		case wantShare == "" && d.ShareId != nil:
			problems = append(problems, fmt.Sprintf("device %s has share_id %q but was allocated exclusively", d.DeviceName, *d.ShareId))
		case wantShare != "" && (d.ShareId == nil || *d.ShareId != wantShare):
			problems = append(problems, fmt.Sprintf("device %s share_id %v, want %q from the allocation", d.DeviceName, d.ShareId, wantShare))
		}
	}
	for dev := range want {
		if !seen[dev] {
			problems = append(problems, fmt.Sprintf("allocated device %s missing from the answer", dev))
		}
	}
	return joinProblems(problems)
}

func cdiSpec(a *Agent, uid types.UID) string {
	return filepath.Join(a.CDIRoot, "k8s.gpu.tessera.dev-claim_"+string(uid)+".json")
}

func devicesKey(devs []*drav1.Device) string {
	var ks []string
	for _, d := range devs {
		ids := slices.Clone(d.CdiDeviceIds)
		sort.Strings(ids)
		ks = append(ks, fmt.Sprintf("%s/%s %v %v", d.PoolName, d.DeviceName, d.RequestNames, ids))
	}
	sort.Strings(ks)
	return strings.Join(ks, "\n")
}

func fromBeta(devs []*drav1beta1.Device) []*drav1.Device {
	out := make([]*drav1.Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, &drav1.Device{RequestNames: d.RequestNames, PoolName: d.PoolName, DeviceName: d.DeviceName, CdiDeviceIds: d.CdiDeviceIds})
	}
	return out
}
