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

// IsProject reports whether a rendered object is a Project, ferry's or Argo
// CD's AppProject.
func IsProject(apiVersion, kind string) bool {
	return (kind == ProjectKind && apiVersion == APIVersion) || (kind == ArgoProjectKind && apiVersion == ArgoAPIVersion)
}

// ChildApplication turns an Application document found in Git (ferry's or
// Argo CD's) into the ferry Application to apply: apiVersion ferry.dev,
// namespace ferry's own, Argo CD's resources finalizer renamed. Spec fields
// ferry does not know are dropped and listed, sorted, in unsupported (and in
// the annotation ferry.dev/unsupported-fields), never lost silently.
func ChildApplication(obj map[string]any, namespace string) (out map[string]any, unsupported []string, err error) {
	out, unsupported, err = convertDocument[ApplicationSpec](obj, namespace, Kind)
	if err != nil {
		return nil, nil, err
	}
	meta := out["metadata"].(map[string]any)
	if fins, ok := obj["metadata"].(map[string]any)["finalizers"].([]any); ok {
		var kept []any
		for _, f := range fins {
			s, _ := f.(string)
			if s == ArgoResourcesFinalizer || strings.HasPrefix(s, ArgoResourcesFinalizer+"/") {
				s = ResourcesFinalizer
			}
			if s != "" && !slices.Contains(kept, any(s)) {
				kept = append(kept, s)
			}
		}
		if len(kept) > 0 {
			meta["finalizers"] = kept
		}
	}
	return out, unsupported, nil
}

// ChildProject turns a Project document found in Git (ferry's, or Argo
// CD's AppProject) into the ferry Project to apply in namespace, ferry's
// own, the same way ChildApplication does: AppProject fields ferry does not
// know (roles, syncWindows ...) are listed in unsupported and in the
// annotation, never dropped silently.
func ChildProject(obj map[string]any, namespace string) (out map[string]any, unsupported []string, err error) {
	return convertDocument[ProjectSpec](obj, namespace, ProjectKind)
}

// convertDocument re-types a document's spec as S, and returns it as a
// ferry object of kind in namespace, with the spec fields S lacks listed.
func convertDocument[S any](obj map[string]any, namespace, kind string) (map[string]any, []string, error) {
	what := strings.ToLower(kind)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		return nil, nil, fmt.Errorf("%s document has no metadata.name", what)
	}
	spec, _ := obj["spec"].(map[string]any)
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", what, name, err)
	}
	var typed S
	if err := json.Unmarshal(raw, &typed); err != nil {
		return nil, nil, fmt.Errorf("%s %s: spec does not match the %s schema: %w", what, name, kind, err)
	}
	known, _ := json.Marshal(typed)
	var knownMap map[string]any
	_ = json.Unmarshal(known, &knownMap)
	unsupported := missingKeys("spec", spec, knownMap)
	sort.Strings(unsupported)

	newMeta := map[string]any{"name": name, "namespace": namespace}
	for _, k := range []string{"labels", "annotations"} {
		if v, ok := meta[k].(map[string]any); ok && len(v) > 0 {
			newMeta[k] = cloneMap(v)
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
		"kind":       kind,
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
