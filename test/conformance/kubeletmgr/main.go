// kubelet-dra registers `tessera agent` through the kubelet's own plugin watcher and DRA
// manager (k8s.io/kubernetes/pkg/kubelet/pluginmanager and .../cm/dra) and prepares a
// pod's claims through it, then unprepares them and checks the plugin deregisters when
// the agent stops; then a surge rolling update of two agent pods (surge.go) and the device
// health stream into the pod status (health.go). A separate module: k8s.io/kubernetes needs `replace` lines pinning every
// staging module, and the other tiers must not depend on it building.
package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"

	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/report"
)

const tier = 1

func main() { report.RunTier(run) }

func run(ctx context.Context, repo, fixture string) (failed bool) {
	check := func(name string, err error) bool {
		ok := report.Check(tier, "kubelet-dra-manager/"+name, err)
		failed = failed || !ok
		return ok
	}
	registerPrepare(ctx, repo, fixture, check)
	surge(ctx, repo, fixture, check)
	health(ctx, repo, fixture, check)
	return failed
}

// registerPrepare: one agent registered by the plugin watcher, a pod prepared and unprepared
// through the manager, the plugin deregistered once the agent stops.
func registerPrepare(ctx context.Context, repo, fixture string, check func(string, error) bool) {
	failed := false
	check = func(inner func(string, error) bool) func(string, error) bool {
		return func(name string, err error) bool { ok := inner(name, err); failed = failed || !ok; return ok }
	}(check)
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
	claim := kubelet.NewClaim("trainer-gpus", kubelet.GPUs("gpus", 2))
	if !check("allocate", kubelet.Allocate(ctx, a, slicesOnStore, nil, claim)) {
		return
	}
	pod := podFor("trainer", "pod-0000-4000-8000-000000000001", a.Node, claim)
	if !check("store-claim", a.WriteClaim(claim)) {
		return
	}
	k, err := startKubelet(ctx, fake.NewSimpleClientset(claim), filepath.Join(a.Root, "kubelet-dra-state"), a.KubeletRoot, a.Node,
		func() []*v1.Pod { return []*v1.Pod{pod} })
	if !check("dra-manager-start", err) {
		return
	}
	defer k.stop()
	mgr := k.mgr
	registered := func() bool { p, err := k.plugins.GetPlugin(a.Driver); return err == nil && p != nil }
	if !check("registered-through-plugin-watcher", kubelet.WaitFor(ctx, 15*time.Second, registered)) {
		return
	}
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	err = mgr.PrepareResources(pctx, pod)
	pcancel()
	if !check("prepare-pod", err) {
		return
	}
	_, err = containerCDIIDs(mgr, pod, claim)
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
}
