package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/release"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Hook phases.
const (
	HookPreSync  = "PreSync"
	HookPostSync = "PostSync"
	HookSyncFail = "SyncFail"
)

// helmHookPhases maps the Helm hooks Argo CD honours to ferry phases. The
// others (delete, rollback and test hooks) have no place in a sync.
var helmHookPhases = map[release.HookEvent]string{
	release.HookPreInstall:  HookPreSync,
	release.HookPreUpgrade:  HookPreSync,
	release.HookPostInstall: HookPostSync,
	release.HookPostUpgrade: HookPostSync,
}

// helmDeletePolicies maps Helm's hook delete policies to Argo CD's.
var helmDeletePolicies = map[release.HookDeletePolicy]string{
	release.HookBeforeHookCreation: "BeforeHookCreation",
	release.HookSucceeded:          "HookSucceeded",
	release.HookFailed:             "HookFailed",
}

// markHooks annotates the Helm hooks among objects with their ferry phase,
// weight and delete policy (v1alpha1.AnnotationHook and the two after it),
// and drops the hooks that have no sync phase (test, delete and rollback
// hooks). The other hooks are kept, as Argo CD keeps them, with Helm's own
// annotations in place. Objects that carry Argo CD's hook annotation are
// left alone; the apply worker reads both.
func markHooks(objects []Object) ([]Object, error) {
	out := objects[:0]
	for _, o := range objects {
		if !bytes.Contains(o.JSON, []byte(`"`+release.HookAnnotation+`"`)) {
			out = append(out, o)
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(o.JSON, &obj); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Source, err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		ann, _ := meta["annotations"].(map[string]any)
		hooks, _ := ann[release.HookAnnotation].(string)
		if hooks == "" {
			out = append(out, o)
			continue
		}
		if _, ok := ann[v1alpha1.ArgoAnnotationHook]; ok {
			out = append(out, o)
			continue
		}
		if strings.TrimSpace(hooks) == "crd-install" {
			// A Helm 2 hook that Helm 3 and Argo CD treat as a plain object.
			out = append(out, o)
			continue
		}
		var phases []string
		for _, h := range strings.Split(hooks, ",") {
			if p, ok := helmHookPhases[release.HookEvent(strings.TrimSpace(h))]; ok && !slices.Contains(phases, p) {
				phases = append(phases, p)
			}
		}
		if len(phases) == 0 {
			continue
		}
		ann[v1alpha1.AnnotationHook] = strings.Join(phases, ",")
		if w, ok := ann[release.HookWeightAnnotation].(string); ok && strings.TrimSpace(w) != "" {
			ann[v1alpha1.AnnotationHookWeight] = strings.TrimSpace(w)
		}
		// Helm 3 deletes a hook before creating it again unless told
		// otherwise; say so explicitly.
		policies := []string{"BeforeHookCreation"}
		if p, ok := ann[release.HookDeleteAnnotation].(string); ok && strings.TrimSpace(p) != "" {
			policies = policies[:0]
			for _, s := range strings.Split(p, ",") {
				if t, ok := helmDeletePolicies[release.HookDeletePolicy(strings.TrimSpace(s))]; ok && !slices.Contains(policies, t) {
					policies = append(policies, t)
				}
			}
		}
		if len(policies) > 0 {
			ann[v1alpha1.AnnotationHookDeletePolicy] = strings.Join(policies, ",")
		}
		js, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Source, err)
		}
		out = append(out, Object{JSON: js, Source: o.Source})
	}
	return out, nil
}
