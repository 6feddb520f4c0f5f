package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Hook annotations. Helm's hooks are kept, not dropped, as Argo CD keeps
// them: ferry marks each with its sync phase for the apply worker, and
// leaves Helm's own annotations in place. Objects that carry Argo CD's
// argocd.argoproj.io/hook are left alone; the apply worker reads both.
const (
	// AnnotationHook is the sync phase of a hook: PreSync, PostSync or SyncFail.
	AnnotationHook = "ferry.dev/hook"
	// AnnotationHookWeight orders hooks within a phase, lowest first.
	AnnotationHookWeight = "ferry.dev/hook-weight"
	// AnnotationHookDeletePolicy lists when to delete a hook:
	// BeforeHookCreation, HookSucceeded, HookFailed.
	AnnotationHookDeletePolicy = "ferry.dev/hook-delete-policy"

	helmHook             = "helm.sh/hook"
	helmHookWeight       = "helm.sh/hook-weight"
	helmHookDeletePolicy = "helm.sh/hook-delete-policy"
	argoHook             = "argocd.argoproj.io/hook"
)

// Hook phases.
const (
	HookPreSync  = "PreSync"
	HookPostSync = "PostSync"
	HookSyncFail = "SyncFail"
)

// helmHookPhases maps the Helm hooks Argo CD honours to ferry phases. The
// others (delete, rollback and test hooks) have no place in a sync.
var helmHookPhases = map[string]string{
	"pre-install":  HookPreSync,
	"pre-upgrade":  HookPreSync,
	"post-install": HookPostSync,
	"post-upgrade": HookPostSync,
}

var helmDeletePolicies = map[string]string{
	"before-hook-creation": "BeforeHookCreation",
	"hook-succeeded":       "HookSucceeded",
	"hook-failed":          "HookFailed",
}

// markHooks annotates the Helm hooks among objects with their ferry phase,
// weight and delete policy, and drops the hooks that have no sync phase
// (test, delete and rollback hooks).
func markHooks(objects []Object) ([]Object, error) {
	out := objects[:0]
	for _, o := range objects {
		if !bytes.Contains(o.JSON, []byte(`"`+helmHook+`"`)) {
			out = append(out, o)
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(o.JSON, &obj); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Source, err)
		}
		meta, _ := obj["metadata"].(map[string]any)
		ann, _ := meta["annotations"].(map[string]any)
		hooks, _ := ann[helmHook].(string)
		if hooks == "" {
			out = append(out, o)
			continue
		}
		if _, ok := ann[argoHook]; ok {
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
			if p, ok := helmHookPhases[strings.TrimSpace(h)]; ok && !slices.Contains(phases, p) {
				phases = append(phases, p)
			}
		}
		if len(phases) == 0 {
			continue
		}
		ann[AnnotationHook] = strings.Join(phases, ",")
		if w, ok := ann[helmHookWeight].(string); ok && strings.TrimSpace(w) != "" {
			ann[AnnotationHookWeight] = strings.TrimSpace(w)
		}
		// Helm 3 deletes a hook before creating it again unless told
		// otherwise; say so explicitly.
		policies := []string{"BeforeHookCreation"}
		if p, ok := ann[helmHookDeletePolicy].(string); ok && strings.TrimSpace(p) != "" {
			policies = policies[:0]
			for _, s := range strings.Split(p, ",") {
				if t, ok := helmDeletePolicies[strings.TrimSpace(s)]; ok && !slices.Contains(policies, t) {
					policies = append(policies, t)
				}
			}
		}
		if len(policies) > 0 {
			ann[AnnotationHookDeletePolicy] = strings.Join(policies, ",")
		}
		js, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.Source, err)
		}
		out = append(out, Object{JSON: js, Source: o.Source})
	}
	return out, nil
}
