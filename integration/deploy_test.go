package integration

import (
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestDeployManifestsBuild builds ferry's own manifests and the
// observability stack with kustomize, as `kubectl apply -k` would.
func TestDeployManifestsBuild(t *testing.T) {
	cases := map[string][]string{
		"deploy":               {"ClusterRole/ferry", "ClusterRoleBinding/ferry", "Deployment/ferry", "Namespace/ferry", "Service/ferry", "Service/ferry-api", "ServiceAccount/ferry"},
		"deploy/observability": {"ConfigMap/prometheus-config-", "Deployment/jaeger", "Deployment/prometheus", "Namespace/observability", "Service/jaeger", "Service/prometheus"},
	}
	for dir, want := range cases {
		t.Run(dir+" builds", func(t *testing.T) {
			k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
			res, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join("..", dir))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res.Resources() {
				name := r.GetName()
				if r.GetKind() == "ConfigMap" {
					name = name[:len("prometheus-config-")]
				}
				got = append(got, r.GetKind()+"/"+name)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("objects %v, want %v", got, want)
			}
		})
	}
}
