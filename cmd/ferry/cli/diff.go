package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/ferrycd/ferry/apply"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
	"github.com/ferrycd/ferry/render"
)

// diff renders the app at its target revision and compares it with the
// cluster through a server-side dry run; Secret data is masked by apply.
func (r *roles) diff(ctx context.Context, app *v1alpha1.Application) (DiffResponse, error) {
	b, rev, err := r.renderer.Render(ctx, render.Request{App: app})
	if err != nil {
		return DiffResponse{}, fmt.Errorf("render failed: %w", err)
	}
	objs, err := apply.Decode(b.GetObjects())
	if err != nil {
		return DiffResponse{}, err
	}
	if err := r.childApplications(ctx, objs); err != nil {
		return DiffResponse{}, err
	}
	diffs, err := r.applier.Diff(ctx, apply.SyncOptionsFor(app), objs)
	if err != nil {
		return DiffResponse{}, err
	}
	var sb strings.Builder
	for _, d := range diffs {
		sb.WriteString(d.Diff)
	}
	return DiffResponse{Revision: rev, Diff: sb.String()}, nil
}
