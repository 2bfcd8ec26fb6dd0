package main

// Tier 4: real scheduling. kube-scheduler and kube-controller-manager (its ResourceClaim
// controller) run in this process against the Tier 3 API server; each fake node is a Node
// object whose ResourceSlices `tessera agent` publishes with its own ServiceAccount token;
// Pods with ResourceClaimTemplates are placed by the real scheduler, `tessera diag explain`
// is asked first and must predict the verdict (and, when it fits, the devices); the kubelet's
// DRA manager then prepares each bound pod's claims through the agent's DRA socket.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"tessera.dev/conformance/kubelet"
)

const schedNS = "tier4"

// podCase is one Pod with one ResourceClaimTemplate, whose spec is a shipped example's
// (Example, under deploy/examples) or, for a case no example covers, Spec.
type podCase struct {
	Name, Example string
	Spec          *resourceapi.ResourceClaimSpec
}

// nodeCase is one fake node: the agent's discovery, flags and environment, and its pods in
// the order they are created (later pods see earlier pods' allocations).
type nodeCase struct {
	Node, Discovery string
	Env, Flags      []string
	Pods            []podCase
}

func schedulingCases(repo string) []nodeCase {
	migFixture := filepath.Join(repo, "fixtures", "nodes", "h100-sxm-8x-mig")
	gpus := func(n int64) *resourceapi.ResourceClaimSpec {
		return &resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpus",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: n}}}}}
	}
	return []nodeCase{
		{Node: "t4-gpus", Discovery: "fixture:h100-sxm-8x", Pods: []podCase{
			{Name: "one-gpu", Example: "one-gpu.yaml"},
			{Name: "first-available", Example: "prefer-h100-else-a100.yaml"},
			// 8 GPUs, 2 taken by the pods above: 6 free, so 7 cannot fit.
			{Name: "seven-gpus", Spec: gpus(7)},
		}},
		{Node: "t4-mig-static", Discovery: "fixture:mixed-2numa-h100-mig", Flags: []string{"--mig-mode", "static"}, Pods: []podCase{
			{Name: "mig-static", Example: "mig-1g.yaml"},
		}},
		{Node: "t4-mig-dynamic", Discovery: "nvidia-smi",
			Env: []string{"TESSERA_SIM_FIXTURE=" + migFixture, "NODE_OPTIONS="},
			Flags: []string{"--nvidia-smi", filepath.Join(repo, "test", "support", "nvidia-smi-sim.mjs"),
				"--sysfs-root", filepath.Join(migFixture, "sys"), "--proc-root", filepath.Join(migFixture, "proc"), "--mig-mode", "dynamic"},
			Pods: []podCase{{Name: "mig-dynamic", Example: "mig-1g.yaml"}}},
		{Node: "t4-shared", Discovery: "fixture:h100-sxm-8x", Flags: []string{"--gpu-sharing", "consumable"}, Pods: []podCase{
			{Name: "shared-a", Example: "shared-gpu.yaml"},
			{Name: "shared-b", Example: "shared-gpu.yaml"},
		}},
	}
}

// podRow is one line of the pod table.
type podRow struct {
	Pod, Claim, Node, Scheduler, Explain string
	Devices                              []string
}

func runScheduling(ctx context.Context, repo, dir, server, kubeconfig string, admin *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	wrap := func(name string, err error) bool { ok := check("sched/"+name, err); failed = failed || !ok; return ok }
	cctx, stop := context.WithCancel(ctx)
	schedDone, kcmDone := make(chan error, 1), make(chan error, 1)
	defer func() {
		stop()
		for _, c := range []chan error{schedDone, kcmDone} {
			select {
			case <-c:
			case <-time.After(20 * time.Second):
				fmt.Fprintln(os.Stderr, "tier4: a control-plane component did not stop within 20s")
			}
		}
	}()
	if !wrap("kube-scheduler-start", startScheduler(cctx, kubeconfig, schedDone)) {
		kcmDone <- nil
		return
	}
	if !wrap("kube-controller-manager-start", startControllerManager(cctx, kubeconfig, kcmDone)) {
		return
	}
	// The shipped RBAC, DeviceClasses and admission policy: the agent runs with its own token.
	objs, err := renderDeploy(repo, "overlays/nvidia")
	if !wrap("render-deploy", err) {
		return
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if !wrap("admin-config", err) {
		return
	}
	ap, err := newApplier(rc)
	if !wrap("applier", err) {
		return
	}
	if !wrap(fmt.Sprintf("apply-deploy (%d objects)", len(objs)), applyAll(ctx, ap, objs)) {
		return
	}
	agentID := identities(objs)["agent"]
	if agentID == nil {
		wrap("identities", fmt.Errorf("no workload runs `tessera agent` in deploy/overlays/nvidia"))
		return
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: schedNS}}, metav1.CreateOptions{}); !wrap("create-namespace", err) {
		return
	}
	var rows []podRow
	for _, nc := range schedulingCases(repo) {
		r, f := runNodeCase(ctx, repo, dir, server, *agentID, nc, admin, wrap)
		rows = append(rows, r...)
		failed = failed || f
	}
	printPodTable(rows)
	return failed
}

// readyNode is a Node the scheduler will consider: Ready, room for pods, its hostname label.
func readyNode(name string) *v1.Node {
	room := v1.ResourceList{v1.ResourcePods: resource.MustParse("110"), v1.ResourceCPU: resource.MustParse("64"), v1.ResourceMemory: resource.MustParse("512Gi")}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Status: v1.NodeStatus{Capacity: room, Allocatable: room,
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now()}}}}
}

func runNodeCase(ctx context.Context, repo, dir, server string, id identity, nc nodeCase, admin *kubernetes.Clientset,
	wrap func(string, error) bool) (rows []podRow, failed bool) {
	w := func(name string, err error) bool {
		ok := wrap(nc.Node+"/"+name, err)
		failed = failed || !ok
		return ok
	}
	node, err := admin.CoreV1().Nodes().Create(ctx, readyNode(nc.Node), metav1.CreateOptions{})
	if !w("create-node", err) {
		return
	}
	node.Status = readyNode(nc.Node).Status
	if node, err = admin.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); !w("node-ready", err) {
		return
	}
	// The TaintNodesByCondition admission tainted the new Node not-ready (its status was
	// empty at create); the node lifecycle controller lifts that once the node reports Ready.
	// It is not running here, so the harness does its one step.
	node.Spec.Taints = nil
	if node, err = admin.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); !w("node-untainted", err) {
		return
	}
	if !w("agent-token", mintToken(ctx, admin, &id, nc.Node, dir, server)) {
		return
	}
	kube := "kubeconfig:" + id.Kubeconfig
	env, simState := nc.Env, ""
	if nc.Discovery == "nvidia-smi" {
		simState = filepath.Join(dir, nc.Node+"-sim-state.json")
		env = append(append([]string(nil), env...), "TESSERA_SIM_STATE="+simState)
	}
	a, err := kubelet.StartAgentEnv(repo, nc.Discovery, nc.Node, kube, env, nc.Flags...)
	if !w("agent-start", err) {
		return
	}
	defer func() { _, _ = a.Stop(10 * time.Second); a.Cleanup(failed) }()
	if !w("agent-sockets", a.WaitSockets(30*time.Second)) {
		return
	}
	if !w("slices-published", withTail(waitPool(ctx, admin, nc.Node), a)) {
		return
	}
	k, err := startNodeKubelet(ctx, admin, a, node)
	if !w("kubelet-dra-manager-registered", err) {
		return
	}
	defer k.stop()
	var bound []*v1.Pod
	for _, pc := range nc.Pods {
		row, pod, f := runPodCase(ctx, repo, a, kube, nc.Node, pc, admin, k, wrap)
		rows = append(rows, row)
		failed = failed || f
		if pod != nil {
			bound = append(bound, pod)
		}
	}
	var migDevices []string // what the bound pods hold, as the simulated GPUs must show it
	for _, r := range rows {
		if r.Scheduler == "bound" {
			migDevices = append(migDevices, r.Devices...)
		}
	}
	if simState != "" {
		w("mig-instances-created", migInstancesAre(simState, migDevices))
	}
	for _, pod := range bound {
		w(pod.Name+"/kubelet-unprepare", k.unprepare(ctx, pod))
	}
	if simState != "" {
		w("mig-instances-destroyed", migInstancesAre(simState, nil))
	}
	return
}

var migPlacement = regexp.MustCompile(`-mig-(\d+)-(\d+)-(\d+)$`)

// migInstancesAre reads the simulated nvidia-smi's state: the MIG instances on its GPUs must
// be exactly the placements (profile, start, size) of the dynamic MIG devices given.
func migInstancesAre(stateFile string, devices []string) error {
	var want, got []string
	for _, d := range devices {
		if m := migPlacement.FindStringSubmatch(d); m != nil {
			want = append(want, m[1]+":"+m[2]+":"+m[3])
		}
	}
	b, err := os.ReadFile(stateFile)
	if err != nil && !(os.IsNotExist(err) && len(want) == 0) {
		return fmt.Errorf("simulated nvidia-smi state: %w", err)
	}
	if err == nil {
		var st struct {
			GPUs map[string]struct {
				Instances []struct{ ProfileID, Start, Size int } `json:"instances"`
			} `json:"gpus"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("simulated nvidia-smi state: %w", err)
		}
		for _, g := range st.GPUs {
			for _, in := range g.Instances {
				got = append(got, fmt.Sprintf("%d:%d:%d", in.ProfileID, in.Start, in.Size))
			}
		}
	}
	if !sameSet(got, want) {
		return fmt.Errorf("MIG instances (profile:start:size) on the simulated GPUs are %v, want %v", got, want)
	}
	return nil
}

// waitPool waits until the server holds the node's whole pool (ResourceSliceCount slices).
func waitPool(ctx context.Context, client *kubernetes.Clientset, node string) error {
	return kubelet.WaitFor(ctx, 30*time.Second, func() bool {
		l, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		return err == nil && len(l.Items) > 0 && int64(len(l.Items)) >= l.Items[0].Spec.Pool.ResourceSliceCount
	})
}

// explainAnswer is the part of `tessera diag explain -o json` the checks read.
type explainAnswer struct {
	Fits    bool `json:"fits"`
	Devices []struct {
		Request, Device string
	} `json:"devices"`
}

func claimSpec(repo string, pc podCase) (resourceapi.ResourceClaimSpec, error) {
	if pc.Spec != nil {
		return *pc.Spec, nil
	}
	b, err := os.ReadFile(filepath.Join(repo, "deploy", "examples", pc.Example))
	if err != nil {
		return resourceapi.ResourceClaimSpec{}, err
	}
	var c resourceapi.ResourceClaim
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return resourceapi.ResourceClaimSpec{}, fmt.Errorf("deploy/examples/%s: %w", pc.Example, err)
	}
	return c.Spec, nil
}

// runPodCase: explain, create template + pod, await the scheduler's verdict, compare; when
// bound, prepare through the kubelet's DRA manager and check the CDI IDs. It returns the
// bound pod (for unprepare) or nil.
func runPodCase(ctx context.Context, repo string, a *kubelet.Agent, kube, node string, pc podCase, admin *kubernetes.Clientset, k *nodeKubelet,
	wrap func(string, error) bool) (row podRow, bound *v1.Pod, failed bool) {
	w := func(name string, err error) bool {
		ok := wrap(node+"/"+pc.Name+"/"+name, err)
		failed = failed || !ok
		return ok
	}
	row = podRow{Pod: pc.Name, Node: node, Scheduler: "-", Explain: "-"}
	spec, err := claimSpec(repo, pc)
	if !w("claim-spec", err) {
		return
	}
	// What an operator runs in the agent's container: explain the claim the template makes.
	file := filepath.Join(a.Root, pc.Name+".json")
	if !w("claim-file", writeJSON(file, map[string]any{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
		"metadata": map[string]any{"name": pc.Name, "namespace": schedNS}, "spec": spec})) {
		return
	}
	out, err := tessera(repo, "diag", "explain", "-f", file, "--node-name", node, "--kube", kube, "-o", "json")
	var ex explainAnswer
	if jerr := json.Unmarshal([]byte(out), &ex); jerr != nil {
		w("explain", fmt.Errorf("no JSON answer (%v): %v", jerr, err))
		return
	}
	row.Explain = map[bool]string{true: "fits", false: "does not fit"}[ex.Fits]
	var predicted []string
	for _, d := range ex.Devices {
		predicted = append(predicted, d.Request+"="+d.Device)
	}
	w("explain", nil)

	tmpl := &resourceapi.ResourceClaimTemplate{ObjectMeta: metav1.ObjectMeta{Name: pc.Name, Namespace: schedNS},
		Spec: resourceapi.ResourceClaimTemplateSpec{Spec: spec}}
	if _, err := admin.ResourceV1().ResourceClaimTemplates(schedNS).Create(ctx, tmpl, metav1.CreateOptions{}); !w("create-template", err) {
		return
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pc.Name, Namespace: schedNS},
		Spec: v1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/hostname": node},
			ResourceClaims: []v1.PodResourceClaim{{Name: "gpu", ResourceClaimTemplateName: &pc.Name}},
			Containers: []v1.Container{{Name: "main", Image: "tessera-workload",
				Resources: v1.ResourceRequirements{Claims: []v1.ResourceClaim{{Name: "gpu"}}}}}}}
	if _, err := admin.CoreV1().Pods(schedNS).Create(ctx, pod, metav1.CreateOptions{}); !w("create-pod", err) {
		return
	}
	pod, verdict, err := awaitVerdict(ctx, admin, pc.Name)
	if !w("scheduler-verdict", err) {
		return
	}
	row.Scheduler = verdict
	claim, claimErr := podClaim(ctx, admin, pod)
	if claim != nil {
		row.Claim = claim.Name
	}
	boundNow := verdict == "bound"
	if boundNow != ex.Fits {
		w("verdict-as-explained", fmt.Errorf("explain said fits=%v, the scheduler: %s", ex.Fits, verdict))
		return
	}
	w("verdict-as-explained", nil)
	if !boundNow {
		return
	}
	if claimErr == nil && claim.Status.Allocation == nil {
		claimErr = fmt.Errorf("claim %s of bound pod %s has no allocation", claim.Name, pod.Name)
	}
	if !w("generated-claim", claimErr) {
		return
	}
	var got []string
	for _, r := range claim.Status.Allocation.Devices.Results {
		got = append(got, r.Request+"="+r.Device)
		row.Devices = append(row.Devices, r.Device)
	}
	if !sameSet(got, predicted) {
		w("same-devices-as-explained", fmt.Errorf("scheduler allocated %v, explain predicted %v", got, predicted))
	} else {
		w("same-devices-as-explained", nil)
	}
	ids, err := k.prepare(ctx, pod)
	if !w("kubelet-prepare", err) {
		return
	}
	bound = pod
	var want []string
	for _, r := range claim.Status.Allocation.Devices.Results {
		want = append(want, fmt.Sprintf("k8s.gpu.tessera.dev/claim=%s-%s", claim.UID, r.Device))
	}
	if !sameSet(ids, want) {
		w("cdi-device-ids", fmt.Errorf("the container gets %v, want %v", ids, want))
	} else {
		w("cdi-device-ids", nil)
	}
	return
}

// claimUnschedulable is how the scheduler's DynamicResources plugin says a node cannot
// allocate a pod's claims.
const claimUnschedulable = "cannot allocate all claims"

// awaitVerdict watches the pod until the scheduler binds it ("bound") or marks it
// unschedulable for its claim ("Pending: <message>"). An unschedulable condition for another
// reason (a taint, a claim not created yet) may be transient: it is remembered and named if
// nothing else comes within the time limit.
func awaitVerdict(ctx context.Context, client *kubernetes.Clientset, name string) (*v1.Pod, string, error) {
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	last := ""
	verdict := func(p *v1.Pod) string {
		if p.Spec.NodeName != "" {
			return "bound"
		}
		for _, c := range p.Status.Conditions {
			if c.Type == v1.PodScheduled && c.Status == v1.ConditionFalse && c.Reason == v1.PodReasonUnschedulable {
				if strings.Contains(c.Message, claimUnschedulable) {
					return "Pending: " + c.Message
				}
				last = c.Message
			}
		}
		return ""
	}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	l, err := client.CoreV1().Pods(schedNS).List(wctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, "", err
	}
	if len(l.Items) == 1 && verdict(&l.Items[0]) != "" {
		return &l.Items[0], verdict(&l.Items[0]), nil
	}
	watch, err := client.CoreV1().Pods(schedNS).Watch(wctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
	if err != nil {
		return nil, "", err
	}
	defer watch.Stop()
	for ev := range watch.ResultChan() {
		if p, ok := ev.Object.(*v1.Pod); ok && verdict(p) != "" {
			return p, verdict(p), nil
		}
	}
	if last != "" {
		return nil, "", fmt.Errorf("not bound and not unschedulable for its claim within 60s; unschedulable: %s", last)
	}
	return nil, "", fmt.Errorf("neither bound nor unschedulable within 60s")
}

// podClaim is the ResourceClaim the ResourceClaim controller generated for the pod's one
// claim, as the scheduler left it.
func podClaim(ctx context.Context, client *kubernetes.Clientset, pod *v1.Pod) (*resourceapi.ResourceClaim, error) {
	for _, s := range pod.Status.ResourceClaimStatuses {
		if s.ResourceClaimName == nil {
			continue
		}
		c, err := client.ResourceV1().ResourceClaims(pod.Namespace).Get(ctx, *s.ResourceClaimName, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("pod %s has no generated claim in status.resourceClaimStatuses", pod.Name)
}

func printPodTable(rows []podRow) {
	fmt.Fprintf(os.Stderr, "tier4 pods:\n%-16s %-26s %-15s %-10s %-13s %s\n", "POD", "CLAIM", "NODE", "SCHEDULER", "EXPLAIN", "DEVICES")
	for _, r := range rows {
		s := r.Scheduler
		if strings.HasPrefix(s, "Pending") {
			s = "Pending"
		}
		devs := strings.Join(r.Devices, ",")
		if devs == "" {
			devs = "-"
		}
		claim := r.Claim
		if claim == "" {
			claim = "-"
		}
		fmt.Fprintf(os.Stderr, "%-16s %-26s %-15s %-10s %-13s %s\n", r.Pod, claim, r.Node, s, r.Explain, devs)
	}
	for _, r := range rows {
		if strings.HasPrefix(r.Scheduler, "Pending: ") {
			fmt.Fprintf(os.Stderr, "tier4: %s pending: %s\n", r.Pod, strings.TrimPrefix(r.Scheduler, "Pending: "))
		}
	}
}

// sameSet: the same strings, in any order (sorts both in place, so errors print them sorted).
func sameSet(a, b []string) bool {
	sort.Strings(a)
	sort.Strings(b)
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}
