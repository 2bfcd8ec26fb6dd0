package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"tessera.dev/conformance/kubelet"
)

// validateFixtures lets the real server validate what every fixture node publishes, static
// MIG and dynamic MIG (partitionable devices, shared counters in their own slice).
func validateFixtures(ctx context.Context, repo, kubeconfig string, client *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	entries, err := os.ReadDir(filepath.Join(repo, "fixtures", "nodes"))
	if err != nil {
		return !check("fixtures", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		for _, mode := range []string{"static", "dynamic"} {
			node := "v-" + e.Name() + "-" + mode
			name := "slices-valid/" + e.Name() + "/" + mode
			if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
				failed = !check(name, err) || failed
				continue
			}
			a, err := kubelet.StartAgentWithKube(repo, e.Name(), node, "kubeconfig:"+kubeconfig, "--mig-mode", mode)
			if err != nil {
				failed = !check(name, err) || failed
				continue
			}
			var slices []resourceapi.ResourceSlice
			err = kubelet.WaitFor(ctx, 20*time.Second, func() bool {
				l, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
				if err != nil || len(l.Items) == 0 || int64(len(l.Items)) < l.Items[0].Spec.Pool.ResourceSliceCount {
					return false
				}
				slices = l.Items
				return true
			})
			if err != nil {
				err = fmt.Errorf("%v; agent log: %s", err, a.Tail())
			} else {
				devices, counters := 0, 0
				for _, sl := range slices {
					devices += len(sl.Spec.Devices)
					counters += len(sl.Spec.SharedCounters)
				}
				fmt.Fprintf(os.Stderr, "tier3: %s: %d slices, %d devices, %d counter sets accepted\n", name, len(slices), devices, counters)
				if devices == 0 {
					err = fmt.Errorf("no devices published")
				}
			}
			exitErr, _ := a.Stop(10 * time.Second)
			a.Cleanup(err != nil)
			if err == nil && exitErr != nil {
				err = fmt.Errorf("agent exit: %v", exitErr)
			}
			failed = !check(name, err) || failed
		}
	}
	return failed
}

// faultyFixture is the node whose kernel log (its kmsg.txt) holds a fatal XID on GPU 0.
const faultyFixture = "h100-sxm-8x-faulty"

// taintedSlices: the agent on the faulty node taints GPU 0 from its kernel log (XID 79) and
// publishes that; the real server must accept the device taint and give it back as written
// (key, value, effect, timeAdded).
func taintedSlices(ctx context.Context, repo, kubeconfig string, client *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	name := "slices-tainted/" + faultyFixture
	if _, err := os.Stat(filepath.Join(repo, "fixtures", "nodes", faultyFixture)); err != nil {
		return !check(name, fmt.Errorf("fixture %s: %w", faultyFixture, err))
	}
	node := "t3-faulty"
	if _, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		return !check(name, err)
	}
	a, err := kubelet.StartAgentWithKube(repo, faultyFixture, node, "kubeconfig:"+kubeconfig)
	if err != nil {
		return !check(name, err)
	}
	defer func() { _, _ = a.Stop(10 * time.Second); a.Cleanup(failed) }()
	var taint *resourceapi.DeviceTaint
	err = kubelet.WaitFor(ctx, 20*time.Second, func() bool {
		l, err := client.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return false
		}
		for _, sl := range l.Items {
			for _, d := range sl.Spec.Devices {
				if d.Name == "gpu-0" && len(d.Taints) > 0 {
					taint = &d.Taints[0]
				}
			}
		}
		return taint != nil
	})
	if err != nil {
		return !check(name, fmt.Errorf("no taint on gpu-0 of node %s on the server: %v; agent log: %s", node, err, a.Tail()))
	}
	fmt.Fprintf(os.Stderr, "tier3: %s: gpu-0 stored with taint %s=%s:%s (timeAdded %v)\n", name, taint.Key, taint.Value, taint.Effect, taint.TimeAdded)
	if taint.Key != "gpu.tessera.dev/xid" || taint.Value != "79" || taint.Effect != resourceapi.DeviceTaintEffectNoExecute || taint.TimeAdded == nil {
		return !check(name, fmt.Errorf("gpu-0's taint on the server is %+v, want gpu.tessera.dev/xid=79:NoExecute with timeAdded", *taint))
	}
	return !check(name, nil)
}
