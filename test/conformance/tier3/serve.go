package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// -tier serve: no checks, a Kubernetes for programs that will not start without one (the
// Inference Extension's EPP watches Pods through controller-runtime even in its standalone
// mode). The same kube-apiserver + etcd as tier 3, an admin kubeconfig copied to
// -kubeconfig-out, -pods Pods in namespace default labelled -labels, each given by the status
// subresource phase Running, Ready=True and podIP -pod-ip-base + i (the pods run nothing: the
// caller serves those addresses itself). Then one line {"ready":true,...} on stdout, and the
// server runs until SIGTERM/SIGINT.
var (
	serveKubeconfig = flag.String("kubeconfig-out", "", "serve: where to write the admin kubeconfig (required)")
	servePods       = flag.Int("pods", 8, "serve: how many ready Pods to create")
	servePodIPBase  = flag.String("pod-ip-base", "127.0.0.2", "serve: podIP of the first Pod; the next ones count up the last byte")
	serveLabels     = flag.String("labels", "app=bench", "serve: the Pods' labels, k=v[,k=v]")
)

// ServeReady is the one line serve prints once every Pod is ready.
type ServeReady struct {
	Ready      bool     `json:"ready"`
	Kubeconfig string   `json:"kubeconfig"`
	Server     string   `json:"server"`
	Namespace  string   `json:"namespace"`
	PodIPs     []string `json:"podIPs"`
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-labels %q: want k=v[,k=v]", s)
		}
		out[k] = v
	}
	return out, nil
}

// podIPs counts up the last byte of base: 127.0.0.2, 127.0.0.3, ...
func podIPs(base string, n int) ([]string, error) {
	ip := net.ParseIP(base).To4()
	if ip == nil {
		return nil, fmt.Errorf("-pod-ip-base %q: want an IPv4 address", base)
	}
	if n < 1 || int(ip[3])+n-1 > 254 {
		return nil, fmt.Errorf("-pods %d from %s: want 1 or more addresses that end at .254 or below", n, base)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.IPv4(ip[0], ip[1], ip[2], ip[3]+byte(i)).String()
	}
	return out, nil
}

func serve(ctx context.Context, server, kubeconfig string, client *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	wrap := func(name string, err error) bool { ok := check(name, err); failed = failed || !ok; return ok }
	if *serveKubeconfig == "" {
		wrap("serve-flags", fmt.Errorf("-tier serve needs -kubeconfig-out <path>"))
		return
	}
	labels, err := parseLabels(*serveLabels)
	if !wrap("serve-flags", err) {
		return
	}
	ips, err := podIPs(*servePodIPBase, *servePods)
	if !wrap("serve-flags", err) {
		return
	}
	raw, err := os.ReadFile(kubeconfig)
	if err == nil {
		err = os.WriteFile(*serveKubeconfig, raw, 0o600)
	}
	if !wrap("serve-kubeconfig", err) {
		return
	}
	const ns = "default"
	// The API server's bootstrap controller creates "default" soon after /readyz; make sure.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		wrap("serve-namespace", err)
		return
	}
	for i, ip := range ips {
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%d", i), Namespace: ns, Labels: labels},
			Spec:       v1.PodSpec{Containers: []v1.Container{{Name: "model", Image: "none.invalid/model:0"}}},
		}
		created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if !wrap("serve-pod-create", err) {
			return
		}
		now := metav1.Now()
		created.Status = v1.PodStatus{
			Phase:      v1.PodRunning,
			PodIP:      ip,
			PodIPs:     []v1.PodIP{{IP: ip}},
			HostIP:     "127.0.0.1",
			StartTime:  &now,
			Conditions: []v1.PodCondition{{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: now}},
		}
		if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); !wrap("serve-pod-status", err) {
			return
		}
	}
	line, _ := json.Marshal(ServeReady{Ready: true, Kubeconfig: *serveKubeconfig, Server: server, Namespace: ns, PodIPs: ips})
	fmt.Fprintln(os.Stdout, string(line))
	<-ctx.Done()
	return
}
