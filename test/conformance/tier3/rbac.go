package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/oracle"
	"tessera.dev/conformance/report"
)

// scenario is one install of the shipped manifests with its own nodes and object names:
// kustomize's deploy/overlays/nvidia, then the Helm chart's defaults in its own namespace
// (which rebinds the cluster-scoped roles and policy to the chart's ServiceAccounts). The
// agent runs on NodeA; NodeB's slices are someone else's.
type scenario struct {
	Name         string // check prefix and object name prefix: rbac, rbac-helm
	NodeA, NodeB string
	Objs         []unstructured.Unstructured
}

// helmNamespace is the chart's release namespace, apart from kustomize's tessera-system.
const helmNamespace = "tessera-helm"

// identity is one ServiceAccount the shipped manifests run a `tessera` command under.
type identity struct {
	Namespace, Name string
	Commands        []string // the first arg of each container running as it: agent, proxy
	Kubeconfig      string
}

func (i identity) user() string { return "system:serviceaccount:" + i.Namespace + ":" + i.Name }

// identities reads, from the rendered workloads, which ServiceAccount runs which command.
func identities(objs []unstructured.Unstructured) map[string]*identity {
	out := map[string]*identity{} // by command
	for _, o := range objs {
		switch o.GetKind() {
		case "DaemonSet", "Deployment", "StatefulSet":
		default:
			continue
		}
		sa, _, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "serviceAccountName")
		if sa == "" {
			sa = "default"
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			args, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "args")
			if len(args) == 0 {
				continue
			}
			id := &identity{Namespace: o.GetNamespace(), Name: sa}
			for _, prev := range out {
				if prev.Namespace == id.Namespace && prev.Name == id.Name {
					id = prev
				}
			}
			id.Commands = append(id.Commands, args[0])
			out[args[0]] = id
		}
	}
	return out
}

// mintToken makes what the kubelet makes for a pod: a Pod bound to node, then a
// TokenRequest bound to that Pod, so the token carries the node name the admission policy
// reads (ServiceAccountTokenPodNodeInfo).
func mintToken(ctx context.Context, admin *kubernetes.Clientset, id *identity, node, dir, server string) error {
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sa-" + id.Name + "-" + node, Namespace: id.Namespace},
		Spec: v1.PodSpec{NodeName: node, ServiceAccountName: id.Name, Containers: []v1.Container{{Name: "c", Image: "tessera"}}}}
	pod, err := admin.CoreV1().Pods(id.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("pod for %s: %w", id.user(), err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(id.Namespace).CreateToken(ctx, id.Name, &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](3600),
		BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("TokenRequest for %s: %w", id.user(), err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["t3"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	cfg.AuthInfos[id.Name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["t3"] = &clientcmdapi.Context{Cluster: "t3", AuthInfo: id.Name}
	cfg.CurrentContext = "t3"
	id.Kubeconfig = filepath.Join(dir, "kubeconfig-"+id.Namespace+"-"+id.Name+"-"+node)
	return clientcmd.WriteToFile(*cfg, id.Kubeconfig)
}

func clientFor(kubeconfig string) (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rc)
}

// runRBAC applies the shipped manifests to the server (Node,RBAC authorization, the
// ValidatingAdmissionPolicy admission) and runs every in-cluster command with its own
// ServiceAccount's token; then checks the cross-node denials and that every rule was used.
// Once for the kustomize overlay, once for the Helm chart, whose rules must be the same.
func runRBAC(ctx context.Context, repo, fixture, dir, server, auditLog string, admin *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	wrap := func(name string, err error) bool { ok := check("rbac/"+name, err); failed = failed || !ok; return ok }
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
	if !wrap("admin-config", err) {
		return
	}
	ap, err := newApplier(rc)
	if !wrap("applier", err) {
		return
	}
	crdObj := inferencePoolCRD()
	if !wrap("inferencepool-crd", ap.apply(ctx, crdObj)) {
		return
	}
	poolGVR := schema.GroupVersionResource{Group: "inference.networking.k8s.io", Version: "v1", Resource: "inferencepools"}
	if !wrap("inferencepool-crd-served", ap.waitServed(ctx, poolGVR)) {
		return
	}
	kustomized, err := renderDeploy(repo, "overlays/nvidia")
	if !wrap("render-deploy", err) {
		return
	}
	chart, err := renderChart(repo, helmNamespace)
	helmOK := check("rbac-helm/render-chart", err)
	failed = !helmOK
	failed = runScenario(ctx, repo, fixture, dir, server, auditLog, admin, ap, &scenario{Name: "rbac", NodeA: "rbac-node-a", NodeB: "rbac-node-b", Objs: kustomized}, check) || failed
	if !helmOK {
		return true
	}
	failed = !check("rbac-helm/rules-as-kustomize", sameRules(kustomized, chart)) || failed
	return runScenario(ctx, repo, fixture, dir, server, auditLog, admin, ap, &scenario{Name: "rbac-helm", NodeA: "helm-node-a", NodeB: "helm-node-b", Objs: chart}, check) || failed
}

// runScenario applies one rendering and runs the agent, the proxy and the diag verbs with
// its ServiceAccounts' tokens, the cross-node denials and the unused-rule check.
func runScenario(ctx context.Context, repo, fixture, dir, server, auditLog string, admin *kubernetes.Clientset, ap *applier, sc *scenario, check func(string, error) bool) (failed bool) {
	wrap := func(name string, err error) bool {
		ok := check(sc.Name+"/"+name, err)
		failed = failed || !ok
		return ok
	}
	objs := sc.Objs
	if !wrap(fmt.Sprintf("apply-deploy (%d objects)", len(objs)), applyAll(ctx, ap, objs)) {
		return
	}
	ids := identities(objs)
	agentID, proxyID := ids["agent"], ids["proxy"]
	if agentID == nil || proxyID == nil {
		wrap("identities", fmt.Errorf("no workload runs `tessera agent` and `tessera proxy` (found %v)", keys(ids)))
		return
	}
	for _, n := range []string{sc.NodeA, sc.NodeB} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); !wrap("create-node-"+n, err) {
			return
		}
	}
	minted := map[*identity]bool{}
	for _, id := range []*identity{agentID, proxyID} {
		if minted[id] {
			continue
		}
		minted[id] = true
		if !wrap("token-"+id.Namespace+"/"+id.Name, mintToken(ctx, admin, id, sc.NodeA, dir, server)) {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "tier3 %s: agent runs as %s, proxy as %s\n", sc.Name, agentID.user(), proxyID.user())

	failed = runAgentAsSA(ctx, repo, fixture, sc, agentID, admin, wrap) || failed
	failed = runProxyAsSA(ctx, repo, sc, proxyID, objs, ap, admin, wrap) || failed
	failed = crossNodeDenials(ctx, sc, agentID, admin, wrap) || failed
	rules := boundRules(objs, []*identity{agentID, proxyID})
	return checkRulesUsed(sc.Name, auditLog, rules, wrap) || failed
}

// sameRules: the chart must grant exactly what the kustomize overlay grants, per
// ServiceAccount name, (group, resource, verb).
func sameRules(kustomized, chart []unstructured.Unstructured) error {
	set := func(objs []unstructured.Unstructured) map[string]bool {
		ids := identities(objs)
		var list []*identity
		for _, id := range ids {
			list = append(list, id)
		}
		out := map[string]bool{}
		for _, r := range boundRules(objs, list) {
			out[r.saKey()] = true
		}
		return out
	}
	k, h := set(kustomized), set(chart)
	var onlyK, onlyH []string
	for r := range k {
		if !h[r] {
			onlyK = append(onlyK, r)
		}
	}
	for r := range h {
		if !k[r] {
			onlyH = append(onlyH, r)
		}
	}
	sort.Strings(onlyK)
	sort.Strings(onlyH)
	if len(k) == 0 {
		return fmt.Errorf("no rule bound to a ServiceAccount in either rendering")
	}
	if len(onlyK)+len(onlyH) > 0 {
		return fmt.Errorf("rules differ: only in overlays/nvidia: %v; only in the chart: %v", onlyK, onlyH)
	}
	fmt.Fprintf(os.Stderr, "tier3 rbac-helm: the chart grants the same %d (ServiceAccount, group, resource, verb) rules as overlays/nvidia\n", len(k))
	return nil
}

func keys[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// applyAll applies every rendered object, reporting all that failed.
func applyAll(ctx context.Context, ap *applier, objs []unstructured.Unstructured) error {
	var errs []string
	for i := range objs {
		if err := ap.apply(ctx, &objs[i]); err != nil {
			errs = append(errs, err.Error())
		}
	}
	return joinErrs(errs)
}

func joinErrs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(errs, "; "))
}

// runAgentAsSA: the agent publishes node A's slices with its token, and the diag verbs an
// operator runs in its container (slices, explain, prepare, unprepare) work with the same.
func runAgentAsSA(ctx context.Context, repo, fixture string, sc *scenario, id *identity, admin *kubernetes.Clientset, wrap func(string, error) bool) (failed bool) {
	w := func(name string, err error) bool { ok := wrap(name, err); failed = failed || !ok; return ok }
	kube := "kubeconfig:" + id.Kubeconfig
	a, err := kubelet.StartAgentWithKube(repo, fixture, sc.NodeA, kube)
	if !w("agent-start", err) {
		return
	}
	stopped := false // Stop waits for the exit once; the reconfiguration below stops it early
	defer func() {
		if !stopped {
			_, _ = a.Stop(10 * time.Second)
		}
		a.Cleanup(failed)
	}()
	if !w("agent-sockets", a.WaitSockets(30*time.Second)) {
		return
	}
	slices, err := waitNodeSlices(ctx, admin, sc.NodeA)
	if !w("agent-publishes-own-slices", withTail(err, a)) {
		return
	}
	nodeFlags := []string{"--node-name", sc.NodeA, "--kubelet-root", a.KubeletRoot, "--cdi-root", a.CDIRoot, "--state-dir", a.StateDir, "--kube", kube}
	_, err = tessera(repo, append([]string{"diag", "slices", "--discovery", "fixture:" + fixture, "-o", "json"}, nodeFlags...)...)
	w("diag-slices", err)

	// A claim the operator asks about and one the kubelet prepares.
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: sc.Name}}, metav1.CreateOptions{}); !w("create-namespace", err) {
		return
	}
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "one-gpu", Namespace: sc.Name},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpu",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1}}}}}}
	claimFile := filepath.Join(a.Root, "claim.yaml")
	if !w("write-claim-file", writeJSON(claimFile, map[string]any{"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
		"metadata": map[string]any{"name": claim.Name, "namespace": claim.Namespace}, "spec": claim.Spec})) {
		return
	}
	out, err := tessera(repo, append([]string{"diag", "explain", "-f", claimFile, "--discovery", "fixture:" + fixture, "-o", "json"}, nodeFlags...)...)
	w("diag-explain", err)
	if err == nil && !strings.Contains(out, `"fits":true`) && !strings.Contains(out, `"fits": true`) {
		w("diag-explain-fits", fmt.Errorf("a 1-GPU claim on an empty 8-GPU node does not fit: %.300s", out))
	}
	if _, stage, err := createAllocated(ctx, admin, claim, sc.NodeA, slices, sc.Name+"-pod"); !w(stage, err) {
		return
	}
	_, err = tessera(repo, append([]string{"diag", "prepare", sc.Name + "/one-gpu", "-o", "json"}, nodeFlags...)...)
	w("diag-prepare", err)
	_, err = tessera(repo, append([]string{"diag", "unprepare", sc.Name + "/one-gpu"}, nodeFlags...)...)
	w("diag-unprepare", err)
	// The node is reconfigured (static -> dynamic MIG -> static): the publisher rewrites its
	// pool, deleting the slices it no longer needs, still with its own token only.
	_, _ = a.Stop(10 * time.Second)
	stopped = true
	for _, mode := range []string{"dynamic", "static"} {
		w("republish-"+mode, republish(ctx, repo, fixture, sc.NodeA, kube, mode, len(slices), admin))
	}
	return
}

// republish restarts the agent with another MIG mode and waits until node A's pool is the
// one that mode publishes (dynamic: shared counters; static: the original slice count).
func republish(ctx context.Context, repo, fixture, node, kube, mode string, staticCount int, admin *kubernetes.Clientset) error {
	// Dynamic mode publishes counters only where MIG is already on: the MIG-enabled variant of the node.
	fx := fixture
	if mode == "dynamic" {
		fx = "h100-sxm-8x-mig"
	}
	a, err := kubelet.StartAgentWithKube(repo, fx, node, kube, "--mig-mode", mode)
	if err != nil {
		return err
	}
	defer func() { _, _ = a.Stop(10 * time.Second); a.Cleanup(false) }()
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	err = kubelet.WaitFor(ctx, 30*time.Second, func() bool {
		l, err := admin.ResourceV1().ResourceSlices().List(ctx, sel)
		if err != nil {
			return false
		}
		counters := false
		for _, sl := range l.Items {
			counters = counters || len(sl.Spec.SharedCounters) > 0
		}
		if mode == "dynamic" {
			return counters
		}
		return !counters && len(l.Items) == staticCount
	})
	return withTail(err, a)
}

func withTail(err error, a *kubelet.Agent) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%v; agent log: %s", err, a.Tail())
}

// createAllocated creates the claim, allocates it with the scheduler's allocator on the node's
// slices and writes the allocation (reserved for pod), as the scheduler would. On failure it
// names the stage that failed: create-claim, allocate-claim or write-allocation.
func createAllocated(ctx context.Context, client kubernetes.Interface, claim *resourceapi.ResourceClaim, node string, slices []resourceapi.ResourceSlice, pod string) (*resourceapi.ResourceClaim, string, error) {
	claim, err := client.ResourceV1().ResourceClaims(claim.Namespace).Create(ctx, claim, metav1.CreateOptions{})
	if err != nil {
		return nil, "create-claim", err
	}
	res := oracle.Allocate(ctx, &oracle.Case{Node: node, Slices: slices, DeviceClasses: gen.DeviceClasses(), Claim: *claim})
	if !res.Fits {
		return nil, "allocate-claim", fmt.Errorf("%s %s", res.Error, res.Failure)
	}
	claim.Status.Allocation = allocationOf(res)
	claim.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: pod, UID: types.UID("pod-uid-" + pod)}}
	claim, err = client.ResourceV1().ResourceClaims(claim.Namespace).UpdateStatus(ctx, claim, metav1.UpdateOptions{})
	if err != nil {
		return nil, "write-allocation", err
	}
	return claim, "write-allocation", nil
}

func allocationOf(res oracle.Result) *resourceapi.AllocationResult {
	al := &resourceapi.AllocationResult{}
	for _, d := range res.Devices {
		al.Devices.Results = append(al.Devices.Results, resourceapi.DeviceRequestAllocationResult{Request: d.Request, Driver: d.Driver, Pool: d.Pool, Device: d.Device})
	}
	return al
}

// crossNodeDenials: node A's agent token may not create, update or delete node B's slices;
// the real API server denies each through the shipped ValidatingAdmissionPolicy.
func crossNodeDenials(ctx context.Context, sc *scenario, id *identity, admin *kubernetes.Clientset, wrap func(string, error) bool) (failed bool) {
	nodeA, nodeB := sc.NodeA, sc.NodeB
	w := func(name string, err error) bool { ok := wrap(name, err); failed = failed || !ok; return ok }
	agent, err := clientFor(id.Kubeconfig)
	if !w("agent-client", err) {
		return
	}
	sliceFor := func(name, node string) *resourceapi.ResourceSlice {
		return &resourceapi.ResourceSlice{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: resourceapi.ResourceSliceSpec{Driver: gen.Driver, NodeName: ptr.To(node),
				Pool:    resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1},
				Devices: []resourceapi.Device{{Name: "gpu-0"}}}}
	}
	denied := func(op string, err error) {
		if err == nil {
			w("deny-"+op+"-other-node", fmt.Errorf("node %s's agent could %s a ResourceSlice of node %s", nodeA, op, nodeB))
			return
		}
		text := err.Error()
		fmt.Fprintf(os.Stderr, "tier3 "+sc.Name+": %s of node %s's slice by node %s's agent denied: %s\n", op, nodeB, nodeA, text)
		if !strings.Contains(text, "tessera-resourceslices-own-node") {
			w("deny-"+op+"-other-node", fmt.Errorf("denied, but not by the admission policy: %s", text))
			return
		}
		report.PassWith(tier, sc.Name+"/deny-"+op+"-other-node", text)
	}
	_, err = agent.ResourceV1().ResourceSlices().Create(ctx, sliceFor(sc.Name+"-b-by-a", nodeB), metav1.CreateOptions{})
	denied("create", err)
	theirs, err := admin.ResourceV1().ResourceSlices().Create(ctx, sliceFor(sc.Name+"-b-own", nodeB), metav1.CreateOptions{})
	if !w("admin-creates-node-b-slice", err) {
		return
	}
	upd := theirs.DeepCopy()
	upd.Spec.Devices = append(upd.Spec.Devices, resourceapi.Device{Name: "gpu-1"})
	_, err = agent.ResourceV1().ResourceSlices().Update(ctx, upd, metav1.UpdateOptions{})
	denied("update", err)
	// Moving a slice to one's own node is not a way around: spec.nodeName and spec.pool.name
	// are immutable (API validation answers before admission).
	err = agent.ResourceV1().ResourceSlices().Delete(ctx, theirs.Name, metav1.DeleteOptions{})
	denied("delete", err)
	if _, err := admin.ResourceV1().ResourceSlices().Get(ctx, theirs.Name, metav1.GetOptions{}); !w("node-b-slice-still-there", err) {
		return
	}
	return
}
