// kubelet-dra registers `tessera agent` through the kubelet's own plugin watcher and DRA
// manager (k8s.io/kubernetes/pkg/kubelet/pluginmanager and .../cm/dra) and prepares a
// pod's claims through it, then unprepares them and checks the plugin deregisters when
// the agent stops. A separate module: k8s.io/kubernetes needs `replace` lines pinning every
// staging module, and the other tiers must not depend on it building.
package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	draplugin "k8s.io/kubernetes/pkg/kubelet/cm/dra/plugin"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"

	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/oracle"
	"tessera.dev/conformance/report"
)

const tier = 1

type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return true }

func main() { report.RunTier(run) }

func run(ctx context.Context, repo, fixture string) (failed bool) {
	check := func(name string, err error) bool {
		ok := report.Check(tier, "kubelet-dra-manager/"+name, err)
		failed = failed || !ok
		return ok
	}
	a, err := kubelet.StartAgent(repo, fixture, "conformance-node")
	if !check("agent-start", err) {
		return
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = a.Stop(10 * time.Second)
		}
		a.Cleanup(failed)
	}()
	if !check("agent-sockets", a.WaitSockets(30*time.Second)) {
		return
	}
	slicesOnStore, err := a.WaitSlices(ctx, 10*time.Second)
	if !check("slices-in-store", err) {
		slicesOnStore = kubelet.ContractSlices(a.Node, 8) // keep going; the failure stays counted
	}

	// A pod with one claim, allocated by the scheduler's allocator, reserved for the pod.
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "trainer", Namespace: "conformance", UID: "pod-0000-4000-8000-000000000001"},
		Spec: v1.PodSpec{NodeName: a.Node,
			ResourceClaims: []v1.PodResourceClaim{{Name: "gpus", ResourceClaimName: ptr("trainer-gpus")}},
			Containers:     []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{Claims: []v1.ResourceClaim{{Name: "gpus"}}}}}}}
	claim := &resourceapi.ResourceClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"},
		ObjectMeta: metav1.ObjectMeta{Name: "trainer-gpus", Namespace: "conformance", UID: types.UID("c1a1a000-0000-4000-8000-000000000002")},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpus",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 2}}}}},
	}
	res := oracle.Allocate(ctx, &oracle.Case{Node: a.Node, Slices: slicesOnStore, DeviceClasses: gen.DeviceClasses(), Claim: *claim})
	if !res.Fits {
		check("allocate", fmt.Errorf("scheduler allocator: fits=%v %s", res.Fits, res.Error))
		return
	}
	claim.Status.Allocation = &resourceapi.AllocationResult{}
	for _, d := range res.Devices {
		claim.Status.Allocation.Devices.Results = append(claim.Status.Allocation.Devices.Results,
			resourceapi.DeviceRequestAllocationResult{Request: d.Request, Driver: d.Driver, Pool: d.Pool, Device: d.Device})
	}
	claim.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod.Name, UID: pod.UID}}
	if !check("store-claim", a.WriteClaim(claim)) {
		return
	}
	client := fake.NewSimpleClientset(claim)

	logger := klog.FromContext(ctx)
	mgr, err := dra.NewManager(logger, client, filepath.Join(a.Root, "kubelet-dra-state"))
	if !check("dra-manager-new", err) {
		return
	}
	defer mgr.Stop()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.Node, UID: "node-uid"}}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err = mgr.Start(mctx, func() []*v1.Pod { return []*v1.Pod{pod} }, func(context.Context) (*v1.Node, error) { return node, nil }, sourcesReady{})
	if !check("dra-manager-start", err) {
		return
	}
	pm := pluginmanager.NewPluginManager(filepath.Join(a.KubeletRoot, "plugins_registry"), record.NewFakeRecorder(100))
	pm.AddHandler("DRAPlugin", mgr.GetWatcherHandler())
	stopCh := make(chan struct{})
	defer close(stopCh)
	go pm.Run(mctx, sourcesReady{}, stopCh)

	plugins := mgr.GetWatcherHandler().(*draplugin.DRAPluginManager)
	registered := func() bool { p, err := plugins.GetPlugin(a.Driver); return err == nil && p != nil }
	if !check("registered-through-plugin-watcher", kubelet.WaitFor(ctx, 15*time.Second, registered)) {
		return
	}
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	err = mgr.PrepareResources(pctx, pod)
	pcancel()
	if !check("prepare-pod", err) {
		return
	}
	info, err := mgr.GetResources(pod, &pod.Spec.Containers[0])
	if err == nil {
		var names []string
		for _, d := range info.CDIDevices {
			names = append(names, d.Name)
		}
		for _, r := range claim.Status.Allocation.Devices.Results {
			want := fmt.Sprintf("k8s.gpu.tessera.dev/claim=%s-%s", claim.UID, r.Device)
			if !slices.Contains(names, want) {
				err = fmt.Errorf("container CDI devices %q lack %q", names, want)
			}
		}
	}
	check("container-cdi-devices", err)
	_, err = kubelet.ValidateCDISpecs(a.CDIRoot) // the spec the runtime would load, by the CDI library
	check("cdi-specs-valid", err)
	uctx, ucancel := context.WithTimeout(ctx, 20*time.Second)
	err = mgr.UnprepareResources(uctx, pod)
	ucancel()
	check("unprepare-pod", err)

	exitErr, gone := a.Stop(10 * time.Second)
	stopped = true
	check("agent-exit-0", exitErr)
	if !gone {
		check("agent-sockets-removed", fmt.Errorf("socket left after exit"))
	}
	check("deregistered-after-stop", kubelet.WaitFor(ctx, 15*time.Second, func() bool { return !registered() }))
	return
}

func ptr[T any](v T) *T { return &v }
