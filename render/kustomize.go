package render

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"sigs.k8s.io/kustomize/api/konfig"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/pkg/util"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// kustomizeLock serialises kustomize builds in the process. kustomize keeps
// global state, such as the OpenAPI schema each build sets from its
// kustomization, so fluxcd/pkg/kustomize guards it with one mutex; this is
// that mutex, as a channel so that waiting for it follows the context. A
// render process renders one app at a time, so there it never spans apps;
// only renders inside ferry (--render-processes=0) share it.
var kustomizeLock = make(chan struct{}, 1)

// kustomizeOptions are `kustomize build`'s defaults, with plugins off:
// only builtin generators and transformers, no exec or container
// functions, no Helm inflation. Loads are restricted to the root of each
// kustomization (LoadRestrictionsRootOnly), and kustomizeFS confines
// every path to the repository.
func kustomizeOptions() *krusty.Options {
	o := krusty.MakeDefaultOptions()
	o.LoadRestrictions = types.LoadRestrictionsRootOnly
	o.PluginConfig = types.DisabledPluginConfig()
	o.PluginConfig.HelmConfig.Enabled = false
	o.PluginConfig.FnpLoadingOptions.EnableExec = false
	o.PluginConfig.FnpLoadingOptions.Network = false
	// The CLI's default when --reorder is not given: the legacy order
	// unless the kustomization sets sortOptions.
	o.Reorder = krusty.ReorderOptionUnspecified
	return o
}

// renderKustomize builds the kustomization in dir, as `kustomize build`
// would, with the Application's kustomize fields applied to it as Argo CD
// applies them with `kustomize edit`.
func (r *Renderer) renderKustomize(ctx context.Context, rd *repoReader, dir string, ks *v1alpha1.KustomizeSource) ([]Object, error) {
	ctx, span := tracer().Start(ctx, "kustomize.build")
	defer span.End()
	span.SetAttributes(attribute.String("ferry.path", dir))
	objs, err := r.kustomizeBuild(ctx, rd, dir, ks)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return objs, err
}

func (r *Renderer) kustomizeBuild(ctx context.Context, rd *repoReader, dir string, ks *v1alpha1.KustomizeSource) ([]Object, error) {
	fsys := newKustomizeFS(rd, r.opts.KustomizeRemoteBases)
	fsys.hosts = r.opts.AllowedHosts
	if ks != nil && kustomizeEdits(ks) {
		if err := overrideKustomization(rd, fsys, dir, ks); err != nil {
			return nil, err
		}
	}

	select {
	case kustomizeLock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("kustomize build of %s: waiting for another build: %w", dir, ctx.Err())
	}
	type result struct {
		yaml []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		defer func() { <-kustomizeLock }()
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("kustomize panicked: %v", p)}
			}
		}()
		m, err := krusty.MakeKustomizer(kustomizeOptions()).Run(fsys, abs(dir))
		if err != nil {
			done <- result{err: err}
			return
		}
		y, err := m.AsYaml()
		done <- result{yaml: y, err: err}
	}()
	var res result
	select {
	case <-ctx.Done():
		// kustomize cannot be interrupted; the build ends in the background
		// and keeps the lock until then.
		return nil, fmt.Errorf("kustomize build of %s: %w", dir, ctx.Err())
	case res = <-done:
	}
	if ferr := fsys.failure(); ferr != nil {
		return nil, ferr
	}
	if res.err != nil {
		return nil, &SourceError{Err: fmt.Errorf("kustomize build of %s: %v", dir, res.err)}
	}
	if int64(len(res.yaml)) > r.opts.MaxOutputBytes {
		return nil, &SourceError{Err: fmt.Errorf("kustomize build of %s renders more than %d bytes: %w", dir, r.opts.MaxOutputBytes, ErrLimitExceeded)}
	}
	return decodeManifests("kustomize build "+dir, res.yaml, true)
}

func kustomizeEdits(ks *v1alpha1.KustomizeSource) bool {
	return len(ks.Images) > 0 || ks.NamePrefix != "" || ks.NameSuffix != "" || len(ks.CommonLabels) > 0 || ks.Namespace != ""
}

// overrideKustomization applies the Application's kustomize fields to the
// kustomization in dir, as Argo CD does by running `kustomize edit set
// nameprefix`, `set namesuffix`, `set image`, `add label --force` and
// `set namespace` there before building. The edited file is served in
// place of the original, for this render only.
func overrideKustomization(rd *repoReader, fsys *kustomizeFS, dir string, ks *v1alpha1.KustomizeSource) error {
	ents, _, err := rd.list(dir)
	if err != nil {
		return err
	}
	file := ""
	for _, name := range konfig.RecognizedKustomizationFileNames() {
		for _, e := range ents {
			if e.name == name {
				file = joinRepo(dir, name)
			}
		}
	}
	if file == "" {
		return &SourceError{Err: fmt.Errorf("%s has no kustomization file for the app's kustomize fields to apply to", dir)}
	}
	data, n, err := rd.readFile(file)
	if err != nil {
		return err
	}
	var k types.Kustomization
	if err := k.Unmarshal(data); err != nil {
		return &SourceError{Err: fmt.Errorf("%s: %v", n.path, err)}
	}
	if ks.NamePrefix != "" {
		k.NamePrefix = ks.NamePrefix
	}
	if ks.NameSuffix != "" {
		k.NameSuffix = ks.NameSuffix
	}
	if len(ks.Images) > 0 {
		images, err := setImages(k.Images, ks.Images)
		if err != nil {
			return err
		}
		k.Images = images
	}
	if len(ks.CommonLabels) > 0 {
		if k.CommonLabels == nil {
			k.CommonLabels = map[string]string{}
		}
		for key, v := range ks.CommonLabels {
			k.CommonLabels[key] = v
		}
	}
	if ks.Namespace != "" {
		k.Namespace = ks.Namespace
	}
	out, err := yaml.Marshal(&k)
	if err != nil {
		return fmt.Errorf("writing the edited %s: %w", n.path, err)
	}
	fsys.overrides[n.path] = out
	return nil
}

// setImages merges image overrides into a kustomization's images as
// `kustomize edit set image` does: an entry for the same image is replaced
// (keeping fields given as "*"), others are kept, and the list is sorted
// by name.
func setImages(existing []types.Image, args []string) ([]types.Image, error) {
	byName := map[string]types.Image{}
	for _, a := range args {
		img, err := parseImageArg(a)
		if err != nil {
			return nil, err
		}
		byName[img.Name] = img
	}
	const keep = "*"
	for _, im := range existing {
		arg, ok := byName[im.Name]
		if !ok {
			byName[im.Name] = im
			continue
		}
		if arg.NewName == keep {
			arg.NewName = im.NewName
		}
		if arg.NewTag == keep {
			arg.NewTag = im.NewTag
		}
		if arg.Digest == keep {
			arg.Digest = im.Digest
		}
		byName[im.Name] = arg
	}
	out := make([]types.Image, 0, len(byName))
	for _, im := range byName {
		for _, f := range []*string{&im.NewName, &im.NewTag, &im.Digest} {
			if *f == keep {
				*f = ""
			}
		}
		out = append(out, im)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// parseImageArg parses one `kustomize edit set image` argument:
// name[=newName][:tag][@digest].
func parseImageArg(arg string) (types.Image, error) {
	key, value, hasKey := strings.Cut(arg, "=")
	if !hasKey {
		key, value = "", arg
	}
	name, tag, digest := util.SplitImageName(value)
	if name == arg {
		return types.Image{}, &SourceError{Err: fmt.Errorf("kustomize image %q: want name=newName:tag, name:tag or name@digest", arg)}
	}
	img := types.Image{NewTag: tag, Digest: digest}
	if key == "" {
		img.Name = name
	} else {
		img.Name, img.NewName = key, name
	}
	return img, nil
}
