package v1alpha1

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzChildDocuments feeds Application and Project documents, as a
// repository might hold them, through the conversions render applies to
// every one it finds: they never panic, and what they return is a ferry
// object in ferry's namespace, or an error.
func FuzzChildDocuments(f *testing.F) {
	f.Add([]byte("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a, finalizers: [resources-finalizer.argocd.argoproj.io]}\nspec: {source: {repoURL: x}, destination: {namespace: y}, foo: 1}\n"))
	f.Add([]byte("apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata: {name: p}\nspec: {sourceRepos: ['*'], destinations: [{namespace: '*'}], roles: [{name: r}]}\n"))
	f.Add([]byte(`{"metadata":{"name":"x","finalizers":[1,null]},"spec":{"sources":[{"helm":{"valuesObject":{"a":[{}]}}}]}}`))
	f.Add([]byte(`{"metadata":{"name":"x"},"spec":{"clusterResourceWhitelist":"nope"}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		var obj map[string]any
		if yaml.Unmarshal(doc, &obj) != nil || obj == nil {
			return
		}
		for kind, convert := range map[string]func(map[string]any, string) (map[string]any, []string, error){
			Kind: ChildApplication, ProjectKind: ChildProject,
		} {
			out, _, err := convert(obj, "ferry")
			if err != nil {
				continue
			}
			meta, _ := out["metadata"].(map[string]any)
			if out["apiVersion"] != APIVersion || out["kind"] != kind || meta["namespace"] != "ferry" || meta["name"] == "" {
				t.Fatalf("%s conversion gave %v", kind, out)
			}
			if _, err := json.Marshal(out); err != nil {
				t.Fatalf("%s conversion gave an object that does not encode: %v", kind, err)
			}
		}
	})
}
