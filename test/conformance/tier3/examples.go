package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// exampleObjects reads every object of one deploy/examples file (documents split as kubectl does).
func exampleObjects(file string) ([]unstructured.Unstructured, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var objs []unstructured.Unstructured
	for _, doc := range docSep.Split(string(data), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("%s: YAML that does not parse: %v", filepath.Base(file), err)
		}
		if m != nil {
			objs = append(objs, unstructured.Unstructured{Object: m})
		}
	}
	return objs, nil
}

// opaqueParams is every opaque parameters object of a claim, a claim template or a class, in order.
func opaqueParams(o *unstructured.Unstructured) []any {
	configs, _, _ := unstructured.NestedSlice(o.Object, "spec", "devices", "config")
	if o.GetKind() == "ResourceClaimTemplate" {
		configs, _, _ = unstructured.NestedSlice(o.Object, "spec", "spec", "devices", "config")
	}
	if o.GetKind() == "DeviceClass" {
		configs, _, _ = unstructured.NestedSlice(o.Object, "spec", "config")
	}
	var out []any
	for _, c := range configs {
		if m, ok := c.(map[string]any); ok {
			p, _, _ := unstructured.NestedFieldNoCopy(m, "opaque", "parameters")
			out = append(out, p)
		}
	}
	return out
}

// createAndReadBack creates an object through the API server (its validation is the check) and
// reads it back: the opaque parameters must be stored as written.
func createAndReadBack(ctx context.Context, ap *applier, obj *unstructured.Unstructured) error {
	want := opaqueParams(obj)
	ri, _, err := ap.resource(obj)
	if err != nil {
		return err
	}
	if _, err := ri.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("%s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	got, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	if have := opaqueParams(got); !reflect.DeepEqual(norm(have), norm(want)) {
		return fmt.Errorf("%s %s: the stored opaque parameters differ from the file's: %v, want %v", obj.GetKind(), obj.GetName(), have, want)
	}
	return ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{})
}

// norm compares JSON values by their JSON form (numbers read back as int64 or float64).
func norm(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// applyExamples creates every object of every deploy/examples/*.yaml (one check per file), and a
// DeviceClass carrying each example's Tessera opaque config: the real API server accepts them.
func applyExamples(ctx context.Context, repo, kubeconfig string, wrap func(string, error) bool) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if !wrap("examples-client", err) {
		return
	}
	ap, err := newApplier(rc)
	if !wrap("examples-applier", err) {
		return
	}
	files, err := filepath.Glob(filepath.Join(repo, "deploy", "examples", "*.yaml"))
	if err == nil && len(files) == 0 {
		err = fmt.Errorf("deploy/examples holds no YAML")
	}
	if !wrap("examples-found", err) {
		return
	}
	sort.Strings(files)
	classes := 0
	for _, f := range files {
		base := strings.TrimSuffix(filepath.Base(f), ".yaml")
		objs, err := exampleObjects(f)
		if err == nil && len(objs) == 0 {
			err = fmt.Errorf("%s holds no object", filepath.Base(f))
		}
		var errs []string
		for i := range objs {
			o := &objs[i]
			params := opaqueParams(o)
			if e := createAndReadBack(ctx, ap, o); e != nil {
				errs = append(errs, e.Error())
			}
			// The same opaque config in a DeviceClass's config (class configs come first in precedence).
			for j, p := range params {
				classes++
				dc := &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
					"metadata": map[string]any{"name": fmt.Sprintf("example-%s-%d.tessera.dev", base, j)},
					"spec": map[string]any{
						"selectors": []any{map[string]any{"cel": map[string]any{"expression": `device.driver == "gpu.tessera.dev"`}}},
						"config":    []any{map[string]any{"opaque": map[string]any{"driver": "gpu.tessera.dev", "parameters": p}}},
					},
				}}
				if e := createAndReadBack(ctx, ap, dc); e != nil {
					errs = append(errs, e.Error())
				}
			}
		}
		if err == nil {
			err = joinErrs(errs)
		}
		wrap("example-accepted-"+base, err)
	}
	fmt.Fprintf(os.Stderr, "tier3: %d example files accepted by kube-apiserver, %d DeviceClasses with their opaque configs\n", len(files), classes)
}
