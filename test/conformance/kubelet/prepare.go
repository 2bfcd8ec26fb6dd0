package kubelet

import (
	"context"
	"fmt"
	"os"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	drav1 "k8s.io/kubelet/pkg/apis/dra/v1"
	drav1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
)

// checkPrepare runs the prepare/unprepare cases the kubelet relies on, on both versions.
func checkPrepare(ctx context.Context, a *Agent, slicesOnStore []resourceapi.ResourceSlice,
	v1 drav1.DRAPluginClient, v1b drav1beta1.DRAPluginClient, check func(string, error)) {
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 10*time.Second) }

	// An empty batch, as `diag ping` and the kubelet's health probes send.
	cctx, cancel := call()
	resp, err := v1.NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{})
	cancel()
	if err == nil && len(resp.Claims) != 0 {
		err = fmt.Errorf("empty request answered %d claims", len(resp.Claims))
	}
	check("v1-prepare-empty", err)

	one := NewClaim("one-gpu", GPUs("gpu", 1))
	two := NewClaim("two-gpus", GPUs("gpus", 2))
	prio := NewClaim("prioritized", resourceapi.DeviceRequest{Name: "gpu", FirstAvailable: []resourceapi.DeviceSubRequest{
		{Name: "big", DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 64},
		{Name: "one", DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1},
	}})
	var prior []resourceapi.ResourceClaim
	for _, c := range []*resourceapi.ResourceClaim{one, two, prio} {
		if err := Allocate(ctx, a, slicesOnStore, prior, c); err != nil {
			check("allocate-"+c.Name, err)
			return
		}
		prior = append(prior, *c)
		if err := a.WriteClaim(c); err != nil {
			check("store-"+c.Name, err)
			return
		}
	}
	// Wrong UID: the store holds the name, but the kubelet asks for another incarnation.
	stale := &drav1.Claim{Namespace: one.Namespace, Name: one.Name, Uid: "00000000-dead-4000-8000-000000000000"}
	missing := &drav1.Claim{Namespace: "conformance", Name: "no-such-claim", Uid: "00000000-0000-4000-8000-00000000beef"}
	unallocated := NewClaim("not-allocated", GPUs("gpu", 1))
	if err := a.WriteClaim(unallocated); err != nil {
		check("store-not-allocated", err)
		return
	}

	batch := []*drav1.Claim{pbClaim(one), pbClaim(two), missing, stale, pbClaim(unallocated), pbClaim(prio)}
	cctx, cancel = call()
	resp, err = v1.NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: batch})
	cancel()
	if err != nil {
		check("v1-prepare-batch", fmt.Errorf("whole call failed (the kubelet retries every claim): %w", err))
		return
	}
	var missingUIDs []string
	for _, c := range batch {
		if _, ok := resp.Claims[c.Uid]; !ok {
			missingUIDs = append(missingUIDs, c.Uid)
		}
	}
	if len(missingUIDs) > 0 {
		check("v1-prepare-all-uids-answered", fmt.Errorf("no entry for %v (kubelet: \"skipped N ResourceClaims\")", missingUIDs))
	} else if len(resp.Claims) != len(batch) {
		check("v1-prepare-all-uids-answered", fmt.Errorf("%d entries for %d claims", len(resp.Claims), len(batch)))
	} else {
		check("v1-prepare-all-uids-answered", nil)
	}
	for _, c := range []*resourceapi.ResourceClaim{one, two, prio} {
		r := resp.Claims[string(c.UID)]
		switch {
		case r == nil:
			check("v1-prepare-"+c.Name, fmt.Errorf("no answer"))
		case r.Error != "":
			check("v1-prepare-"+c.Name, fmt.Errorf("error %q", r.Error))
		default:
			check("v1-prepare-"+c.Name, checkDevices(a, c, r.Devices))
			if _, err := os.Stat(cdiSpec(a, c.UID)); err != nil {
				check("cdi-spec-written-"+c.Name, err)
			} else {
				check("cdi-spec-written-"+c.Name, nil)
			}
		}
	}
	_, err = ValidateCDISpecs(a.CDIRoot)
	check("cdi-specs-valid", err)
	for name, uid := range map[string]string{"missing-claim": missing.Uid, "uid-mismatch": stale.Uid, "not-allocated": string(unallocated.UID)} {
		r := resp.Claims[uid]
		if r == nil || r.Error == "" {
			check("v1-prepare-per-claim-error-"+name, fmt.Errorf("want a per-claim error, got %+v", r))
		} else {
			check("v1-prepare-per-claim-error-"+name, nil)
		}
	}

	// Idempotency: the kubelet re-sends prepare after restarts; same answer, same CDI bytes.
	before, _ := os.ReadFile(cdiSpec(a, one.UID))
	cctx, cancel = call()
	again, err := v1.NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: []*drav1.Claim{pbClaim(one)}})
	cancel()
	if err == nil {
		r0, r1 := resp.Claims[string(one.UID)], again.Claims[string(one.UID)]
		switch {
		case r1 == nil || r1.Error != "":
			err = fmt.Errorf("second prepare: %+v", r1)
		case r0 != nil && devicesKey(r0.Devices) != devicesKey(r1.Devices):
			err = fmt.Errorf("second prepare answered other devices:\n%s\nvs\n%s", devicesKey(r0.Devices), devicesKey(r1.Devices))
		}
	}
	if after, _ := os.ReadFile(cdiSpec(a, one.UID)); err == nil && string(before) != string(after) {
		err = fmt.Errorf("CDI spec changed on the second prepare")
	}
	check("v1-prepare-idempotent", err)

	// v1beta1: same answer for the same claim.
	cctx, cancel = call()
	bresp, err := v1b.NodePrepareResources(cctx, &drav1beta1.NodePrepareResourcesRequest{Claims: []*drav1beta1.Claim{
		{Namespace: two.Namespace, Name: two.Name, Uid: string(two.UID)}, {Namespace: missing.Namespace, Name: missing.Name, Uid: missing.Uid}}})
	cancel()
	if err == nil {
		rb, rv := bresp.Claims[string(two.UID)], resp.Claims[string(two.UID)]
		switch {
		case rb == nil || rb.Error != "":
			err = fmt.Errorf("v1beta1 prepare of %s: %+v", two.Name, rb)
		case bresp.Claims[missing.Uid] == nil || bresp.Claims[missing.Uid].Error == "":
			err = fmt.Errorf("v1beta1: missing claim got no per-claim error")
		case rv != nil && devicesKey(fromBeta(rb.Devices)) != devicesKey(rv.Devices):
			err = fmt.Errorf("v1beta1 answer differs from v1")
		}
	}
	check("v1beta1-prepare", err)

	// Unprepare: every UID answered, unknown claims are not an error, CDI specs gone, twice is fine.
	ub := []*drav1.Claim{pbClaim(one), pbClaim(prio), missing}
	for round := 1; round <= 2; round++ {
		cctx, cancel = call()
		uresp, err := v1.NodeUnprepareResources(cctx, &drav1.NodeUnprepareResourcesRequest{Claims: ub})
		cancel()
		if err == nil {
			for _, c := range ub {
				r, ok := uresp.Claims[c.Uid]
				if !ok {
					err = fmt.Errorf("no entry for %s", c.Uid)
					break
				}
				if r != nil && r.Error != "" {
					err = fmt.Errorf("claim %s: %s", c.Name, r.Error)
					break
				}
			}
		}
		check(fmt.Sprintf("v1-unprepare-round-%d", round), err)
	}
	for _, c := range []*resourceapi.ResourceClaim{one, prio} {
		if _, err := os.Stat(cdiSpec(a, c.UID)); !os.IsNotExist(err) {
			check("cdi-spec-removed-"+c.Name, fmt.Errorf("%s still there (%v)", cdiSpec(a, c.UID), err))
		} else {
			check("cdi-spec-removed-"+c.Name, nil)
		}
	}
	cctx, cancel = call()
	buresp, err := v1b.NodeUnprepareResources(cctx, &drav1beta1.NodeUnprepareResourcesRequest{Claims: []*drav1beta1.Claim{{Namespace: two.Namespace, Name: two.Name, Uid: string(two.UID)}}})
	cancel()
	if err == nil {
		if r, ok := buresp.Claims[string(two.UID)]; !ok || (r != nil && r.Error != "") {
			err = fmt.Errorf("v1beta1 unprepare answer %+v", buresp.Claims)
		}
	}
	check("v1beta1-unprepare", err)

	// After unprepare the claim can be prepared again (a pod restarted on the node).
	cctx, cancel = call()
	re, err := v1.NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: []*drav1.Claim{pbClaim(one)}})
	cancel()
	if err == nil {
		if r := re.Claims[string(one.UID)]; r == nil || r.Error != "" {
			err = fmt.Errorf("re-prepare after unprepare: %+v", r)
		} else {
			err = checkDevices(a, one, r.Devices)
		}
	}
	check("v1-prepare-after-unprepare", err)
}

// PrepareOne asks the agent, as the kubelet does on v1, to prepare one allocated claim and
// checks the answer against the allocation; then unprepares it.
func PrepareOne(ctx context.Context, a *Agent, c *resourceapi.ResourceClaim) error {
	conn, err := dial(a.DRASocket())
	if err != nil {
		return err
	}
	defer conn.Close()
	v1 := drav1.NewDRAPluginClient(conn)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	resp, err := v1.NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: []*drav1.Claim{pbClaim(c)}})
	if err != nil {
		return err
	}
	r := resp.Claims[string(c.UID)]
	if r == nil || r.Error != "" {
		return fmt.Errorf("prepare %s: %+v", c.Name, r)
	}
	if err := checkDevices(a, c, r.Devices); err != nil {
		return err
	}
	if _, err := ValidateCDISpecs(a.CDIRoot); err != nil {
		return err
	}
	uresp, err := v1.NodeUnprepareResources(cctx, &drav1.NodeUnprepareResourcesRequest{Claims: []*drav1.Claim{pbClaim(c)}})
	if err != nil {
		return err
	}
	if u, ok := uresp.Claims[string(c.UID)]; !ok || (u != nil && u.Error != "") {
		return fmt.Errorf("unprepare %s: %+v", c.Name, uresp.Claims)
	}
	return nil
}
