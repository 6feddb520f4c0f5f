package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// childApplications rewrites the Application documents among objects
// (ferry's or Argo CD's) into ferry Applications in namespace, ferry's own,
// so that app of apps works and no argoproj.io object reaches the cluster.
// Other objects pass through untouched.
func childApplications(ctx context.Context, objects []Object, namespace string, log *slog.Logger) ([]Object, error) {
	for i, o := range objects {
		// Cheap test first: most objects are not Applications.
		if !bytes.Contains(o.JSON, []byte(`"Application"`)) {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(o.JSON, &obj); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %v", o.Source, err)}
		}
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		if !v1alpha1.IsApplication(apiVersion, kind) {
			continue
		}
		child, unsupported, err := v1alpha1.ChildApplication(obj, namespace)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %w", o.Source, err)}
		}
		if len(unsupported) > 0 {
			log.InfoContext(ctx, "child application has fields ferry does not support", "app", namespace+"/"+child["metadata"].(map[string]any)["name"].(string), "fields", unsupported)
		}
		js, err := json.Marshal(child)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %v", o.Source, err)}
		}
		objects[i].JSON = js
	}
	return objects, nil
}
