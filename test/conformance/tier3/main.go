// tier3 starts a real kube-apiserver (k8s.io/kubernetes/cmd/kube-apiserver/app, in process)
// on an embedded etcd (go.etcd.io/etcd/server/v3/embed), both on loopback with a throwaway
// certificate and token auth, then runs `tessera agent --kube kubeconfig:…` against it:
// the server validates the ResourceSlices the agent publishes, the slices are deleted as
// the kubelet does and must come back, a claim is allocated by the scheduler's allocator
// writing status.allocation, and the agent prepares it reading through the server.
// Everything it started is stopped on every path.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"

	"go.etcd.io/etcd/server/v3/embed"

	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/kubelet"
	"tessera.dev/conformance/report"
)

// tier is 3 (the API server checks) or, with -tier 4, real scheduling (scheduling.go) on
// the same API server: one binary, one k8s.io/kubernetes build. -tier serve (serve.go) runs
// no checks: the API server with a pool of ready Pods, for benches that need Kubernetes.
var tier = 3
var tierFlag = flag.String("tier", "3", "3: API server, RBAC and slice checks; 4: kube-scheduler + ResourceClaim controller + kubelet DRA manager; serve: API server + ready Pods until SIGTERM (serve.go)")

const token = "tessera-conformance-token"

var gates = "DRAPrioritizedList=true,DRAPartitionableDevices=true,DRAConsumableCapacity=true,DRADeviceTaints=true,DRAAdminAccess=true"

func main() { report.RunTier(run) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startEtcd(dir string) (*embed.Etcd, string, error) {
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(dir, "etcd")
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"} // stdout carries only check lines
	p1, err := freePort()
	if err != nil {
		return nil, "", err
	}
	p2, err := freePort()
	if err != nil {
		return nil, "", err
	}
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", p1))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", p2))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, client.String(), nil
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, "", fmt.Errorf("etcd not ready after 30s")
	}
}

func run(ctx context.Context, repo, fixture string) (failed bool) {
	check := func(name string, err error) bool {
		ok := report.Check(tier, name, err)
		failed = failed || !ok
		return ok
	}
	switch *tierFlag {
	case "3", "4":
		tier = int((*tierFlag)[0] - '0')
	case "serve":
		tier = 0
	default:
		check("flags", fmt.Errorf("-tier %q: want 3, 4 or serve", *tierFlag))
		return
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("tessera-t%d-", tier))
	if !check("tempdir", err) {
		return
	}
	defer func() {
		if !failed {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "tier3: files kept at %s\n", dir)
		}
	}()
	etcd, etcdURL, err := startEtcd(dir)
	if !check("etcd-start", err) {
		return
	}
	defer etcd.Close()

	port, err := freePort()
	if !check("apiserver-port", err) {
		return
	}
	if err := writeAuth(dir); !check("apiserver-credentials", err) {
		return
	}
	actx, stopAPI := context.WithCancel(ctx)
	apiDone := make(chan error, 1)
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(dir, "certs"), // a throwaway self-signed serving certificate
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=ValidatingAdmissionPolicy",
		"--allow-privileged=true", // the shipped DaemonSet is privileged (deploy/base/daemonset.yaml says why)
		"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
		"--audit-log-path=" + filepath.Join(dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24",
		"--feature-gates=" + gates,
		"--enable-priority-and-fairness=false",
		"--disable-admission-plugins=ServiceAccount",
	}
	if err := startAPIServer(actx, args, apiDone); !check("apiserver-options", err) {
		stopAPI()
		return
	}
	defer func() {
		stopAPI()
		select {
		case <-apiDone:
		case <-time.After(30 * time.Second):
			fmt.Fprintln(os.Stderr, "tier3: kube-apiserver did not stop within 30s")
		}
	}()

	kubeconfig := filepath.Join(dir, "kubeconfig")
	client, err := connect(ctx, port, kubeconfig, apiDone)
	if !check("apiserver-ready", err) {
		return
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	if *tierFlag == "serve" {
		return serve(ctx, server, kubeconfig, client, check)
	}
	if tier == 4 {
		return runScheduling(ctx, repo, dir, server, kubeconfig, client, check)
	}
	if runAgainstServer(ctx, repo, fixture, kubeconfig, client, check) {
		return true
	}
	failed = validateFixtures(ctx, repo, kubeconfig, client, check) || failed
	failed = taintedSlices(ctx, repo, kubeconfig, client, check) || failed
	return runRBAC(ctx, repo, fixture, dir, server, filepath.Join(dir, "audit.log"), client, check) || failed
}

func connect(ctx context.Context, port int, kubeconfig string, apiDone chan error) (*kubernetes.Clientset, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["t3"] = &clientcmdapi.Cluster{Server: fmt.Sprintf("https://127.0.0.1:%d", port), InsecureSkipTLSVerify: true}
	cfg.AuthInfos["t3"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["t3"] = &clientcmdapi.Context{Cluster: "t3", AuthInfo: "t3"}
	cfg.CurrentContext = "t3"
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		return nil, err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-apiDone:
			apiDone <- err
			return nil, fmt.Errorf("kube-apiserver exited: %v", err)
		default:
		}
		res := client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx)
		if res.Error() == nil {
			return client, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("/readyz not ok after 90s: %v", res.Error())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func runAgainstServer(ctx context.Context, repo, fixture, kubeconfig string, client *kubernetes.Clientset, check func(string, error) bool) (failed bool) {
	wrap := func(name string, err error) bool { ok := check(name, err); failed = failed || !ok; return ok }
	const nodeName = "conformance-node"
	_, err := client.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if !wrap("create-node", err) {
		return
	}
	for _, dc := range gen.DeviceClasses() {
		dc := dc
		dc.UID, dc.ResourceVersion = "", ""
		if _, err := client.ResourceV1().DeviceClasses().Create(ctx, &dc, metav1.CreateOptions{}); !wrap("create-deviceclass-"+dc.Name, err) {
			return
		}
	}
	a, err := kubelet.StartAgentWithKube(repo, fixture, nodeName, "kubeconfig:"+kubeconfig)
	if !wrap("agent-start", err) {
		return
	}
	defer func() { _, _ = a.Stop(10 * time.Second); a.Cleanup(failed) }()
	if !wrap("agent-sockets", a.WaitSockets(30*time.Second)) {
		return
	}
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName}
	slices, err := waitNodeSlices(ctx, client, nodeName)
	if !wrap("slices-published-and-validated", err) {
		fmt.Fprintln(os.Stderr, a.Tail())
		return
	}
	var devices int
	var owners []string
	for _, sl := range slices {
		devices += len(sl.Spec.Devices)
		for _, o := range sl.OwnerReferences {
			if o.Kind == "Node" && o.Name == nodeName && o.Controller != nil && *o.Controller {
				owners = append(owners, sl.Name)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "tier3: %d slices with %d devices accepted by kube-apiserver\n", len(slices), devices)
	if len(owners) != len(slices) {
		wrap("slices-owned-by-node", fmt.Errorf("%d of %d slices have the Node as controller owner", len(owners), len(slices)))
	} else {
		wrap("slices-owned-by-node", nil)
	}
	// The kubelet deletes a node's slices when it restarts; the agent must restore them.
	if !wrap("delete-slices", client.ResourceV1().ResourceSlices().DeleteCollection(ctx, metav1.DeleteOptions{}, sel)) {
		return
	}
	t0 := time.Now()
	err = kubelet.WaitFor(ctx, 20*time.Second, func() bool {
		l, err := client.ResourceV1().ResourceSlices().List(ctx, sel)
		return err == nil && len(l.Items) >= len(slices)
	})
	if err == nil && time.Since(t0) > 5*time.Second+time.Second {
		err = fmt.Errorf("restored after %s, want within 5s of the deletion", time.Since(t0).Round(100*time.Millisecond))
	}
	fmt.Fprintf(os.Stderr, "tier3: slices restored %s after the deletion\n", time.Since(t0).Round(10*time.Millisecond))
	wrap("slices-restored-after-delete", err)
	l, err := client.ResourceV1().ResourceSlices().List(ctx, sel)
	if err == nil {
		slices = l.Items
	}

	// A claim allocated by the scheduler's allocator, status written through the server.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "conformance"}}, metav1.CreateOptions{}); !wrap("create-namespace", err) {
		return
	}
	claim := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Name: "two-gpus", Namespace: "conformance"},
		Spec: resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: []resourceapi.DeviceRequest{{Name: "gpus",
			Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 2}}}}}}
	claim, stage, err := createAllocated(ctx, client, claim, nodeName, slices, "trainer")
	if !wrap(stage, err) {
		return
	}
	wrap("prepare-through-apiserver", kubelet.PrepareOne(ctx, a, claim))
	// Every shipped example (the sharing ones carry opaque GpuConfig) as a user applies it.
	applyExamples(ctx, repo, kubeconfig, wrap)
	return
}

// startAPIServer does what the kube-apiserver command does, with our context instead of a
// process-wide signal context, so the server stops when the tier ends: parse the flags of
// options.NewServerRunOptions, apply the component globals (feature gates), complete,
// validate, then app.Run in the background.
func startAPIServer(ctx context.Context, args []string, done chan<- error) error {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return utilerrors.NewAggregate(errs)
	}
	go func() { done <- app.Run(ctx, completed) }()
	return nil
}

// waitNodeSlices waits until the server holds ResourceSlices of the node.
func waitNodeSlices(ctx context.Context, client *kubernetes.Clientset, node string) ([]resourceapi.ResourceSlice, error) {
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	var slices []resourceapi.ResourceSlice
	err := kubelet.WaitFor(ctx, 30*time.Second, func() bool {
		l, err := client.ResourceV1().ResourceSlices().List(ctx, sel)
		if err == nil && len(l.Items) > 0 {
			slices = l.Items
		}
		return len(slices) > 0
	})
	return slices, err
}
