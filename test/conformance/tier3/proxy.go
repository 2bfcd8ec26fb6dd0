package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"tessera.dev/conformance/kubelet"
)

// tessera runs one CLI verb and returns its stdout; an error carries the one-line
// TESSERA_ error it printed.
func tessera(repo string, args ...string) (string, error) {
	cmd := exec.Command("node", append([]string{filepath.Join(repo, "bin", "tessera.js")}, args...)...)
	cmd.Dir = repo
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("tessera %s: %v: %s", strings.Join(args[:2], " "), err, lastLines(stderr.String(), 2))
	}
	return stdout.String(), nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// proxyPool is the InferencePool the shipped proxy container names (INFERENCE_POOL).
func proxyPool(objs []unstructured.Unstructured) string {
	for _, o := range objs {
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			cm := c.(map[string]any)
			args, _, _ := unstructured.NestedStringSlice(cm, "args")
			if len(args) == 0 || args[0] != "proxy" {
				continue
			}
			env, _, _ := unstructured.NestedSlice(cm, "env")
			for _, e := range env {
				em := e.(map[string]any)
				if em["name"] == "INFERENCE_POOL" {
					if v, ok := em["value"].(string); ok {
						return v
					}
				}
			}
		}
	}
	return "default/tessera"
}

// runProxyAsSA: `tessera proxy --inference-pool ns/name` with the proxy's token finds the
// pool's ready model-server pod on its node.
func runProxyAsSA(ctx context.Context, repo string, sc *scenario, id *identity, objs []unstructured.Unstructured, ap *applier, admin *kubernetes.Clientset, wrap func(string, error) bool) (failed bool) {
	w := func(name string, err error) bool { ok := wrap(name, err); failed = failed || !ok; return ok }
	ref := proxyPool(objs)
	ns, name, _ := strings.Cut(ref, "/")
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); !w("create-pool-namespace", err) {
			return
		}
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": sc.Name + "-model"}},
			"targetPorts": []any{map[string]any{"number": int64(8000)}}},
	}}
	if !w("create-inferencepool", ap.apply(ctx, pool)) {
		return
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: sc.Name + "-model", Namespace: ns, Labels: map[string]string{"app": sc.Name + "-model"}},
		Spec: v1.PodSpec{NodeName: sc.NodeA, Containers: []v1.Container{{Name: "vllm", Image: "vllm"}}}}
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if !w("create-model-pod", err) {
		return
	}
	pod.Status.PodIP = "127.0.0.1"
	pod.Status.PodIPs = []v1.PodIP{{IP: "127.0.0.1"}}
	pod.Status.Conditions = []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue}}
	if _, err := admin.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); !w("model-pod-ready", err) {
		return
	}
	port, err := freePort()
	if !w("proxy-port", err) {
		return
	}
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("tessera-t3-proxy-%d.log", port))
	logf, err := os.Create(logPath)
	if !w("proxy-log", err) {
		return
	}
	defer os.Remove(logPath)
	cmd := exec.Command("node", filepath.Join(repo, "bin", "tessera.js"), "proxy", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--inference-pool", ref, "--node-name", sc.NodeA, "--kube", "kubeconfig:"+id.Kubeconfig)
	cmd.Dir = repo
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if !w("proxy-start", cmd.Start()) {
		return
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		_ = logf.Close()
	}()
	want := "http://127.0.0.1:8000"
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	listens := func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}
	// Ready when it listens and has logged the pool's pod as its endpoint (list + watch of the
	// pool and of the pods, all with the proxy's token).
	err = kubelet.WaitFor(ctx, 30*time.Second, func() bool {
		select {
		case err := <-exited:
			exited <- err
			return true
		default:
		}
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), want) && listens()
	})
	b, _ := os.ReadFile(logPath)
	if err == nil && !strings.Contains(string(b), want) {
		err = fmt.Errorf("proxy exited")
	}
	if err != nil {
		err = fmt.Errorf("proxy never listened on %s with the pool's pod %s as endpoint: %v; log: %s", addr, want, err, lastLines(string(b), 4))
	}
	w("proxy-inference-pool-endpoints", err)
	return
}
