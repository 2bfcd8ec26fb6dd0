package main

import (
	"context"
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
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	draplugin "k8s.io/kubernetes/pkg/kubelet/cm/dra/plugin"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager/cache"

	"tessera.dev/conformance/kubelet"
)

// treeGroup is a group of checks on a temporary tree of its own: check names get the prefix,
// and a failed check keeps the tree (its path printed) when the group closes.
type treeGroup struct {
	tree   *kubelet.Agent
	prefix string
	check  func(string, error) bool
	failed bool
	agents []*kubelet.Agent
}

// startAgent starts an agent on the group's tree (uid: one pod of a surge update, "" the
// default sockets) and waits up to wait for its sockets (checks <name>-start, <name>-sockets).
// The group stops it when it closes, unless stopped before.
func (g *treeGroup) startAgent(repo, fixture, name, uid string, wait time.Duration, extra ...string) (*kubelet.Agent, bool) {
	a, err := kubelet.StartPeer(repo, fixture, g.tree, uid, extra...)
	if !g.chk(name+"-start", err) {
		return nil, false
	}
	g.agents = append(g.agents, a)
	return a, g.chk(name+"-sockets", a.WaitSockets(wait))
}

func openGroup(prefix, node string, check func(string, error) bool) (*treeGroup, bool) {
	g := &treeGroup{prefix: prefix, check: check}
	tree, err := kubelet.NewTree(node)
	g.tree = tree
	return g, g.chk("tree", err)
}

func (g *treeGroup) chk(name string, err error) bool {
	ok := g.check(g.prefix+name, err)
	g.failed = g.failed || !ok
	return ok
}

func (g *treeGroup) close() {
	for _, a := range g.agents {
		_, _ = a.Stop(10 * time.Second) // a second Stop answers the first's result
	}
	if g.tree == nil {
		return
	}
	g.tree.Cleanup(g.failed)
	if g.failed {
		fmt.Fprintf(os.Stderr, "kubelet-dra: %s tree kept at %s\n", strings.TrimSuffix(g.prefix, "/"), g.tree.Root)
	}
}

type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return true }

// kubeletSide is the kubelet's DRA manager with its plugin watcher on one kubelet root, as the
// kubelet wires them (pluginmanager handler "DRAPlugin" = the manager's watcher handler).
type kubeletSide struct {
	mgr     *dra.Manager
	plugins *draplugin.DRAPluginManager
	seen    *seenHandler
	stop    func()
}

// startKubelet starts the manager (state in stateDir) and the plugin watcher on
// <kubeletRoot>/plugins_registry; activePods is what the manager's reconcile loop keeps.
func startKubelet(ctx context.Context, client kubernetes.Interface, stateDir, kubeletRoot, nodeName string, activePods func() []*v1.Pod) (*kubeletSide, error) {
	mgr, err := dra.NewManager(klog.FromContext(ctx), client, stateDir)
	if err != nil {
		return nil, err
	}
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, UID: "node-uid"}}
	mctx, cancel := context.WithCancel(ctx)
	if err := mgr.Start(mctx, activePods, func(context.Context) (*v1.Node, error) { return node, nil }, sourcesReady{}); err != nil {
		cancel()
		mgr.Stop()
		return nil, err
	}
	plugins := mgr.GetWatcherHandler().(*draplugin.DRAPluginManager)
	seen := &seenHandler{PluginHandler: plugins}
	pm := pluginmanager.NewPluginManager(filepath.Join(kubeletRoot, "plugins_registry"), record.NewFakeRecorder(100))
	pm.AddHandler("DRAPlugin", seen)
	stopCh := make(chan struct{})
	go pm.Run(mctx, sourcesReady{}, stopCh)
	return &kubeletSide{mgr: mgr, plugins: plugins, seen: seen, stop: func() {
		close(stopCh)
		cancel()
		mgr.Stop()
	}}, nil
}

// seenHandler passes every plugin-watcher call to the DRA manager's handler and remembers
// the endpoints the kubelet registered (in order) and deregistered, so a check can wait for
// "the kubelet registered B" without reaching into the manager.
type seenHandler struct {
	cache.PluginHandler
	mu           sync.Mutex
	registered   []string
	deregistered []string
	versions     map[string][]string // endpoint -> supported_versions it registered with
}

func (h *seenHandler) RegisterPlugin(ctx context.Context, name, endpoint string, versions []string, timeout *time.Duration) error {
	err := h.PluginHandler.RegisterPlugin(ctx, name, endpoint, versions, timeout)
	if err == nil {
		h.mu.Lock()
		h.registered = append(h.registered, endpoint)
		if h.versions == nil {
			h.versions = map[string][]string{}
		}
		h.versions[endpoint] = versions
		h.mu.Unlock()
	}
	return err
}

func (h *seenHandler) DeRegisterPlugin(ctx context.Context, name, endpoint string) {
	h.PluginHandler.DeRegisterPlugin(ctx, name, endpoint)
	h.mu.Lock()
	h.deregistered = append(h.deregistered, endpoint)
	h.mu.Unlock()
}

func (h *seenHandler) hasRegistered(endpoint string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.registered, endpoint)
}

func (h *seenHandler) versionsOf(endpoint string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.versions[endpoint]
}

func (h *seenHandler) hasDeregistered(endpoint string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.deregistered, endpoint)
}

// podFor is a pod on node with one claim reference ("gpus") used by its one container, and
// reserveFor records the pod as the claim's consumer, as the scheduler does.
func podFor(name string, uid string, node string, claim *resourceapi.ResourceClaim) *v1.Pod {
	claim.Status.ReservedFor = []resourceapi.ResourceClaimConsumerReference{{Resource: "pods", Name: name, UID: types.UID(uid)}}
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: claim.Namespace, UID: types.UID(uid)},
		Spec: v1.PodSpec{NodeName: node,
			ResourceClaims: []v1.PodResourceClaim{{Name: "gpus", ResourceClaimName: &claim.Name}},
			Containers:     []v1.Container{{Name: "main", Resources: v1.ResourceRequirements{Claims: []v1.ResourceClaim{{Name: "gpus"}}}}}}}
}

// containerCDIIDs is what the kubelet hands the runtime for the pod's container
// (Manager.GetResources), and an error unless it holds every allocated device's CDI ID.
func containerCDIIDs(mgr *dra.Manager, pod *v1.Pod, claim *resourceapi.ResourceClaim) ([]string, error) {
	info, err := mgr.GetResources(pod, &pod.Spec.Containers[0])
	if err != nil {
		return nil, err
	}
	var names []string
	for _, d := range info.CDIDevices {
		names = append(names, d.Name)
	}
	for _, r := range claim.Status.Allocation.Devices.Results {
		want := fmt.Sprintf("k8s.gpu.tessera.dev/claim=%s-%s", claim.UID, r.Device)
		if !slices.Contains(names, want) {
			return names, fmt.Errorf("container CDI devices %q lack %q", names, want)
		}
	}
	slices.Sort(names)
	return names, nil
}
