package tier2

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"tessera.dev/conformance/gen"
	"tessera.dev/conformance/oracle"
)

// FixtureSlices asks Tessera which slices a fixture node publishes (`diag slices -o json`).
// The output may be a JSON array, a List object, or a single slice.
func FixtureSlices(repo, fixture, node, migMode string) ([]resourceapi.ResourceSlice, error) {
	cmd := exec.Command("node", filepath.Join(repo, "bin", "tessera.js"), "diag", "slices",
		"--discovery", "fixture:"+fixture, "--node-name", node, "--mig-mode", migMode, "-o", "json")
	cmd.Dir = repo
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("tessera diag slices --discovery fixture:%s: %v: %s", fixture, err, strings.TrimSpace(stderr.String()))
	}
	var list []resourceapi.ResourceSlice
	if err := json.Unmarshal(out, &list); err == nil {
		return list, nil
	}
	var obj struct {
		Kind   string                      `json:"kind"`
		Items  []resourceapi.ResourceSlice `json:"items"`
		Slices []resourceapi.ResourceSlice `json:"slices"`
	}
	if err := json.Unmarshal(out, &obj); err != nil {
		return nil, fmt.Errorf("diag slices -o json for %s is not JSON slices: %v", fixture, err)
	}
	switch {
	case len(obj.Items) > 0:
		return obj.Items, nil
	case len(obj.Slices) > 0:
		return obj.Slices, nil
	case obj.Kind == "ResourceSlice":
		var one resourceapi.ResourceSlice
		_ = json.Unmarshal(out, &one)
		return []resourceapi.ResourceSlice{one}, nil
	}
	return nil, fmt.Errorf("diag slices -o json for %s printed no slices", fixture)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// ExampleClaims reads every ResourceClaim and ResourceClaimTemplate in dir (YAML or JSON,
// several documents per file) and returns them as claims named after file and object.
func ExampleClaims(dir string) ([]resourceapi.ResourceClaim, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []resourceapi.ResourceClaim
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		for _, doc := range docSep.Split(string(raw), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head struct {
				Kind     string            `json:"kind"`
				Metadata metav1.ObjectMeta `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, fmt.Errorf("%s: %v", e.Name(), err)
			}
			var claim resourceapi.ResourceClaim
			switch head.Kind {
			case "ResourceClaim":
				if err := yaml.Unmarshal([]byte(doc), &claim); err != nil {
					return nil, fmt.Errorf("%s: %v", e.Name(), err)
				}
			case "ResourceClaimTemplate":
				var tpl resourceapi.ResourceClaimTemplate
				if err := yaml.Unmarshal([]byte(doc), &tpl); err != nil {
					return nil, fmt.Errorf("%s: %v", e.Name(), err)
				}
				claim = resourceapi.ResourceClaim{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec.Spec}
			default:
				continue
			}
			claim.TypeMeta = metav1.TypeMeta{APIVersion: "resource.k8s.io/v1", Kind: "ResourceClaim"}
			base := strings.TrimSuffix(e.Name(), ext)
			claim.Name = base + "." + head.Metadata.Name
			if claim.Namespace == "" {
				claim.Namespace = "default"
			}
			claim.UID = types.UID("uid-" + claim.Name)
			out = append(out, claim)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ExampleCases crosses every example claim with every fixture node, with static and with
// dynamic MIG (partitionable devices) slices (empty node, no prior allocations). Classes come from deploy/ when present there, else the contract's two.
func ExampleCases(repo string, fixtures []string) ([]oracle.Case, []error) {
	claims, err := ExampleClaims(filepath.Join(repo, "deploy", "examples"))
	if err != nil {
		return nil, []error{fmt.Errorf("read deploy/examples: %w", err)}
	}
	if len(claims) == 0 {
		return nil, []error{fmt.Errorf("deploy/examples holds no ResourceClaim or ResourceClaimTemplate yet")}
	}
	var cases []oracle.Case
	var errs []error
	for _, f := range fixtures {
		for _, mode := range []string{"static", "dynamic"} {
			node := "conformance-" + f
			slices, err := FixtureSlices(repo, f, node, mode)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, c := range claims {
				cases = append(cases, oracle.Case{Name: "example-" + f + "-" + mode + "-" + c.Name, Node: node, Slices: slices,
					DeviceClasses: gen.DeviceClasses(), Claim: c})
			}
		}
	}
	return cases, errs
}
