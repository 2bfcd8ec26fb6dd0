package main

// Surge handover (issue 14) through the kubelet's own plugin watcher and DRA manager: agent A
// (one DaemonSet pod, --rolling-update-uid) is registered and serving; agent B (the surge pod,
// another UID) starts on the same kubelet root, CDI root, store and state dir, takes the
// state dir over from A and registers its own sockets; A gets SIGTERM, as the DaemonSet
// controller sends once B is ready, and deregisters. Throughout, pods are prepared and
// unprepared through Manager.PrepareResources / UnprepareResources (the kubelet's call path
// for a pod: claim read from the API, GetPlugin's choice among the driver's registered
// plugins, NodePrepareResources, CDI IDs into the claim cache), by a few workers at once, so
// calls are in flight at every step. Required: 0 failures in at least 100 prepares, with at
// least perPhase in each phase; afterwards B serves, a claim prepared by A before the
// handover is still prepared with the same CDI IDs and an untouched CDI spec, and no prepared
// state is left of the pods that came and went.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"

	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/report"
)

const (
	surgeUIDA     = "surge-pod-a"
	surgeUIDB     = "surge-pod-b"
	surgeWorkers  = 3   // pods prepared at once, each on a GPU of its own
	surgePrepares = 100 // at least this many prepares in all
	perPhase      = 10  // and at least this many started in each phase the harness waits in
	callTimeout   = 45 * time.Second
)

var surgePhases = []string{"a-alone", "b-starting", "both-registered", "a-stopping", "b-alone"}

// surgeTally counts the pod prepares by the phase they started in.
type surgeTally struct {
	mu       sync.Mutex
	phase    int
	finished bool
	ok, bad  [5]int
	errs     []string
}

func (t *surgeTally) current() int { t.mu.Lock(); defer t.mu.Unlock(); return t.phase }
func (t *surgeTally) enter(p int)  { t.mu.Lock(); t.phase = p; t.mu.Unlock() }
func (t *surgeTally) stop()        { t.mu.Lock(); t.finished = true; t.mu.Unlock() }
func (t *surgeTally) stopped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finished
}
func (t *surgeTally) record(phase int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.ok[phase]++
		return
	}
	t.bad[phase]++
	if len(t.errs) < 5 {
		t.errs = append(t.errs, surgePhases[phase]+": "+err.Error())
	}
}
func (t *surgeTally) in(phase int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ok[phase] + t.bad[phase]
}
func (t *surgeTally) totals() (ok, bad int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range t.ok {
		ok, bad = ok+t.ok[i], bad+t.bad[i]
	}
	return ok, bad
}
func (t *surgeTally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for i, name := range surgePhases {
		parts = append(parts, fmt.Sprintf("%s %d/%d", name, t.ok[i], t.ok[i]+t.bad[i]))
	}
	return strings.Join(parts, ", ")
}

// activePods is what the manager's reconcile loop sees as running (it unprepares the rest).
type activePods struct {
	mu   sync.Mutex
	pods map[types.UID]*v1.Pod
}

func (a *activePods) add(p *v1.Pod)    { a.mu.Lock(); a.pods[p.UID] = p; a.mu.Unlock() }
func (a *activePods) remove(p *v1.Pod) { a.mu.Lock(); delete(a.pods, p.UID); a.mu.Unlock() }
func (a *activePods) list() []*v1.Pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*v1.Pod, 0, len(a.pods))
	for _, p := range a.pods {
		out = append(out, p)
	}
	return out
}

func cdiSpecOf(tree *kubelet.Agent, c *resourceapi.ResourceClaim) string {
	return filepath.Join(tree.CDIRoot, "k8s.gpu.tessera.dev-claim_"+string(c.UID)+".json")
}

// surge runs the handover; check reports one JSON line per check and counts failures.
func surge(ctx context.Context, repo, fixture string, check func(string, error) bool) {
	g, ok := openGroup("surge/", "surge-node", check)
	defer g.close()
	if !ok {
		return
	}
	tree, chk := g.tree, g.chk
	a, ok := g.startAgent(repo, fixture, "agent-a", surgeUIDA, 30*time.Second)
	if !ok {
		return
	}
	slicesOnStore, err := tree.WaitSlices(ctx, 10*time.Second)
	if !chk("slices-in-store", err) {
		return
	}

	// One claim A prepares before the handover and that stays prepared through it, and one
	// allocation per worker (each worker's pods reuse it under fresh claim names and UIDs).
	held := kubelet.NewClaim("surge-held", kubelet.GPUs("gpus", 2))
	prior := []resourceapi.ResourceClaim{}
	templates := make([]*resourceapi.ResourceClaim, surgeWorkers)
	err = kubelet.Allocate(ctx, tree, slicesOnStore, prior, held)
	for i := range templates {
		if err != nil {
			break
		}
		prior = append(prior, *held)
		templates[i] = kubelet.NewClaim(fmt.Sprintf("surge-worker-%d", i), kubelet.GPUs("gpu", 1))
		err = kubelet.Allocate(ctx, tree, slicesOnStore, prior, templates[i])
		prior = append(prior, *templates[i])
	}
	if !chk("allocate", err) {
		return
	}
	heldPod := podFor("surge-held", "5e0e0000-0000-4000-8000-000000000001", tree.Node, held)
	if !chk("store-claim", tree.WriteClaim(held)) {
		return
	}
	client := fake.NewSimpleClientset(held)
	active := &activePods{pods: map[types.UID]*v1.Pod{heldPod.UID: heldPod}}
	k, err := startKubelet(ctx, client, filepath.Join(tree.Root, "kubelet-dra-state"), tree.KubeletRoot, tree.Node, active.list)
	if !chk("dra-manager-start", err) {
		return
	}
	defer k.stop()
	if !chk("a-registered", kubelet.WaitFor(ctx, 15*time.Second, func() bool { return k.seen.hasRegistered(a.DRASocket()) })) {
		return
	}
	pctx, pcancel := context.WithTimeout(ctx, callTimeout)
	err = k.mgr.PrepareResources(pctx, heldPod)
	pcancel()
	var heldIDs []string
	if err == nil {
		heldIDs, err = containerCDIIDs(k.mgr, heldPod, held)
	}
	heldSpec, rerr := os.ReadFile(cdiSpecOf(tree, held))
	if !chk("held-claim-prepared-by-a", errors.Join(err, rerr)) {
		return
	}

	tally := &surgeTally{}
	var wg sync.WaitGroup
	for w := range templates {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !tally.stopped() && ctx.Err() == nil; n++ {
				phase := tally.current()
				tally.record(phase, podCycle(ctx, k, client, tree, active, templates[w], w, n))
			}
		}()
	}
	stopWorkers := func() { tally.stop(); wg.Wait() }
	waitPhase := func(p int) error {
		err := kubelet.WaitFor(ctx, 60*time.Second, func() bool { return tally.in(p) >= perPhase })
		if err != nil {
			return fmt.Errorf("fewer than %d pod prepares started in phase %s: %v (%s)", perPhase, surgePhases[p], err, tally)
		}
		return nil
	}
	ok = chk("prepares-a-alone", waitPhase(0))

	// The surge pod: another UID, the same node directories; it asks A for the state dir.
	var b *kubelet.Agent
	if ok {
		tally.enter(1)
		b, ok = g.startAgent(repo, fixture, "agent-b", surgeUIDB, 60*time.Second)
	}
	ok = ok && chk("b-registered", kubelet.WaitFor(ctx, 30*time.Second, func() bool { return k.seen.hasRegistered(b.DRASocket()) }))
	if ok {
		tally.enter(2)
		ok = chk("prepares-both-registered", waitPhase(2))
	}
	if ok {
		tally.enter(3)
		exitErr, gone := a.Stop(15 * time.Second)
		chk("agent-a-exit-0", exitErr)
		_, e1 := os.Stat(b.RegSocket())
		_, e2 := os.Stat(b.DRASocket())
		switch {
		case !gone:
			chk("agent-a-removes-only-own-sockets", fmt.Errorf("A left %s or %s after exit", a.RegSocket(), a.DRASocket()))
		case e1 != nil || e2 != nil:
			chk("agent-a-removes-only-own-sockets", fmt.Errorf("B's sockets gone after A exited: %v %v", e1, e2))
		default:
			chk("agent-a-removes-only-own-sockets", nil)
		}
		ok = chk("a-deregistered", kubelet.WaitFor(ctx, 15*time.Second, func() bool { return k.seen.hasDeregistered(a.DRASocket()) }))
	}
	if ok {
		tally.enter(4)
		ok = chk("prepares-b-alone", waitPhase(4))
		if ok {
			ok = chk("prepares-total", kubelet.WaitFor(ctx, 60*time.Second, func() bool { n, bad := tally.totals(); return n+bad >= surgePrepares }))
		}
	}
	stopWorkers()
	nOK, nBad := tally.totals()
	if nBad > 0 || nOK < surgePrepares {
		chk("prepares-0-failures", fmt.Errorf("%d of %d pod prepares failed (%s): %s", nBad, nOK+nBad, tally, strings.Join(tally.errs, "; ")))
	} else {
		report.PassWith(tier, "kubelet-dra-manager/surge/prepares-0-failures", fmt.Sprintf("%d pod prepares, 0 failed, per phase ok/started: %s", nOK, tally))
	}
	if !ok {
		return
	}

	// After the handover: B serves the kubelet (A is gone), and what A prepared is intact.
	chk("state-intact", heldIntact(ctx, k, tree, held, heldIDs, heldSpec))
	uctx, ucancel := context.WithTimeout(ctx, callTimeout)
	err = k.mgr.UnprepareResources(uctx, heldPod)
	ucancel()
	if _, serr := os.Stat(cdiSpecOf(tree, held)); err == nil && !os.IsNotExist(serr) {
		err = fmt.Errorf("CDI spec %s still there after unprepare", cdiSpecOf(tree, held))
	}
	chk("held-claim-unprepared-by-b", err)
	exitErr, gone := b.Stop(10 * time.Second)
	chk("agent-b-exit-0", exitErr)
	if !gone {
		chk("agent-b-sockets-removed", fmt.Errorf("B left a socket after exit"))
	}
	chk("b-deregistered", kubelet.WaitFor(ctx, 15*time.Second, func() bool { return k.seen.hasDeregistered(b.DRASocket()) }))
}

// podCycle is one pod coming and going: its claim (worker w's allocation under a fresh name
// and UID) in the store and the API, PrepareResources, the container's CDI IDs,
// UnprepareResources.
func podCycle(ctx context.Context, k *kubeletSide, client kubernetes.Interface, tree *kubelet.Agent, active *activePods, tmpl *resourceapi.ResourceClaim, w, n int) error {
	c := kubelet.NewClaim(fmt.Sprintf("surge-w%d-%03d", w, n), tmpl.Spec.Devices.Requests...)
	c.Status.Allocation = tmpl.Status.Allocation.DeepCopy()
	pod := podFor(c.Name, fmt.Sprintf("5e0e0000-0000-4000-8%03d-%012d", w+1, n), tree.Node, c)
	if err := tree.WriteClaim(c); err != nil {
		return err
	}
	if _, err := client.ResourceV1().ResourceClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{}); err != nil {
		return err
	}
	active.add(pod)
	defer active.remove(pod)
	pctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := k.mgr.PrepareResources(pctx, pod); err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	if _, err := containerCDIIDs(k.mgr, pod, c); err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	if err := k.mgr.UnprepareResources(pctx, pod); err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	return nil
}

// heldIntact asks the plugin the kubelet now uses (B: A is gone), through the kubelet's own
// client (DRAPlugin.NodePrepareResources), to prepare a claim on a device of the held claim
// (refused: B knows it is taken) and the held claim again: it must answer
// the CDI IDs A gave before the handover, leave A's CDI spec byte-identical, and the CDI root
// must hold no spec but that one (every pod that came and went was unprepared).
func heldIntact(ctx context.Context, k *kubeletSide, tree *kubelet.Agent, held *resourceapi.ResourceClaim, ids []string, spec []byte) error {
	p, err := k.plugins.GetPlugin(tree.Driver)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// B must know what A prepared (the checkpoint it took over), not just be able to redo it:
	// a claim on one of the held claim's devices, which no scheduler would allocate, is refused.
	intruder := kubelet.NewClaim("surge-intruder", kubelet.GPUs("gpu", 1))
	intruder.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{
		Results: held.Status.Allocation.Devices.Results[:1]}}
	if err := tree.WriteClaim(intruder); err != nil {
		return err
	}
	iresp, err := p.NodePrepareResources(cctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{{Namespace: intruder.Namespace, Name: intruder.Name, Uid: string(intruder.UID)}}})
	if err != nil {
		return fmt.Errorf("prepare of a claim on a held device: %w", err)
	}
	if ir := iresp.Claims[string(intruder.UID)]; ir == nil || !strings.Contains(ir.Error, "TESSERA_DEVICE_CONFLICT") || !strings.Contains(ir.Error, string(held.UID)) {
		return fmt.Errorf("after the handover a claim on %s, prepared for %s before it, got %+v; want TESSERA_DEVICE_CONFLICT naming uid %s (the new pod lost the prepared state)",
			held.Status.Allocation.Devices.Results[0].Device, held.Name, ir, held.UID)
	}
	resp, err := p.NodePrepareResources(cctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{{Namespace: held.Namespace, Name: held.Name, Uid: string(held.UID)}}})
	if err != nil {
		return fmt.Errorf("prepare again after the handover: %w", err)
	}
	r := resp.Claims[string(held.UID)]
	if r == nil || r.Error != "" {
		return fmt.Errorf("prepare again after the handover: %+v", r)
	}
	var got []string
	for _, d := range r.Devices {
		got = append(got, d.CdiDeviceIds...)
	}
	slices.Sort(got)
	var problems []string
	if !slices.Equal(got, ids) {
		problems = append(problems, fmt.Sprintf("CDI IDs after the handover %q, before %q", got, ids))
	}
	if now, err := os.ReadFile(cdiSpecOf(tree, held)); err != nil || string(now) != string(spec) {
		problems = append(problems, fmt.Sprintf("CDI spec of the held claim changed or is gone (%v)", err))
	}
	entries, err := os.ReadDir(tree.CDIRoot)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if filepath.Join(tree.CDIRoot, e.Name()) != cdiSpecOf(tree, held) {
			problems = append(problems, "CDI spec left behind: "+e.Name())
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}
