package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	draplugin "k8s.io/kubernetes/pkg/kubelet/cm/dra/plugin"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"

	"tessera.dev/conformance/kubelet"
)

// The kubelet side of one node: its plugin watcher on the agent's plugins_registry and its
// DRA manager, reading claims from the real API server. The glue (sourcesReady, the
// pod list) is the same few lines test/conformance/kubeletmgr/main.go has, copied: that is a
// main package of another module and cannot be imported.

type sourcesReady struct{}

func (sourcesReady) AddSource(string) {}
func (sourcesReady) AllReady() bool   { return true }

// nodeKubelet is the kubelet's DRA manager for one node, registered with that node's agent.
type nodeKubelet struct {
	mgr    *dra.Manager
	cancel context.CancelFunc
	stopCh chan struct{}
	mu     sync.Mutex
	pods   []*v1.Pod
}

// startNodeKubelet starts the DRA manager and the plugin watcher and waits until the agent's
// plugin is registered through the watcher, as on a real node.
func startNodeKubelet(ctx context.Context, client kubernetes.Interface, a *kubelet.Agent, node *v1.Node) (*nodeKubelet, error) {
	mgr, err := dra.NewManager(klog.FromContext(ctx), client, filepath.Join(a.Root, "kubelet-dra-state"))
	if err != nil {
		return nil, fmt.Errorf("dra.NewManager: %w", err)
	}
	k := &nodeKubelet{mgr: mgr, stopCh: make(chan struct{})}
	mctx, cancel := context.WithCancel(ctx)
	k.cancel = cancel
	active := func() []*v1.Pod { k.mu.Lock(); defer k.mu.Unlock(); return append([]*v1.Pod(nil), k.pods...) }
	if err := mgr.Start(mctx, active, func(context.Context) (*v1.Node, error) { return node, nil }, sourcesReady{}); err != nil {
		k.stop()
		return nil, fmt.Errorf("dra manager start: %w", err)
	}
	pm := pluginmanager.NewPluginManager(filepath.Join(a.KubeletRoot, "plugins_registry"), record.NewFakeRecorder(100))
	pm.AddHandler("DRAPlugin", mgr.GetWatcherHandler())
	go pm.Run(mctx, sourcesReady{}, k.stopCh)
	plugins := mgr.GetWatcherHandler().(*draplugin.DRAPluginManager)
	registered := func() bool { p, err := plugins.GetPlugin(a.Driver); return err == nil && p != nil }
	if err := kubelet.WaitFor(ctx, 15*time.Second, registered); err != nil {
		k.stop()
		return nil, fmt.Errorf("plugin not registered through the plugin watcher: %w", err)
	}
	return k, nil
}

// prepare prepares the pod's claims as the kubelet does before starting its containers and
// returns the CDI device IDs the manager hands the runtime for each container.
func (k *nodeKubelet) prepare(ctx context.Context, pod *v1.Pod) ([]string, error) {
	k.mu.Lock()
	k.pods = append(k.pods, pod)
	k.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := k.mgr.PrepareResources(pctx, pod); err != nil {
		return nil, err
	}
	var ids []string
	for i := range pod.Spec.Containers {
		info, err := k.mgr.GetResources(pod, &pod.Spec.Containers[i])
		if err != nil {
			return nil, err
		}
		for _, d := range info.CDIDevices {
			ids = append(ids, d.Name)
		}
	}
	return ids, nil
}

func (k *nodeKubelet) unprepare(ctx context.Context, pod *v1.Pod) error {
	uctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return k.mgr.UnprepareResources(uctx, pod)
}

func (k *nodeKubelet) stop() {
	k.cancel()
	close(k.stopCh)
	k.mgr.Stop()
}
