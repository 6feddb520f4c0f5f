package render

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

func (r *Renderer) renderDirectory(ctx context.Context, rd *repoReader, dir string, d *v1alpha1.DirectorySource) ([]Object, error) {
	_, span := tracer().Start(ctx, "directory.render", trace.WithAttributes(attribute.String("ferry.path", dir)))
	defer span.End()
	recurse := d != nil && d.Recurse
	files, err := rd.readDir(dir, recurse, directoryFilter(dir, d))
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
