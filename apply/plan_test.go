package apply

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/release"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func TestParseHook(t *testing.T) {
	type hook struct {
		Phases []HookPhase
		Weight int
		Policy []string
		Skip   bool
		Err    string
	}
	parse := func(ann map[string]string) hook {
		h, skip, err := parseHook(ann)
		var out hook
		out.Skip = skip
		if err != nil {
			out.Err = err.Error()
			return out
		}
		if h == nil {
			return out
		}
		for _, p := range []HookPhase{HookPreSync, HookSync, HookPostSync, HookSyncFail} {
			if h.phases[p] {
				out.Phases = append(out.Phases, p)
			}
		}
		out.Weight = h.weight
		for _, p := range []string{deleteBeforeCreation, deleteOnSuccess, deleteOnFailure} {
			if h.policy[p] {
				out.Policy = append(out.Policy, p)
			}
		}
		return out
	}
	cases := []struct {
		name string
		ann  map[string]string
		want hook
	}{
		{"a plain object is no hook", map[string]string{"other": "x"}, hook{}},
		{"ferry's annotations", map[string]string{v1alpha1.AnnotationHook: "PreSync", v1alpha1.AnnotationHookWeight: "-2", v1alpha1.AnnotationHookDeletePolicy: "HookSucceeded"},
			hook{Phases: []HookPhase{HookPreSync}, Weight: -2, Policy: []string{deleteOnSuccess}}},
		{"Argo CD's annotations, with the default policy", map[string]string{v1alpha1.ArgoAnnotationHook: "PreSync,PostSync", v1alpha1.ArgoAnnotationSyncWave: "3"},
			hook{Phases: []HookPhase{HookPreSync, HookPostSync}, Weight: 3, Policy: []string{deleteBeforeCreation}}},
		{"Argo CD's policy names", map[string]string{v1alpha1.ArgoAnnotationHook: "SyncFail", v1alpha1.ArgoAnnotationHookDeletePolicy: "HookFailed, BeforeHookCreation"},
			hook{Phases: []HookPhase{HookSyncFail}, Policy: []string{deleteBeforeCreation, deleteOnFailure}}},
		{"Helm's annotations", map[string]string{release.HookAnnotation: "pre-install,pre-upgrade", release.HookWeightAnnotation: "5", release.HookDeleteAnnotation: "hook-succeeded"},
			hook{Phases: []HookPhase{HookPreSync}, Weight: 5, Policy: []string{deleteOnSuccess}}},
		{"ferry's annotation wins over Argo CD's", map[string]string{v1alpha1.AnnotationHook: "PostSync", v1alpha1.ArgoAnnotationHook: "PreSync"},
			hook{Phases: []HookPhase{HookPostSync}, Policy: []string{deleteBeforeCreation}}},
		{"Skip is never applied", map[string]string{v1alpha1.ArgoAnnotationHook: "Skip"}, hook{Skip: true}},
		{"a Helm test is never applied", map[string]string{release.HookAnnotation: "test"}, hook{Skip: true}},
		{"an unknown phase is an error", map[string]string{v1alpha1.AnnotationHook: "Later"}, hook{Err: `annotation ferry.dev/hook: unknown hook phase "Later"`}},
		{"a bad weight is an error", map[string]string{v1alpha1.AnnotationHook: "PreSync", v1alpha1.AnnotationHookWeight: "heavy"}, hook{Err: `annotation ferry.dev/hook-weight: "heavy" is not an integer`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if d := cmp.Diff(c.want, parse(c.ann)); d != "" {
				t.Errorf("parseHook(%v) (-want +got):\n%s", c.ann, d)
			}
		})
	}
}

func TestPruneDisabled(t *testing.T) {
	cases := map[string]bool{
		"":                                     false,
		v1alpha1.AnnotationPrune + "=disabled": true,
		v1alpha1.ArgoAnnotationSyncOptions + "=Prune=false":                      true,
		v1alpha1.ArgoAnnotationSyncOptions + "=ServerSideApply=true,Prune=false": true,
		v1alpha1.ArgoAnnotationSyncOptions + "=ServerSideApply=true":             false,
	}
	for in, want := range cases {
		ann := map[string]string{}
		if in != "" {
			k, v, _ := strings.Cut(in, "=")
			ann[k] = v
		}
		if got := pruneDisabled(ann); got != want {
			t.Errorf("pruneDisabled(%v) = %v, want %v", ann, got, want)
		}
	}
}

func TestStepsOrderWavesThenStagesThenKinds(t *testing.T) {
	obj := func(kind string, stage, wave, index int) *object {
		o := &object{stage: stage, wave: wave, index: index}
		o.gk.Kind = kind
		o.ref.Name = fmt.Sprintf("%s-%d", kind, index)
		return o
	}
	in := []*object{
		obj("Deployment", stageNamespaced, 0, 0),
		obj("ServiceAccount", stageNamespaced, 0, 1),
		obj("Widget", stageNamespaced, 0, 2),
		obj("ClusterRole", stageClusterScoped, 0, 3),
		obj("Namespace", stageNamespacesAndCRDs, 0, 4),
		obj("ConfigMap", stageNamespaced, -1, 5),
		obj("CustomResourceDefinition", stageNamespacesAndCRDs, 0, 6),
	}
	var got [][]string
	for _, step := range steps(in) {
		var names []string
		for _, o := range step {
			names = append(names, o.ref.Name)
		}
		got = append(got, names)
	}
	want := [][]string{
		{"ConfigMap-5"},
		{"Namespace-4", "CustomResourceDefinition-6"},
		{"ClusterRole-3"},
		{"ServiceAccount-1", "Deployment-0", "Widget-2"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("steps (-want +got):\n%s", d)
	}
}

func TestInventoryName(t *testing.T) {
	if got, want := InventoryName("ferry/web"), "inventory.ferry.web"; got != want {
		t.Errorf("InventoryName = %q, want %q", got, want)
	}
	long := "ns/" + string(make([]byte, 300))
	if got := InventoryName(long); len(got) > 253 {
		t.Errorf("InventoryName of a long app is %d characters", len(got))
	}
}

func TestStepsKeepBundleOrderOfKindsHelmDoesNotList(t *testing.T) {
	var in []*object
	for i, kind := range []string{"Issuer", "Deployment", "Certificate", "ConfigMap"} {
		o := &object{stage: stageNamespaced, index: i}
		o.gk.Kind = kind
		o.ref.Name = kind
		in = append(in, o)
	}
	var got []string
	for _, step := range steps(in) {
		for _, o := range step {
			got = append(got, o.ref.Name)
		}
	}
	want := []string{"ConfigMap", "Deployment", "Issuer", "Certificate"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("steps (-want +got):\n%s", d)
	}
}
