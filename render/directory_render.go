package render

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func (r *Renderer) renderDirectory(ctx context.Context, rd *repoReader, dir string, d *v1alpha1.DirectorySource) ([]Object, error) {
	_, span := tracer().Start(ctx, "directory.render", trace.WithAttributes(attribute.String("ferry.path", dir)))
	defer span.End()
	if d != nil && len(d.Jsonnet) > 0 {
		err := &SourceError{Err: fmt.Errorf("directory.jsonnet is set, but ferry does not render jsonnet; render it to YAML (in CI, say) and commit that")}
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	recurse := d != nil && d.Recurse
	keep := directoryFilter(dir, d)
	var jsonnet []string
	files, err := rd.readDir(dir, recurse, func(p string) bool {
		// Argo CD renders the .jsonnet files of a directory source; ferry
		// would skip them without a word.
		if strings.HasSuffix(p, ".jsonnet") && directoryGlobs(dir, d, p) {
			jsonnet = append(jsonnet, p)
		}
		return keep(p)
	})
	if err == nil && len(jsonnet) > 0 {
		err = &SourceError{Err: fmt.Errorf("%s holds jsonnet (%s), which Argo CD renders and ferry does not; render it to YAML (in CI, say) and commit that, or exclude it with directory.exclude", dir, strings.Join(jsonnet, ", "))}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	var out []Object
	for _, f := range files {
		objs, err := DecodeManifests(f.Path, f.Data)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
