package main

// Device health (issue 15) through the kubelet's own DRA manager: the plugin watcher registers
// the agent, the manager opens the DRAResourceHealth stream it picks from supported_versions
// (pkg/kubelet/cm/dra/plugin: v1 before v1alpha1) and keeps its health info cache; a pod's
// claim is prepared; the kubelet must report the claim's device HEALTHY in the pod status it
// builds (Manager.UpdateAllocatedResourcesStatus fills containerStatuses[].allocatedResourcesStatus),
// then, after a fatal XID for that GPU is appended to the kernel log the agent tails
// (--kmsg), notify the pod (Manager.Updates) and report it UNHEALTHY with the XID in the
// message. Run once with the agent's defaults (both versions advertised: the kubelet takes v1)
// and once with --health-api v1alpha1 (only v1alpha1 advertised and served).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"

	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/report"
)

type healthMode struct {
	name       string
	flags      []string
	advertised []string
}

var healthModes = []healthMode{
	{"v1", nil, []string{"v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"}},
	{"v1alpha1", []string{"--health-api", "v1alpha1"}, []string{"v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"}},
}

func health(ctx context.Context, repo, fixture string, check func(string, error) bool) {
	for _, m := range healthModes {
		healthRun(ctx, repo, fixture, m, check)
	}
}

func healthRun(ctx context.Context, repo, fixture string, mode healthMode, check func(string, error) bool) {
	g, ok := openGroup("health-"+mode.name+"/", "health-node", check)
	defer g.close()
	if !ok {
		return
	}
	tree, chk, prefix := g.tree, g.chk, g.prefix
	kmsg := filepath.Join(tree.Root, "kmsg.txt")
	if !chk("kmsg", os.WriteFile(kmsg, []byte("6,1,1000,-;NVRM: loading NVIDIA UNIX Open Kernel Module\n"), 0o644)) {
		return
	}
	// --health-interval 1: a heartbeat a second, so the kubelet's timeout (3 heartbeats) is short.
	a, ok := g.startAgent(repo, fixture, "agent", "", 30*time.Second, append([]string{"--kmsg", kmsg, "--health-interval", "1"}, mode.flags...)...)
	if !ok {
		return
	}
	slicesOnStore, err := tree.WaitSlices(ctx, 10*time.Second)
	if !chk("slices-in-store", err) {
		return
	}
	claim := kubelet.NewClaim("health-gpu", kubelet.GPUs("gpu", 1))
	if !chk("allocate", kubelet.Allocate(ctx, tree, slicesOnStore, nil, claim)) {
		return
	}
	device := claim.Status.Allocation.Devices.Results[0].Device
	bus, err := pciBusOf(slicesOnStore, device)
	if !chk("device-pci-bus", err) {
		return
	}
	pod := podFor("health-pod", "4ea1b000-0000-4000-8000-000000000001", tree.Node, claim)
	if !chk("store-claim", tree.WriteClaim(claim)) {
		return
	}
	k, err := startKubelet(ctx, fake.NewSimpleClientset(claim), filepath.Join(tree.Root, "kubelet-dra-state"), tree.KubeletRoot, tree.Node,
		func() []*v1.Pod { return []*v1.Pod{pod} })
	if !chk("dra-manager-start", err) {
		return
	}
	defer k.stop()
	if !chk("registered", kubelet.WaitFor(ctx, 15*time.Second, func() bool { return k.seen.hasRegistered(a.DRASocket()) })) {
		return
	}
	if got := k.seen.versionsOf(a.DRASocket()); !slices.Equal(got, mode.advertised) {
		chk("supported-versions", fmt.Errorf("the kubelet registered supported_versions %q, want %q", got, mode.advertised))
	} else {
		chk("supported-versions", nil)
	}
	pctx, pcancel := context.WithTimeout(ctx, callTimeout)
	err = k.mgr.PrepareResources(pctx, pod)
	pcancel()
	var ids []string
	if err == nil {
		ids, err = containerCDIIDs(k.mgr, pod, claim)
	}
	if !chk("prepare-pod", err) {
		return
	}
	resourceID := v1.ResourceID(fmt.Sprintf("k8s.gpu.tessera.dev/claim=%s-%s", claim.UID, device))
	var last v1.ResourceHealth
	healthOf := func() v1.ResourceHealth { last = podDeviceHealth(k, pod, resourceID); return last }
	if err := kubelet.WaitFor(ctx, 20*time.Second, func() bool { return healthOf().Health == v1.ResourceHealthStatusHealthy }); err != nil {
		chk("healthy-in-pod-status", fmt.Errorf("%v: last seen %s for %s (CDI IDs %q)", err, describe(last), resourceID, ids))
		return
	}
	chk("healthy-in-pod-status", nil)

	// A fatal XID (79: the GPU has fallen off the bus) for the pod's GPU, as the kernel logs it.
	for drained := false; !drained; {
		select {
		case <-k.mgr.Updates():
		default:
			drained = true
		}
	}
	line := fmt.Sprintf("3,9001,%d,-;NVRM: Xid (PCI:%s): 79, pid=0, name=conformance, GPU has fallen off the bus.\n", time.Now().UnixMicro(), bus)
	injected := time.Now()
	if !chk("inject-xid", appendFile(kmsg, line)) {
		return
	}
	notified := waitPodUpdate(ctx, k, pod, 15*time.Second)
	latency := time.Since(injected)
	if !chk("pod-notified", notified) {
		return
	}
	h := healthOf()
	switch {
	case h.Health != v1.ResourceHealthStatusUnhealthy:
		chk("unhealthy-in-pod-status", fmt.Errorf("after XID 79 on %s (PCI %s) the kubelet reports %s for %s", device, bus, describe(h), resourceID))
	case h.Message == nil || !strings.Contains(*h.Message, "79"):
		chk("unhealthy-in-pod-status", fmt.Errorf("UNHEALTHY without the XID in its message: %s", describe(h)))
	default:
		report.PassWith(tier, "kubelet-dra-manager/"+prefix+"unhealthy-in-pod-status",
			fmt.Sprintf("%s UNHEALTHY in allocatedResourcesStatus %.0f ms after the XID line (message %q)", resourceID, float64(latency.Microseconds())/1000, *h.Message))
	}
	uctx, ucancel := context.WithTimeout(ctx, callTimeout)
	err = k.mgr.UnprepareResources(uctx, pod)
	ucancel()
	chk("unprepare-pod", err)
	exitErr, _ := a.Stop(10 * time.Second)
	chk("agent-exit-0", exitErr)
}

// podDeviceHealth is the health the kubelet would put into the pod's status for one device
// of its container's claim ("claim:gpus").
func podDeviceHealth(k *kubeletSide, pod *v1.Pod, id v1.ResourceID) v1.ResourceHealth {
	status := &v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: pod.Spec.Containers[0].Name}}}
	k.mgr.UpdateAllocatedResourcesStatus(klog.Background(), pod, status)
	for _, rs := range status.ContainerStatuses[0].AllocatedResourcesStatus {
		if rs.Name != "claim:gpus" {
			continue
		}
		for _, r := range rs.Resources {
			if r.ResourceID == id {
				return r
			}
		}
	}
	return v1.ResourceHealth{}
}

func describe(h v1.ResourceHealth) string {
	if h.Message == nil {
		return fmt.Sprintf("%q (no message)", h.Health)
	}
	return fmt.Sprintf("%q (message %q)", h.Health, *h.Message)
}

// waitPodUpdate waits for the manager's notification that the pod's devices changed health
// (what makes the kubelet sync the pod's status).
func waitPodUpdate(ctx context.Context, k *kubeletSide, pod *v1.Pod, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		select {
		case u := <-k.mgr.Updates():
			if slices.Contains(u.PodUIDs, string(pod.UID)) {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("no health update for pod %s within %s", pod.UID, timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pciBusOf is the device's PCI address as the kernel's NVRM lines write it (domain:bus:device,
// without the function), from the standard pciBusID attribute the agent publishes.
func pciBusOf(slicesOnStore []resourceapi.ResourceSlice, device string) (string, error) {
	for _, s := range slicesOnStore {
		for _, d := range s.Spec.Devices {
			if d.Name != device {
				continue
			}
			if a, ok := d.Attributes["resource.kubernetes.io/pciBusID"]; ok && a.StringValue != nil {
				bus := *a.StringValue
				if i := strings.LastIndex(bus, "."); i > 0 {
					bus = bus[:i]
				}
				return bus, nil
			}
		}
	}
	return "", fmt.Errorf("device %s has no resource.kubernetes.io/pciBusID attribute in the published slices", device)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
