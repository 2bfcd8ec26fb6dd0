// Package kubelet is Tier 1: it starts `tessera agent` on a fixture node with a standalone
// store and drives it with the kubelet's generated gRPC clients, checking what the kubelet
// relies on.
package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	resourceapi "k8s.io/api/resource/v1"
)

// Agent is one running `tessera agent` and the directories it owns. The two pods of a surge
// rolling update are two Agents on one tree (StartPeer), each with its own RollingUID.
type Agent struct {
	Root, KubeletRoot, CDIRoot, StoreDir, StateDir, Node, Driver string
	// RollingUID is the pod UID given as --rolling-update-uid ("" = the default socket names).
	RollingUID string
	logPath    string
	cmd        *exec.Cmd
	exited     chan error
	log        *os.File
}

// RegSocket is the registration socket the agent serves: with a rolling-update UID the name
// the kubelet plugin helper gives a pod (kubeletplugin.RollingUpdateRegistrarSocketFile: the
// full UID while the path fits, which it does in the harness's short temp paths).
func (a *Agent) RegSocket() string {
	if a.RollingUID != "" {
		return filepath.Join(a.KubeletRoot, "plugins_registry", a.Driver+"-"+a.RollingUID+"-reg.sock")
	}
	return filepath.Join(a.KubeletRoot, "plugins_registry", a.Driver+"-reg.sock")
}
func (a *Agent) DRASocket() string {
	if a.RollingUID != "" {
		return filepath.Join(a.KubeletRoot, "plugins", a.Driver, "dra-"+a.RollingUID+".sock")
	}
	return filepath.Join(a.KubeletRoot, "plugins", a.Driver, "dra.sock")
}

// StartAgent launches the agent on a standalone store in its own process group so Stop can
// end all of it.
func StartAgent(repo, fixture, node string) (*Agent, error) {
	return StartAgentWithKube(repo, fixture, node, "")
}

// StartAgentWithKube is StartAgent with another --kube source ("" = the standalone store)
// and extra agent flags.
func StartAgentWithKube(repo, fixture, node, kube string, extra ...string) (*Agent, error) {
	return StartAgentEnv(repo, "fixture:"+fixture, node, kube, nil, extra...)
}

// StartAgentEnv is StartAgentWithKube with any --discovery value and extra environment
// variables for the agent (the simulated nvidia-smi it runs reads its fixture from them).
func StartAgentEnv(repo, discovery, node, kube string, env []string, extra ...string) (*Agent, error) {
	a, err := NewTree(node)
	if err != nil {
		return nil, err
	}
	if err := a.start(repo, discovery, kube, env, extra); err != nil {
		return nil, err
	}
	return a, nil
}

// NewTree makes the temporary tree (kubelet root, CDI root, store, state dir) an agent runs on,
// without starting one. Cleanup of the tree removes it.
func NewTree(node string) (*Agent, error) {
	root, err := os.MkdirTemp("", "tessera-conf-")
	if err != nil {
		return nil, err
	}
	a := &Agent{Root: root, KubeletRoot: filepath.Join(root, "kubelet"), CDIRoot: filepath.Join(root, "cdi"),
		StoreDir: filepath.Join(root, "store"), StateDir: filepath.Join(root, "state"), Node: node, Driver: "gpu.tessera.dev",
		logPath: filepath.Join(root, "agent.log")}
	for _, d := range []string{a.KubeletRoot, a.CDIRoot, a.StoreDir, a.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// StartPeer starts an agent on tree's directories (kubelet root, CDI root, store, state dir);
// with a uid, one pod of a surge rolling update: `--rolling-update-uid uid`, a log of its own.
// Stop it like any agent; the tree's Cleanup removes what the peers share.
func StartPeer(repo, fixture string, tree *Agent, uid string, extra ...string) (*Agent, error) {
	p := &Agent{Root: tree.Root, KubeletRoot: tree.KubeletRoot, CDIRoot: tree.CDIRoot, StoreDir: tree.StoreDir, StateDir: tree.StateDir,
		Node: tree.Node, Driver: tree.Driver, RollingUID: uid, logPath: filepath.Join(tree.Root, "agent.log")}
	if uid != "" {
		p.logPath = filepath.Join(tree.Root, "agent-"+uid+".log")
		extra = append([]string{"--rolling-update-uid", uid}, extra...)
	}
	if err := p.start(repo, "fixture:"+fixture, "", nil, extra); err != nil {
		return nil, err
	}
	return p, nil
}

// start launches the agent in its own process group so Stop can end all of it.
func (a *Agent) start(repo, discovery, kube string, env []string, extra []string) error {
	var err error
	a.log, err = os.Create(a.logPath)
	if err != nil {
		return err
	}
	if kube == "" {
		kube = "standalone:" + a.StoreDir
	}
	a.cmd = exec.Command("node", filepath.Join(repo, "bin", "tessera.js"), "agent",
		"--discovery", discovery, "--node-name", a.Node,
		"--kubelet-root", a.KubeletRoot, "--cdi-root", a.CDIRoot, "--state-dir", a.StateDir,
		"--kube", kube, "--http-listen", "127.0.0.1:0") // an ephemeral port: agents of parallel runs never clash on 9477
	a.cmd.Args = append(a.cmd.Args, extra...)
	a.cmd.Dir = repo
	if len(env) > 0 {
		a.cmd.Env = append(os.Environ(), env...)
	}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	// Own process group so Stop ends all of it; SIGTERM from the kernel if the harness dies
	// first (even by SIGKILL), so no agent outlives the run.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("start tessera agent: %w", err)
	}
	a.exited = make(chan error, 1)
	go func() { a.exited <- a.cmd.Wait() }()
	return nil
}

// WaitSockets waits until both sockets exist or the agent exits.
func (a *Agent) WaitSockets(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, e1 := os.Stat(a.RegSocket())
		_, e2 := os.Stat(a.DRASocket())
		if e1 == nil && e2 == nil {
			return nil
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			return fmt.Errorf("agent exited before serving its sockets (%v); log: %s", err, a.Tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("sockets %s and %s not there after %s; log: %s", a.RegSocket(), a.DRASocket(), timeout, a.Tail())
}

// Tail returns the end of the agent's log for error messages.
func (a *Agent) Tail() string {
	b, _ := os.ReadFile(a.logPath)
	s := strings.TrimSpace(string(b))
	if len(s) > 1500 {
		s = "…" + s[len(s)-1500:]
	}
	return s
}

// Stop sends SIGTERM and waits; it kills the group when the agent does not exit in time.
// It returns the exit error (nil for exit 0) and whether the sockets were removed.
func (a *Agent) Stop(timeout time.Duration) (exitErr error, socketsGone bool) {
	if a.cmd == nil || a.cmd.Process == nil {
		return nil, true
	}
	_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case exitErr = <-a.exited:
		a.exited <- exitErr // a second Stop answers the same
	case <-time.After(timeout):
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		exitErr = fmt.Errorf("agent did not exit within %s of SIGTERM (killed)", timeout)
		a.exited <- <-a.exited
	}
	_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL) // anything left in the group
	_, e1 := os.Stat(a.RegSocket())
	_, e2 := os.Stat(a.DRASocket())
	_ = a.log.Close()
	return exitErr, os.IsNotExist(e1) && os.IsNotExist(e2)
}

// Cleanup removes the temporary tree unless keep is set (kept for failed runs).
func (a *Agent) Cleanup(keep bool) {
	if !keep {
		_ = os.RemoveAll(a.Root)
	}
}

// Slices reads the ResourceSlices the agent wrote to the standalone store.
func (a *Agent) Slices() ([]resourceapi.ResourceSlice, error) {
	entries, err := os.ReadDir(filepath.Join(a.StoreDir, "resourceslices"))
	if err != nil {
		return nil, err
	}
	var out []resourceapi.ResourceSlice
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.StoreDir, "resourceslices", e.Name()))
		if err != nil {
			return nil, err
		}
		var s resourceapi.ResourceSlice
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, s)
	}
	return out, nil
}

// WaitSlices waits until the agent has published at least one slice.
func (a *Agent) WaitSlices(ctx context.Context, timeout time.Duration) ([]resourceapi.ResourceSlice, error) {
	var slices []resourceapi.ResourceSlice
	var lastErr error
	err := WaitFor(ctx, timeout, func() bool {
		slices, lastErr = a.Slices()
		return lastErr == nil && len(slices) > 0
	})
	if err != nil {
		return nil, fmt.Errorf("no ResourceSlice in %s/resourceslices: %v (%v); log: %s", a.StoreDir, err, lastErr, a.Tail())
	}
	return slices, nil
}

// WaitFor polls cond every 100 ms until it holds, the timeout passes or ctx ends. Every tier
// uses it for "the agent (or the kubelet, or the API server) eventually does X".
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// WriteClaim stores a claim as the standalone store holds it (temp file + rename).
func (a *Agent) WriteClaim(c *resourceapi.ResourceClaim) error {
	dir := filepath.Join(a.StoreDir, "resourceclaims", c.Namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "."+c.Name+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, c.Name+".json"))
}

// ContractSlices is a stand-in inventory with the contract's names (`gpu-<minor>`), used
// only when the agent published no slices, so prepare can still be exercised.
func ContractSlices(node string, gpus int) []resourceapi.ResourceSlice {
	typ := "gpu"
	s := resourceapi.ResourceSlice{}
	s.APIVersion, s.Kind, s.Name = "resource.k8s.io/v1", "ResourceSlice", node+"-stand-in"
	s.Spec.Driver, s.Spec.NodeName = "gpu.tessera.dev", &node
	s.Spec.Pool = resourceapi.ResourcePool{Name: node, Generation: 1, ResourceSliceCount: 1}
	for i := 0; i < gpus; i++ {
		s.Spec.Devices = append(s.Spec.Devices, resourceapi.Device{Name: fmt.Sprintf("gpu-%d", i),
			Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{"type": {StringValue: &typ}}})
	}
	return []resourceapi.ResourceSlice{s}
}

// WithAgent runs one group of checks on an agent of its own (fixture and flags of its own):
// it starts the agent, waits for its sockets and slices (failing check `first` when they do
// not come), runs body, stops the agent and keeps its tree, printing the path, when a check
// of the group failed.
func WithAgent(ctx context.Context, repo, fixture, node string, keep bool, check func(string, error), first string,
	body func(a *Agent, slices []resourceapi.ResourceSlice, check func(string, error)), extra ...string) {
	a, err := StartAgentWithKube(repo, fixture, node, "", extra...)
	if err != nil {
		check(first, err)
		return
	}
	failed := false
	defer func() {
		_, _ = a.Stop(10 * time.Second)
		a.Cleanup(keep || failed)
		if failed {
			fmt.Fprintf(os.Stderr, "tier1: agent tree (%s, %v) kept at %s\n", fixture, extra, a.Root)
		}
	}()
	record := func(name string, err error) {
		failed = failed || err != nil
		check(name, err)
	}
	if err := a.WaitSockets(30 * time.Second); err != nil {
		record(first, fmt.Errorf("agent %v did not start: %w", extra, err))
		return
	}
	slices, err := a.WaitSlices(ctx, 10*time.Second)
	if err != nil {
		record(first, err)
		return
	}
	body(a, slices, record)
}

// AllocateAndStore allocates the claims one after another with the scheduler's allocator
// (each seeing the ones before as allocated) and writes them to the agent's store.
func AllocateAndStore(ctx context.Context, a *Agent, slices []resourceapi.ResourceSlice, claims ...*resourceapi.ResourceClaim) error {
	var prior []resourceapi.ResourceClaim
	for _, c := range claims {
		if err := Allocate(ctx, a, slices, prior, c); err != nil {
			return err
		}
		if err := a.WriteClaim(c); err != nil {
			return err
		}
		prior = append(prior, *c)
	}
	return nil
}
