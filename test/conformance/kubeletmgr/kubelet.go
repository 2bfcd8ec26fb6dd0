package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
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
)

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
