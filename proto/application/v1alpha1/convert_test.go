package v1alpha1

import (
	"encoding/json"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestChildApplicationFromArgoCD(t *testing.T) {
	doc := `apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: blog
  namespace: argocd
  labels: {team: web}
  finalizers: [resources-finalizer.argocd.argoproj.io]
spec:
  project: default
  source:
    repoURL: https://github.com/acme/platform.git
    targetRevision: main
    path: components/apps/blog
    helm:
      valueFiles: [values.yaml]
      valuesObject: {image: {tag: "1.2.3"}, anyKey: true}
      fileParameters: [{name: x, path: y}]
  destination: {server: https://kubernetes.default.svc, namespace: blog}
  syncPolicy:
    automated: {prune: true, selfHeal: true}
    syncOptions: [CreateNamespace=true]
    managedNamespaceMetadata: {labels: {a: b}}
  ignoreDifferences:
    - group: apps
      kind: Deployment
      jsonPointers: [/spec/replicas]
`
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatal(err)
	}
	out, unsupported, err := ChildApplication(obj, "ferry")
	if err != nil {
		t.Fatal(err)
	}
	wantUnsupported := []string{"spec.ignoreDifferences", "spec.source.helm.fileParameters", "spec.syncPolicy.managedNamespaceMetadata"}
	if !slices.Equal(unsupported, wantUnsupported) {
		t.Errorf("unsupported = %v, want %v", unsupported, wantUnsupported)
	}
	if out["apiVersion"] != APIVersion {
		t.Errorf("apiVersion = %v", out["apiVersion"])
	}
	meta := out["metadata"].(map[string]any)
	if meta["namespace"] != "ferry" {
		t.Errorf("namespace = %v, want ferry", meta["namespace"])
	}
	if fins := meta["finalizers"].([]any); len(fins) != 1 || fins[0] != ResourcesFinalizer {
		t.Errorf("finalizers = %v", fins)
	}
	if ann := meta["annotations"].(map[string]any); ann[AnnotationUnsupported] != "spec.ignoreDifferences,spec.source.helm.fileParameters,spec.syncPolicy.managedNamespaceMetadata" {
		t.Errorf("annotation = %v", ann[AnnotationUnsupported])
	}
	raw, _ := json.Marshal(out["spec"])
	var spec ApplicationSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Source.Path != "components/apps/blog" || !spec.SyncPolicy.Automated.SelfHeal || spec.Source.Helm.ValuesObject["anyKey"] != true || spec.Project != "default" {
		t.Errorf("spec lost fields: %+v", spec)
	}
}

func TestChildApplicationKeepsAFullySupportedSpec(t *testing.T) {
	obj := map[string]any{
		"apiVersion": APIVersion, "kind": Kind,
		"metadata": map[string]any{"name": "x", "namespace": "elsewhere"},
		"spec": map[string]any{
			"sources": []any{
				map[string]any{"repoURL": "https://charts.example.com", "chart": "x", "targetRevision": "1.0.0", "helm": map[string]any{"valueFiles": []any{"$values/x.yaml"}}},
				map[string]any{"repoURL": "https://github.com/acme/values.git", "ref": "values"},
			},
			"destination": map[string]any{"name": "in-cluster", "namespace": "x"},
		},
	}
	out, unsupported, err := ChildApplication(obj, "ferry")
	if err != nil {
		t.Fatal(err)
	}
	if len(unsupported) != 0 {
		t.Errorf("unsupported = %v, want none", unsupported)
	}
	if _, ok := out["metadata"].(map[string]any)["annotations"]; ok {
		t.Error("a supported spec got annotations")
	}
}

func TestIsApplication(t *testing.T) {
	if !IsApplication("argoproj.io/v1alpha1", "Application") || !IsApplication("ferry.dev/v1alpha1", "Application") {
		t.Error("Application kinds not recognised")
	}
	if IsApplication("argoproj.io/v1alpha1", "AppProject") || IsApplication("example.com/v1", "Application") {
		t.Error("other kinds recognised as Applications")
	}
}
