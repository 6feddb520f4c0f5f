package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// childApplications rewrites the Application and Project documents among
// objects (ferry's, or Argo CD's Application and AppProject) into ferry
// Applications and Projects in namespace, ferry's own, so that app of apps
// works and no argoproj.io object reaches the cluster. Other objects pass
// through untouched.
func childApplications(ctx context.Context, objects []Object, namespace string, log *slog.Logger) ([]Object, error) {
	for i, o := range objects {
		// Cheap test first: most objects are neither.
		if !bytes.Contains(o.JSON, []byte(`"Application"`)) && !bytes.Contains(o.JSON, []byte(`Project"`)) {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(o.JSON, &obj); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %v", o.Source, err)}
		}
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		convert := v1alpha1.ChildApplication
		switch {
		case v1alpha1.IsApplication(apiVersion, kind):
		case v1alpha1.IsProject(apiVersion, kind):
			convert = v1alpha1.ChildProject
		default:
			continue
		}
		child, unsupported, err := convert(obj, namespace)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %w", o.Source, err)}
		}
		if len(unsupported) > 0 {
			log.InfoContext(ctx, "document has fields ferry does not support", "kind", kind, "name", namespace+"/"+child["metadata"].(map[string]any)["name"].(string), "fields", unsupported)
		}
		js, err := json.Marshal(child)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %v", o.Source, err)}
		}
		objects[i].JSON = js
	}
	return objects, nil
}
