package v1alpha1

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ArgoAPIVersion is the apiVersion of Argo CD Applications.
const ArgoAPIVersion = "argoproj.io/v1alpha1"

// IsApplication reports whether a rendered object is an Application, ferry's
// or Argo CD's.
func IsApplication(apiVersion, kind string) bool {
	return kind == Kind && (apiVersion == APIVersion || apiVersion == ArgoAPIVersion)
}

// ChildApplication turns an Application document found in Git (ferry's or
// Argo CD's) into the ferry Application to apply: apiVersion ferry.dev,
// namespace ferry's own, Argo CD's resources finalizer renamed. Spec fields
// ferry does not know are dropped and listed, sorted, in unsupported (and in
// the annotation ferry.dev/unsupported-fields), never lost silently.
func ChildApplication(obj map[string]any, namespace string) (out map[string]any, unsupported []string, err error) {
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		return nil, nil, fmt.Errorf("application document has no metadata.name")
	}
	spec, _ := obj["spec"].(map[string]any)
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("application %s: %w", name, err)
	}
	var typed ApplicationSpec
	if err := json.Unmarshal(raw, &typed); err != nil {
		return nil, nil, fmt.Errorf("application %s: spec does not match the Application schema: %w", name, err)
	}
	known, _ := json.Marshal(typed)
	var knownMap map[string]any
	_ = json.Unmarshal(known, &knownMap)
	unsupported = missingKeys("spec", spec, knownMap)
	sort.Strings(unsupported)

	newMeta := map[string]any{"name": name, "namespace": namespace}
	for _, k := range []string{"labels", "annotations"} {
		if v, ok := meta[k].(map[string]any); ok && len(v) > 0 {
			newMeta[k] = cloneMap(v)
		}
	}
	if fins, ok := meta["finalizers"].([]any); ok {
		var out []any
		for _, f := range fins {
			s, _ := f.(string)
			if s == ArgoResourcesFinalizer || strings.HasPrefix(s, ArgoResourcesFinalizer+"/") {
				s = ResourcesFinalizer
			}
			if s != "" && !slices.Contains(out, any(s)) {
				out = append(out, s)
			}
		}
		if len(out) > 0 {
			newMeta["finalizers"] = out
		}
	}
	ann, _ := newMeta["annotations"].(map[string]any)
	if len(unsupported) > 0 {
		if ann == nil {
			ann = map[string]any{}
			newMeta["annotations"] = ann
		}
		ann[AnnotationUnsupported] = strings.Join(unsupported, ",")
	} else if ann != nil {
		delete(ann, AnnotationUnsupported)
	}
	return map[string]any{
		"apiVersion": APIVersion,
		"kind":       Kind,
		"metadata":   newMeta,
		"spec":       knownMap,
	}, unsupported, nil
}

// missingKeys lists, as dotted paths, the keys of have that want lacks.
func missingKeys(prefix string, have, want map[string]any) []string {
	var out []string
	for k, v := range have {
		p := prefix + "." + k
		w, ok := want[k]
		if !ok {
			if v != nil {
				out = append(out, p)
			}
			continue
		}
		switch hv := v.(type) {
		case map[string]any:
			wm, _ := w.(map[string]any)
			if isFreeForm(p) {
				continue
			}
			out = append(out, missingKeys(p, hv, wm)...)
		case []any:
			wl, _ := w.([]any)
			for i, item := range hv {
				im, ok := item.(map[string]any)
				if !ok || i >= len(wl) {
					continue
				}
				wim, _ := wl[i].(map[string]any)
				out = append(out, missingKeys(fmt.Sprintf("%s[%d]", p, i), im, wim)...)
			}
		}
	}
	return out
}

// isFreeForm names the maps whose keys are data, not schema.
func isFreeForm(path string) bool {
	return strings.HasSuffix(path, ".valuesObject") || strings.HasSuffix(path, ".commonLabels")
}

func cloneMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
