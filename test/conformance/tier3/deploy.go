package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"tessera.dev/conformance/kubelet"
)

// goTool is a Go program the tap suite builds into ~/.cache/tessera/<name>-<version>
// (test/support/go-tools.ts): the same module, version and place here.
type goTool struct{ Name, Module, Version string }

var (
	kustomizeTool = goTool{"kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.7.1"}
	helmTool      = goTool{"helm", "helm.sh/helm/v3/cmd/helm", "v3.22.0"}
)

// findTool returns the binary the tap suite built (same cache path and version), else one
// on PATH, else builds it the same way (go install into the cache).
func findTool(t goTool) (string, error) {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "tessera", t.Name+"-"+t.Version)
	bin := filepath.Join(dir, t.Name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if p, err := exec.LookPath(t.Name); err == nil {
		return p, nil
	}
	cmd := exec.Command("go", "install", t.Module+"@"+t.Version)
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s %s: %v: %s", t.Name, t.Version, err, lastLines(string(out), 3))
	}
	return bin, nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// renderDeploy renders one kustomization under deploy/ into objects.
func renderDeploy(repo, dir string) ([]unstructured.Unstructured, error) {
	bin, err := findTool(kustomizeTool)
	if err != nil {
		return nil, err
	}
	return render("deploy/"+dir, exec.Command(bin, "build", filepath.Join(repo, "deploy", dir)))
}

// helmKubeVersion is .Capabilities.KubeVersion for `helm template`: a `go install`ed helm has
// no version ldflags and would claim v1.20, which the chart's kubeVersion refuses (as in
// test/deploy.test.ts); the harness's server is 1.37.2.
const helmKubeVersion = "1.37.2"

// renderChart renders deploy/helm/tessera with its defaults as release "tessera" in namespace.
func renderChart(repo, namespace string) ([]unstructured.Unstructured, error) {
	bin, err := findTool(helmTool)
	if err != nil {
		return nil, err
	}
	return render("deploy/helm/tessera", exec.Command(bin, "template", "tessera", filepath.Join(repo, "deploy", "helm", "tessera"),
		"--namespace", namespace, "--kube-version", helmKubeVersion))
}

// render runs a renderer and splits its YAML stream into objects.
func render(what string, cmd *exec.Cmd) ([]unstructured.Unstructured, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("render %s: %v: %s", what, err, lastLines(stderr.String(), 3))
	}
	var objs []unstructured.Unstructured
	for _, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("%s renders YAML that does not parse: %v", what, err)
		}
		if m == nil { // a template that rendered only comments
			continue
		}
		objs = append(objs, unstructured.Unstructured{Object: m})
	}
	return objs, nil
}

// applier creates objects of any kind through the discovery-backed REST mapper, updating
// those that exist already (the DeviceClasses earlier checks created).
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(rc *rest.Config) (*applier, error) {
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

func (a *applier) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, schema.GroupVersionResource, error) {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		a.mapper.Reset() // a CRD created just now
		if m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err != nil {
			return nil, schema.GroupVersionResource{}, fmt.Errorf("%s: %w", gvk, err)
		}
	}
	if m.Scope.Name() == "namespace" {
		return a.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), m.Resource, nil
	}
	return a.dyn.Resource(m.Resource), m.Resource, nil
}

func (a *applier) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	ri, _, err := a.resource(obj)
	if err != nil {
		return err
	}
	_, err = ri.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		old, gerr := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		obj.SetResourceVersion(old.GetResourceVersion())
		_, err = ri.Update(ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	return nil
}

// inferencePoolCRD is a minimal CustomResourceDefinition for inference.networking.k8s.io/v1
// InferencePool (schema left open): the proxy's RBAC needs the resource to exist.
func inferencePoolCRD() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "inferencepools.inference.networking.k8s.io",
			// *.k8s.io groups need this annotation; the value marks the stand-in as unapproved.
			"annotations": map[string]any{"api-approved.kubernetes.io": "unapproved, Tessera conformance stand-in"}},
		"spec": map[string]any{
			"group": "inference.networking.k8s.io", "scope": "Namespaced",
			"names": map[string]any{"plural": "inferencepools", "singular": "inferencepool", "kind": "InferencePool", "listKind": "InferencePoolList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
}

// waitServed waits until the API server serves a group/version/resource.
func (a *applier) waitServed(ctx context.Context, gvr schema.GroupVersionResource) error {
	return kubelet.WaitFor(ctx, 30*time.Second, func() bool {
		_, err := a.dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil
	})
}
