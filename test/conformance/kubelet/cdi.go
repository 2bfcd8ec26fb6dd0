package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	drav1 "k8s.io/kubelet/pkg/apis/dra/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// ValidateCDISpecs reads every CDI spec file under dir with the CDI library (cdi.ReadSpec:
// parse, cdiVersion, kind, device names, container edits), as a runtime's cache would load
// it. It returns how many files it read and every refusal; a spec the library refuses is one
// a container runtime silently ignores, so its claim's devices never reach the container.
func ValidateCDISpecs(dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, f := range files {
		if _, err := cdi.ReadSpec(f, 0); err != nil {
			errs = append(errs, fmt.Errorf("CDI library refuses %s: %w", filepath.Base(f), err))
		}
	}
	return len(files), errors.Join(errs...)
}

// hostDevices stands in for the host's /dev, which has no NVIDIA nodes here: the CDI library
// stats every device node it injects unless the spec already gives its type and numbers. Each
// node gets what the NVIDIA driver gives it (character device, major 195, minor = GPU minor,
// 255 for nvidiactl; the dynamic majors of nvidia-uvm / nvidia-caps as a fixed stand-in).
// Only type, major and minor are added; paths and everything else stay as Tessera wrote them.
func hostDevices(path string, next *int64) (major, minor int64) {
	switch {
	case path == "/dev/nvidiactl":
		return 195, 255
	case strings.HasPrefix(path, "/dev/nvidia-uvm"):
		*next++
		return 510, *next
	case strings.HasPrefix(path, "/dev/nvidia-caps/"):
		*next++
		return 511, *next
	}
	var n int64
	if _, err := fmt.Sscanf(path, "/dev/nvidia%d", &n); err == nil {
		return 195, n
	}
	*next++
	return 509, *next
}

// simulateHost copies the spec files of src into dst with host device numbers filled in.
func simulateHost(src, dst string) error {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return err
	}
	var next int64
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var s cdispec.Spec
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		fill := func(e *cdispec.ContainerEdits) {
			for _, d := range e.DeviceNodes {
				if d.Type == "" {
					d.Type = "c"
					d.Major, d.Minor = hostDevices(d.Path, &next)
				}
			}
		}
		fill(&s.ContainerEdits)
		for i := range s.Devices {
			fill(&s.Devices[i].ContainerEdits)
		}
		out, err := json.Marshal(&s)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), out, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// specNodes lists every device node path a claim's spec file names (spec level and devices).
func specNodes(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var s cdispec.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	var out []string
	for _, d := range s.ContainerEdits.DeviceNodes {
		out = append(out, d.Path)
	}
	for _, dev := range s.Devices {
		for _, d := range dev.ContainerEdits.DeviceNodes {
			out = append(out, d.Path)
		}
	}
	return out, nil
}

// deviceEnvKey is the per-device variable the CDI layout gives each device of a claim:
// TESSERA_DEVICE_<claim UID without dashes, upper-case>_<device name upper-case, '-' -> '_'>.
func deviceEnvKey(uid, device string) string {
	return "TESSERA_DEVICE_" + strings.ToUpper(strings.ReplaceAll(uid, "-", "")) + "_" +
		strings.ToUpper(strings.ReplaceAll(device, "-", "_"))
}

// CDIMultiClaim is the issue-11 check: on a node with whole GPUs and static MIG devices it
// prepares three claims, loads the CDI specs the agent wrote with the CDI library's cache and
// injects 1, 2 and 3 claims into one OCI spec, as a runtime does for a container that
// references several claims. Every device node of every claim must be there,
// NVIDIA_VISIBLE_DEVICES exactly "void", and the TESSERA_DEVICE_* variables exactly the
// claims' devices with their UUIDs.
func CDIMultiClaim(ctx context.Context, repo string, keep bool, check func(string, error)) {
	WithAgent(ctx, repo, "mixed-2numa-h100-mig", "cdi-node", keep, check, "cdi-multi-claim", func(a *Agent, slices []resourceapi.ResourceSlice, check func(string, error)) {
		cdiMultiClaim(ctx, a, slices, check)
	}, "--mig-mode", "static")
}

func cdiMultiClaim(ctx context.Context, a *Agent, slicesOnStore []resourceapi.ResourceSlice, fail func(string, error)) {
	uuids := map[string]string{} // device name -> uuid attribute
	for _, s := range slicesOnStore {
		for _, d := range s.Spec.Devices {
			if u, ok := d.Attributes["uuid"]; ok && u.StringValue != nil {
				uuids[d.Name] = *u.StringValue
			}
		}
	}
	mig := func(name string) resourceapi.DeviceRequest {
		return resourceapi.DeviceRequest{Name: name, Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "mig.tessera.dev", AllocationMode: resourceapi.DeviceAllocationModeExactCount, Count: 1}}
	}
	claims := []*resourceapi.ResourceClaim{
		NewClaim("cdi-gpu", GPUs("gpu", 1)),
		NewClaim("cdi-mig", mig("mig")),
		NewClaim("cdi-gpu-and-mig", GPUs("gpu", 1), mig("mig")),
	}
	if err := AllocateAndStore(ctx, a, slicesOnStore, claims...); err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	var batch []*drav1.Claim
	for _, c := range claims {
		batch = append(batch, pbClaim(c))
	}
	conn, err := dial(a.DRASocket())
	if err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	resp, err := drav1.NewDRAPluginClient(conn).NodePrepareResources(cctx, &drav1.NodePrepareResourcesRequest{Claims: batch})
	cancel()
	if err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	ids := make([][]string, len(claims)) // per claim, its CDI IDs of Tessera's kind
	for i, c := range claims {
		r := resp.Claims[string(c.UID)]
		if r == nil || r.Error != "" {
			fail("cdi-multi-claim", fmt.Errorf("prepare %s: %+v", c.Name, r))
			return
		}
		for _, d := range r.Devices {
			for _, id := range d.CdiDeviceIds {
				if strings.HasPrefix(id, "k8s.gpu.tessera.dev/claim=") {
					ids[i] = append(ids[i], id)
				}
			}
		}
	}
	n, err := ValidateCDISpecs(a.CDIRoot)
	if err == nil && n != len(claims) {
		err = fmt.Errorf("%d spec files for %d prepared claims", n, len(claims))
	}
	fail("cdi-specs-valid-multi-claim", err)

	sim := filepath.Join(a.Root, "cdi-host")
	if err := os.MkdirAll(sim, 0o755); err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	if err := simulateHost(a.CDIRoot, sim); err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	cache, err := cdi.NewCache(cdi.WithSpecDirs(sim), cdi.WithAutoRefresh(false))
	if err == nil {
		for path, errs := range cache.GetErrors() {
			err = fmt.Errorf("CDI cache refuses %s: %v", path, errs)
		}
	}
	if err != nil {
		fail("cdi-multi-claim", err)
		return
	}
	for k := 1; k <= len(claims); k++ {
		fail(fmt.Sprintf("cdi-inject-%d-claims", k), injectAndCheck(cache, a, claims[:k], ids[:k], uuids))
	}
}

// injectAndCheck injects the claims' CDI devices into one empty OCI spec and checks the result.
func injectAndCheck(cache *cdi.Cache, a *Agent, claims []*resourceapi.ResourceClaim, ids [][]string, uuids map[string]string) error {
	spec := &oci.Spec{Process: &oci.Process{}, Linux: &oci.Linux{}}
	var all []string
	for _, x := range ids {
		all = append(all, x...)
	}
	if unresolved, err := cache.InjectDevices(spec, all...); err != nil {
		return fmt.Errorf("InjectDevices(%v): %w (unresolved %v)", all, err, unresolved)
	}
	var problems []string
	have := map[string]bool{}
	for _, d := range spec.Linux.Devices {
		have[d.Path] = true
	}
	wantEnv := map[string]string{}
	for _, c := range claims {
		nodes, err := specNodes(cdiSpec(a, c.UID))
		if err != nil {
			return err
		}
		for _, p := range nodes {
			if !have[p] {
				problems = append(problems, fmt.Sprintf("device node %s of claim %s missing from the container", p, c.Name))
			}
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			wantEnv[deviceEnvKey(string(c.UID), r.Device)] = uuids[r.Device]
			for _, p := range requiredNodes(r.Device) {
				if !have[p] {
					problems = append(problems, fmt.Sprintf("device node %s of %s (claim %s) missing from the container", p, r.Device, c.Name))
				}
			}
			if strings.Contains(r.Device, "-mig-") && !hasPrefix(spec.Linux.Devices, "/dev/nvidia-caps/") {
				problems = append(problems, fmt.Sprintf("MIG device %s (claim %s): no /dev/nvidia-caps/ node in the container", r.Device, c.Name))
			}
		}
	}
	gotEnv := map[string]string{}
	visible := []string{}
	for _, e := range spec.Process.Env {
		k, v, _ := strings.Cut(e, "=")
		switch {
		case k == "NVIDIA_VISIBLE_DEVICES":
			visible = append(visible, v)
		case strings.HasPrefix(k, "TESSERA_DEVICE_"):
			gotEnv[k] = v
		}
	}
	if len(visible) != 1 || visible[0] != "void" {
		problems = append(problems, fmt.Sprintf("NVIDIA_VISIBLE_DEVICES %q, want exactly \"void\" (the CDI library keeps the last claim's value of a key set twice)", visible))
	}
	if d := diffEnv(wantEnv, gotEnv); d != "" {
		problems = append(problems, "TESSERA_DEVICE_* differ from the claims' devices: "+d)
	}
	return joinProblems(problems)
}

// requiredNodes is what a device needs whatever the spec says, from the contract's names
// (gpu-<minor>, gpu-<minor>-mig-…): the control nodes and its (parent) GPU's node.
func requiredNodes(device string) []string {
	out := []string{"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"}
	var minor int
	if _, err := fmt.Sscanf(device, "gpu-%d", &minor); err == nil {
		out = append(out, fmt.Sprintf("/dev/nvidia%d", minor))
	}
	return out
}

func hasPrefix(devs []oci.LinuxDevice, prefix string) bool {
	for _, d := range devs {
		if strings.HasPrefix(d.Path, prefix) {
			return true
		}
	}
	return false
}

func diffEnv(want, got map[string]string) string {
	var out []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			out = append(out, "missing "+k+"="+v)
		} else if g != v {
			out = append(out, fmt.Sprintf("%s=%s, want %s", k, g, v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			out = append(out, "unexpected "+k+"="+v)
		}
	}
	sort.Strings(out)
	if len(out) > 6 {
		out = append(out[:6], fmt.Sprintf("… %d more", len(out)-6))
	}
	return strings.Join(out, "; ")
}
