// validate-slices checks the ResourceSlices Tessera builds with the API server code of one
// Kubernetes minor: v1 JSON is decoded strictly (unknown fields are ones that minor's server
// drops), defaulted and converted to the internal types by that minor's scheme, passed through
// the ResourceSlice strategy's PrepareForCreate (which silently drops fields of disabled
// features) and Validate (pkg/apis/resource/validation), the same steps a create takes.
//
// This one file is the main of every per-minor module (test/conformance/validate/v1_MM/, each
// requiring its own k8s.io/kubernetes): v1_37/main.go is the file, the others link to it.
//
//	validate-slices --dir <dir>   every <fixture>__<mode>__<sharing>.json (a v1 List of slices)
//
// It runs itself once per feature-gate profile (the gates are process-wide), prints one JSON
// line per default-gate case in the shape scripts/run-conformance.mjs counts, the whole matrix
// (every profile) as a table on stderr, and writes it to --matrix as JSON when given.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/component-base/featuregate"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	"k8s.io/kubernetes/pkg/apis/resource"
	"k8s.io/kubernetes/pkg/apis/resource/install"
	"k8s.io/kubernetes/pkg/registry/resource/resourceslice"
)

const tier = 5

// profiles: the minor's default gates, then each DRA gate the issue asks about switched on,
// then all three.
var profiles = []struct {
	name  string
	gates []string
}{
	{"default", nil},
	{"+DRAPartitionableDevices", []string{"DRAPartitionableDevices"}},
	{"+DRAConsumableCapacity", []string{"DRAConsumableCapacity"}},
	{"+DRADeviceTaints", []string{"DRADeviceTaints"}},
	{"+all3", []string{"DRAPartitionableDevices", "DRAConsumableCapacity", "DRADeviceTaints"}},
}

// Result is one case (fixture × mode × sharing) under one gate profile.
type Result struct {
	Minor   string   `json:"minor"`
	Profile string   `json:"profile"`
	Case    string   `json:"case"`
	Slices  int      `json:"slices"`
	Errors  int      `json:"errors"` // validation errors, unknown fields and dropped fields together
	First   []string `json:"first"`  // the first few, for the report
	Gates   string   `json:"gates"`  // what the profile's gates were in this minor
	Setup   string   `json:"setup"`  // non-empty: the case could not be validated (bad file)
}

func (r Result) Verdict() string {
	switch {
	case r.Setup != "":
		return "setup: " + r.Setup
	case r.Errors == 0:
		return "accepted"
	default:
		return fmt.Sprintf("%d errors", r.Errors)
	}
}

func main() {
	dir := flag.String("dir", "", "directory of <fixture>__<mode>__<sharing>.json slice lists")
	profile := flag.String("profile", "", "internal: validate under this gate profile only and print results as JSON")
	matrix := flag.String("matrix", "", "write every profile's results here as JSON")
	refused := flag.String("refused", "", "comma-separated <mode>/<sharing> pairs Tessera's agent refuses to publish on this minor (TESSERA_CONFIG at start)")
	flag.Parse()
	install.Install(legacyscheme.Scheme)
	if *profile != "" {
		out, err := runProfile(*dir, *profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		return
	}
	minor := kubernetesMinor()
	var all []Result
	for _, p := range profiles {
		cmd := exec.Command(os.Args[0], "-dir", *dir, "-profile", p.name)
		cmd.Stderr = os.Stderr
		b, err := cmd.Output()
		var rs []Result
		if err == nil {
			err = json.Unmarshal(b, &rs)
		}
		if err != nil {
			emit(map[string]any{"tier": tier, "check": fmt.Sprintf("slices-valid/%s/%s", minor, p.name), "status": "fail", "detail": err.Error()})
			os.Exit(1)
		}
		all = append(all, rs...)
	}
	refusedSet := map[string]bool{}
	for _, p := range strings.Split(*refused, ",") {
		if p != "" {
			refusedSet[p] = true
		}
	}
	failed := false
	for _, r := range all {
		if r.Profile != "default" {
			continue
		}
		line := map[string]any{"tier": tier, "check": fmt.Sprintf("slices-valid/%s/%s", minor, r.Case), "status": "pass"}
		parts := strings.Split(r.Case, "/")
		modeSharing := ""
		if len(parts) == 3 {
			modeSharing = parts[1] + "/" + parts[2]
		}
		if refusedSet[modeSharing] && r.Setup == "" {
			// The agent never publishes this layout on this minor: it exits at start instead. What
			// matters is that the refusal covers every layout this minor's validation rejects.
			line["detail"] = fmt.Sprintf("%s by %s's validation; Tessera's agent refuses %s on %s at start", r.Verdict(), minor, modeSharing, minor)
		} else if r.Verdict() != "accepted" {
			failed = true
			line["status"] = "fail"
			line["detail"] = r.Verdict() + ": " + strings.Join(r.First, " | ")
		}
		emit(line)
	}
	printTable(minor, all)
	if *matrix != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(*matrix, b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// kubernetesMinor reads the k8s.io/kubernetes version this binary was built with ("1.34").
func kubernetesMinor() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/kubernetes" {
				parts := strings.SplitN(strings.TrimPrefix(d.Version, "v"), ".", 3)
				if len(parts) >= 2 {
					return parts[0] + "." + parts[1]
				}
			}
		}
	}
	return "unknown"
}

func featureName(n string) featuregate.Feature { return featuregate.Feature(n) }

// setGates switches the profile's gates on; it says which were unknown or already on.
func setGates(names []string) (string, error) {
	known := utilfeature.DefaultMutableFeatureGate.GetAll()
	want := map[string]bool{}
	var notes []string
	for _, n := range names {
		if _, ok := known[featureName(n)]; !ok {
			notes = append(notes, n+" unknown")
			continue
		}
		if utilfeature.DefaultFeatureGate.Enabled(featureName(n)) {
			notes = append(notes, n+" on by default")
			continue
		}
		want[n] = true
		notes = append(notes, n+" switched on")
	}
	if len(want) > 0 {
		if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(want); err != nil {
			return "", err
		}
	}
	return strings.Join(notes, ", "), nil
}

func runProfile(dir, name string) ([]Result, error) {
	var gates []string
	found := false
	for _, p := range profiles {
		if p.name == name {
			gates, found = p.gates, true
		}
	}
	if !found {
		return nil, fmt.Errorf("unknown profile %q", name)
	}
	note, err := setGates(gates)
	if err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no slice lists in %s (%v)", dir, err)
	}
	sort.Strings(files)
	out := make([]Result, 0, len(files))
	for _, f := range files {
		r := validateFile(f)
		r.Minor, r.Profile, r.Gates = kubernetesMinor(), name, note
		out = append(out, r)
	}
	return out, nil
}

func validateFile(file string) Result {
	r := Result{Case: strings.ReplaceAll(strings.TrimSuffix(filepath.Base(file), ".json"), "__", "/")}
	raw, err := os.ReadFile(file)
	if err != nil {
		r.Setup = err.Error()
		return r
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
		Error string            `json:"error"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		r.Setup = fmt.Sprintf("not a List: %v", err)
		return r
	}
	if list.Error != "" { // the script could not produce the slices (e.g. an unknown flag)
		r.Setup = list.Error
		return r
	}
	if len(list.Items) == 0 {
		r.Setup = "no slices"
		return r
	}
	r.Slices = len(list.Items)
	var problems []string
	for i, item := range list.Items {
		for _, p := range validateSlice(item) {
			problems = append(problems, fmt.Sprintf("items[%d]: %s", i, p))
		}
	}
	r.Errors = len(problems)
	if len(problems) > 4 {
		problems = problems[:4]
	}
	r.First = problems
	return r
}

// validateSlice runs one v1 slice through what a create does and returns every problem.
func validateSlice(raw []byte) []string {
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, legacyscheme.Scheme, legacyscheme.Scheme,
		kjson.SerializerOptions{Strict: true})
	var problems []string
	obj, _, err := strict.Decode(raw, nil, nil)
	if err != nil {
		if obj == nil || !runtime.IsStrictDecodingError(err) {
			return []string{"decode: " + err.Error()}
		}
		// The server's default field validation (Warn) drops these and carries on.
		problems = append(problems, "unknown fields, dropped by this server: "+err.Error())
	}
	legacyscheme.Scheme.Default(obj)
	internal := &resource.ResourceSlice{}
	if err := legacyscheme.Scheme.Convert(obj, internal, nil); err != nil {
		return append(problems, "convert: "+err.Error())
	}
	before := internal.DeepCopy()
	// A create of resource.k8s.io/v1 resourceslices, as the server's handler records it (the
	// 1.35+ strategies run declarative validation too and need to know the request).
	ctx := genericapirequest.WithRequestInfo(genericapirequest.NewContext(), &genericapirequest.RequestInfo{
		IsResourceRequest: true, Verb: "create", APIGroup: "resource.k8s.io", APIVersion: "v1", Resource: "resourceslices"})
	resourceslice.Strategy.PrepareForCreate(ctx, internal)
	problems = append(problems, droppedFields(before, internal)...)
	for _, e := range resourceslice.Strategy.Validate(ctx, internal) {
		problems = append(problems, e.Error())
	}
	return problems
}

// droppedFields names the spec fields PrepareForCreate cleared (features disabled in this
// minor): the server would store the slice without them, which is not what Tessera published.
func droppedFields(before, after *resource.ResourceSlice) []string {
	var out []string
	var walk func(path string, a, b reflect.Value)
	walk = func(path string, a, b reflect.Value) {
		if !a.IsValid() || a.IsZero() {
			return
		}
		if !b.IsValid() || b.IsZero() {
			out = append(out, "field "+path+" dropped by PrepareForCreate (feature disabled in this minor)")
			return
		}
		switch a.Kind() {
		case reflect.Pointer:
			walk(path, a.Elem(), b.Elem())
		case reflect.Struct:
			for i := 0; i < a.NumField(); i++ {
				walk(path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
			}
		case reflect.Slice:
			for i := 0; i < a.Len() && i < b.Len(); i++ {
				walk(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i))
			}
		}
	}
	walk("spec", reflect.ValueOf(before.Spec), reflect.ValueOf(after.Spec))
	return out
}

func printTable(minor string, all []Result) {
	byCase := map[string]map[string]string{}
	var cases []string
	for _, r := range all {
		if byCase[r.Case] == nil {
			byCase[r.Case] = map[string]string{}
			cases = append(cases, r.Case)
		}
		v := r.Verdict()
		if r.Setup != "" {
			v = "not built" // the reason is in the check's line
		}
		byCase[r.Case][r.Profile] = v
	}
	sort.Strings(cases)
	fmt.Fprintf(os.Stderr, "validate %s: case | %s\n", minor, strings.Join(profileNames(), " | "))
	for _, c := range cases {
		var cells []string
		for _, p := range profileNames() {
			cells = append(cells, byCase[c][p])
		}
		fmt.Fprintf(os.Stderr, "validate %s: %s | %s\n", minor, c, strings.Join(cells, " | "))
	}
	for _, p := range profiles[1:] {
		for _, r := range all {
			if r.Profile == p.name {
				fmt.Fprintf(os.Stderr, "validate %s: gates %s: %s\n", minor, p.name, r.Gates)
				break
			}
		}
	}
}

func profileNames() []string {
	out := make([]string, 0, len(profiles))
	for _, p := range profiles {
		out = append(out, p.name)
	}
	return out
}
