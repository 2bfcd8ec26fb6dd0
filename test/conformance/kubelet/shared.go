package kubelet

import (
	"context"
	"fmt"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	drav1 "k8s.io/kubelet/pkg/apis/dra/v1"
	drav1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
)

// SharedGPU checks share_id on the wire: an agent started with `--gpu-sharing consumable`
// publishes whole GPUs with allowMultipleAllocations; two claims allocated by the scheduler's
// allocator on the same GPU are prepared in one v1 batch and each answer must carry its own
// allocation's shareID (v1 has share_id; v1beta1 has no such field and must still answer the
// same devices). It fails, naming the cause, while the agent has no such flag or publishes no
// shared device.
func SharedGPU(ctx context.Context, repo string, keep bool, check func(string, error)) {
	WithAgent(ctx, repo, "h100-sxm-8x", "shared-node", keep, check, shareCheck, func(a *Agent, slicesOnStore []resourceapi.ResourceSlice, check func(string, error)) {
		sharedGPU(ctx, a, slicesOnStore, func(err error) { check(shareCheck, err) })
	}, "--gpu-sharing", "consumable")
}

const shareCheck = "v1-prepare-share-id"

func sharedGPU(ctx context.Context, a *Agent, slicesOnStore []resourceapi.ResourceSlice, fail func(error)) {
	var uuid string
	for _, s := range slicesOnStore {
		for _, d := range s.Spec.Devices {
			if d.AllowMultipleAllocations != nil && *d.AllowMultipleAllocations && uuid == "" {
				if u, ok := d.Attributes["uuid"]; ok && u.StringValue != nil {
					uuid = *u.StringValue
				}
			}
		}
	}
	if uuid == "" {
		fail(fmt.Errorf("--gpu-sharing consumable published no device with allowMultipleAllocations (and a uuid attribute)"))
		return
	}
	// Both claims select the same GPU by its uuid, so the second shares the first's device.
	req := resourceapi.DeviceRequest{Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{
		DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1,
		Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{Expression: fmt.Sprintf(
			`device.allowMultipleAllocations == true && device.attributes["gpu.tessera.dev"].uuid == %q`, uuid)}}}}}
	claims := []*resourceapi.ResourceClaim{NewClaim("shared-a", req), NewClaim("shared-b", req)}
	if err := AllocateAndStore(ctx, a, slicesOnStore, claims...); err != nil {
		fail(err)
		return
	}
	r0, r1 := claims[0].Status.Allocation.Devices.Results[0], claims[1].Status.Allocation.Devices.Results[0]
	if r0.Device != r1.Device || r0.ShareID == nil || r1.ShareID == nil || *r0.ShareID == *r1.ShareID {
		fail(fmt.Errorf("the scheduler's allocator did not share one device: %s/%v and %s/%v", r0.Device, r0.ShareID, r1.Device, r1.ShareID))
		return
	}
	conn, err := dial(a.DRASocket())
	if err != nil {
		fail(err)
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := drav1.NewDRAPluginClient(conn).NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: []*drav1.Claim{pbClaim(claims[0]), pbClaim(claims[1])}})
	if err != nil {
		fail(err)
		return
	}
	var problems []string
	for _, c := range claims {
		r := resp.Claims[string(c.UID)]
		if r == nil || r.Error != "" {
			problems = append(problems, fmt.Sprintf("prepare %s: %+v", c.Name, r))
			continue
		}
		if err := checkDevices(a, c, r.Devices); err != nil { // share_id == the allocation's shareID
			problems = append(problems, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	if _, err := ValidateCDISpecs(a.CDIRoot); err != nil {
		problems = append(problems, err.Error())
	}
	bresp, err := drav1beta1.NewDRAPluginClient(conn).NodePrepareResources(cctx, &drav1beta1.NodePrepareResourcesRequest{Claims: []*drav1beta1.Claim{
		{Namespace: claims[1].Namespace, Name: claims[1].Name, Uid: string(claims[1].UID)}}})
	switch rb := bresp.GetClaims()[string(claims[1].UID)]; {
	case err != nil:
		problems = append(problems, fmt.Sprintf("v1beta1 prepare: %v", err))
	case rb == nil || rb.Error != "":
		problems = append(problems, fmt.Sprintf("v1beta1 prepare of a shared claim: %+v", rb))
	case resp.Claims[string(claims[1].UID)] != nil && devicesKey(fromBeta(rb.Devices)) != devicesKey(resp.Claims[string(claims[1].UID)].Devices):
		problems = append(problems, "v1beta1 answer for a shared claim differs from v1")
	}
	fail(joinProblems(problems))
}
