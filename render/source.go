package render

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// describeSource names a source in errors.
func describeSource(src v1alpha1.ApplicationSource) string {
	switch {
	case src.Chart != "":
		return fmt.Sprintf("chart %s %s from %s", src.Chart, src.TargetRevision, redactURL(src.RepoURL))
	case src.Ref != "" && src.Path == "":
		return fmt.Sprintf("ref %s: %s", src.Ref, redactURL(src.RepoURL))
	}
	p := src.Path
	if p == "" {
		p = "."
	}
	return fmt.Sprintf("%s path %s", redactURL(src.RepoURL), p)
}

func (r *Renderer) capabilities(ctx context.Context, dest v1alpha1.Destination) (*Capabilities, error) {
	if r.opts.Capabilities == nil {
		return nil, nil
	}
	caps, err := r.opts.Capabilities.Capabilities(ctx, dest)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's capabilities: %w", err)
	}
	return caps, nil
}

// sourceKind is how a source is rendered.
type sourceKind int

const (
	kindDirectory sourceKind = iota
	kindKustomize
	kindHelm
)

// chooseKind picks the renderer as Argo CD does: explicit helm, kustomize
// or directory fields decide; otherwise a kustomization file makes it
// Kustomize and a Chart.yaml makes it Helm (Argo CD's discovery lets the
// kustomization win when a folder holds both); anything else is a
// directory of manifests.
func chooseKind(rd *repoReader, dir string, src v1alpha1.ApplicationSource) (sourceKind, error) {
	var explicit []sourceKind
	if src.Helm != nil {
		explicit = append(explicit, kindHelm)
	}
	if src.Kustomize != nil {
		explicit = append(explicit, kindKustomize)
	}
	if src.Directory != nil {
		explicit = append(explicit, kindDirectory)
	}
	switch len(explicit) {
	case 0:
	case 1:
		return explicit[0], nil
	default:
		return 0, &SourceError{Err: errors.New("the source sets more than one of helm, kustomize and directory")}
	}
	ents, _, err := rd.list(dir)
	if err != nil {
		return 0, err
	}
	kind := kindDirectory
	for _, e := range ents {
		switch e.name {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
			return kindKustomize, nil
		case "Chart.yaml":
			kind = kindHelm
		}
	}
	return kind, nil
}

// renderSource renders one source. It returns the chart version for a
// chart from a chart repository.
func (r *Renderer) renderSource(ctx context.Context, app *v1alpha1.Application, i int, src v1alpha1.ApplicationSource,
	rd *repoReader, refs map[string]*repoReader, in *inputs) ([]Object, string, error) {
	if src.Chart != "" {
		ref, err := r.charts.resolve(ctx, src.RepoURL, src.Chart, src.TargetRevision)
		if err != nil {
			return nil, "", err
		}
		in.extraRecord(chartFactKey(src.RepoURL, src.Chart, src.TargetRevision), chartFactValue(ref))
		caps, err := r.helmCapabilities(ctx, app, in)
		if err != nil {
			return nil, "", err
		}
		job := &helmJob{r: r, app: app, src: src, caps: caps, refs: refs, in: in}
		objs, err := job.render(ctx, &ref)
		return objs, ref.version, err
	}
	if src.Ref != "" && src.Path == "" {
		// A ref source gives files to the others, no manifests.
		return nil, "", nil
	}
	clean, err := ConfinePath(src.Path)
	if err != nil {
		return nil, "", err
	}
	n, err := rd.stat(clean)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", &SourceError{Err: fmt.Errorf("path %q does not exist at commit %s", clean, rd.trees.snap.Commit.String()[:12])}
	}
	if err != nil {
		return nil, "", err
	}
	if !n.isDir() {
		return nil, "", &SourceError{Err: fmt.Errorf("path %q is a file; a source path is a directory", clean)}
	}
	kind, err := chooseKind(rd, n.path, src)
	if err != nil {
		return nil, "", err
	}
	switch kind {
	case kindKustomize:
		objs, err := r.renderKustomize(ctx, rd, n.path, src.Kustomize)
		return objs, "", err
	case kindHelm:
		caps, err := r.helmCapabilities(ctx, app, in)
		if err != nil {
			return nil, "", err
		}
		job := &helmJob{r: r, app: app, src: src, caps: caps, rd: rd, chartDir: n.path, refs: refs, in: in}
		objs, err := job.render(ctx, nil)
		return objs, "", err
	}
	if src.Directory == nil || !src.Directory.Recurse {
		in.mu.Lock()
		in.shallow[i] = true
		in.mu.Unlock()
	}
	objs, err := r.renderDirectory(ctx, rd, n.path, src.Directory)
	return objs, "", err
}

// helmCapabilities returns the cluster's capabilities and records them as
// an input of the render.
func (r *Renderer) helmCapabilities(ctx context.Context, app *v1alpha1.Application, in *inputs) (*Capabilities, error) {
	caps, err := r.capabilities(ctx, app.Spec.Destination)
	if err != nil || r.opts.Capabilities == nil {
		return caps, err
	}
	in.extraRecord(factCapabilities, caps.fingerprint())
	return caps, nil
}
