package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/ignore"
	"helm.sh/helm/v3/pkg/release"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// ErrOutsideChart is wrapped when a chart's template reads a file outside
// the chart through .Files.
var ErrOutsideChart = errors.New("path leaves the chart")

// maxChartNesting bounds file:// dependencies of dependencies, so a cycle
// ends.
const maxChartNesting = 16

// helmJob renders one Helm source with `helm template` semantics.
type helmJob struct {
	r    *Renderer
	app  *v1alpha1.Application
	src  v1alpha1.ApplicationSource
	caps *Capabilities

	// rd reads the source's repository and chartDir is the chart in it; rd
	// is nil for a chart from a Helm repository or OCI registry.
	rd       *repoReader
	chartDir string
	// refs are the other sources' repositories by their ref name, for
	// $ref/... value files.
	refs map[string]*repoReader
	// in records the chart versions the render used.
	in *inputs
}

func (j *helmJob) opts() v1alpha1.HelmSource {
	if j.src.Helm == nil {
		return v1alpha1.HelmSource{}
	}
	return *j.src.Helm
}

func (j *helmJob) render(ctx context.Context, remote *chartRef) ([]Object, error) {
	ctx, span := tracer().Start(ctx, "helm.template")
	defer span.End()
	span.SetAttributes(attribute.String("ferry.path", j.chartDir), attribute.String("ferry.chart", j.src.Chart))
	objs, err := j.renderChart(ctx, remote)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return objs, err
}

func (j *helmJob) renderChart(ctx context.Context, remote *chartRef) ([]Object, error) {
	var ch *chart.Chart
	var err error
	if remote != nil {
		ch, err = j.r.charts.load(ctx, *remote)
		if err == nil {
			err = j.resolveDependencies(ctx, ch, nil, "", 0)
		}
	} else {
		ch, err = j.loadGitChart(ctx, j.chartDir, 0)
	}
	if err != nil {
		return nil, err
	}
	if err := action.CheckDependencies(ch, ch.Metadata.Dependencies); err != nil {
		return nil, &SourceError{Err: fmt.Errorf("chart %s: %v", ch.Name(), err)}
	}
	switch ch.Metadata.Type {
	case "", "application":
	default:
		return nil, &SourceError{Err: fmt.Errorf("chart %s is a %s chart, which cannot be installed", ch.Name(), ch.Metadata.Type)}
	}
	if err := checkFilesAccess(ch, ch.Name()); err != nil {
		return nil, err
	}
	vals, err := j.values(ch)
	if err != nil {
		return nil, err
	}
	text, err := j.template(ctx, ch, vals)
	if err != nil {
		return nil, err
	}
	if int64(len(text)) > j.r.opts.MaxOutputBytes {
		return nil, &SourceError{Err: fmt.Errorf("chart %s renders more than %d bytes: %w", ch.Name(), j.r.opts.MaxOutputBytes, ErrLimitExceeded)}
	}
	return decodeHelmOutput(text)
}

// fileInfo is the little of os.FileInfo that .helmignore rules look at.
type fileInfo struct {
	name string
	dir  bool
}

func (f fileInfo) Name() string { return f.name }
func (f fileInfo) Size() int64  { return 0 }
func (f fileInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }

var utf8bom = []byte{0xEF, 0xBB, 0xBF}

// loadGitChart loads the chart in directory dir of the repository, as
// Helm's loader.LoadDir does on disk: .helmignore applies, symbolic links
// are followed (inside the repository only), and the charts/ folder holds
// subcharts. Dependencies missing from charts/ are then resolved as
// `helm dependency build` would.
func (j *helmJob) loadGitChart(ctx context.Context, dir string, depth int) (*chart.Chart, error) {
	rd := j.rd
	rules := ignore.Empty()
	data, _, err := rd.readFile(joinRepo(dir, ignore.HelmIgnore))
	switch {
	case err == nil:
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s: %v", joinRepo(dir, ignore.HelmIgnore), err)}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, err
	}
	rules.AddDefaults()
	walked, root, err := rd.walk(dir, walkOptions{
		recurse:        true,
		followDirLinks: true,
		skip: func(rel string, isDir bool) bool {
			return rules.Ignore(rel, fileInfo{name: path.Base(rel), dir: isDir})
		},
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &SourceError{Err: fmt.Errorf("chart path %q does not exist at commit %s", dir, rd.trees.snap.Commit.String()[:12])}
	}
	if err != nil {
		return nil, err
	}
	files := make([]*loader.BufferedFile, 0, len(walked))
	for _, w := range walked {
		data, err := rd.readBlob(w.node)
		if err != nil {
			return nil, err
		}
		if int64(len(data)) > loader.MaxDecompressedFileSize {
			return nil, &SourceError{Err: fmt.Errorf("chart file %s is larger than Helm's limit of %d bytes", joinRepo(root.path, w.rel), loader.MaxDecompressedFileSize)}
		}
		files = append(files, &loader.BufferedFile{Name: w.rel, Data: bytes.TrimPrefix(data, utf8bom)})
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("loading chart at %s: %v", root.path, err)}
	}
	if err := j.resolveDependencies(ctx, ch, rd, root.path, depth); err != nil {
		return nil, err
	}
	return ch, nil
}

// resolveDependencies adds the dependencies that Chart.yaml lists and
// charts/ lacks, as `helm dependency build` would: file:// ones from the
// repository (dir is the chart's directory there), others from their Helm
// repository or OCI registry at the Chart.lock version, or the newest that
// the Chart.yaml range allows.
func (j *helmJob) resolveDependencies(ctx context.Context, ch *chart.Chart, rd *repoReader, dir string, depth int) error {
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, dep := range ch.Metadata.Dependencies {
		if have[dep.Name] {
			continue
		}
		have[dep.Name] = true
		repoURL := strings.TrimSpace(dep.Repository)
		var sub *chart.Chart
		switch {
		case strings.HasPrefix(repoURL, "file://"):
			if rd == nil {
				return &SourceError{Err: fmt.Errorf("chart %s: dependency %s is at %s, which a chart from a chart repository cannot reach", ch.Name(), dep.Name, redactURL(repoURL))}
			}
			if depth >= maxChartNesting {
				return &SourceError{Err: fmt.Errorf("chart %s: file:// dependencies nest deeper than %d", ch.Name(), maxChartNesting)}
			}
			rel := strings.TrimPrefix(repoURL, "file://")
			p := path.Join(dir, rel)
			if path.IsAbs(rel) || p == ".." || strings.HasPrefix(p, "../") {
				return &SourceError{Err: fmt.Errorf("%s: dependency %s at %s: %w", joinRepo(dir, "Chart.yaml"), dep.Name, repoURL, ErrOutsideRepository)}
			}
			var err error
			if sub, err = j.loadGitChart(ctx, p, depth+1); err != nil {
				return fmt.Errorf("%s: dependency %s: %w", joinRepo(dir, "Chart.yaml"), dep.Name, err)
			}
			if dep.Version != "" {
				c, cerr := semver.NewConstraint(dep.Version)
				v, verr := semver.NewVersion(sub.Metadata.Version)
				if cerr != nil || verr != nil || !c.Check(v) {
					return &SourceError{Err: fmt.Errorf("%s: dependency %s wants version %q, but %s holds %s", joinRepo(dir, "Chart.yaml"), dep.Name, dep.Version, p, sub.Metadata.Version)}
				}
			}
		case strings.HasPrefix(repoURL, "http://"), strings.HasPrefix(repoURL, "https://"), strings.HasPrefix(repoURL, "oci://"):
			version := dep.Version
			if ch.Lock != nil {
				for _, l := range ch.Lock.Dependencies {
					if l.Name == dep.Name && l.Repository == dep.Repository {
						version = l.Version
					}
				}
			}
			ref, err := j.r.charts.resolve(ctx, repoURL, dep.Name, version)
			if err != nil {
				return fmt.Errorf("chart %s: dependency %s: %w", ch.Name(), dep.Name, err)
			}
			j.in.extraRecord(chartFactKey(repoURL, dep.Name, version), chartFactValue(ref))
			if sub, err = j.r.charts.load(ctx, ref); err != nil {
				return fmt.Errorf("chart %s: dependency %s: %w", ch.Name(), dep.Name, err)
			}
		case repoURL == "":
			// Left for CheckDependencies to report as missing from charts/.
			continue
		default:
			return &SourceError{Err: fmt.Errorf("chart %s: dependency %s names repository %q; ferry has no repository list, so give its URL", ch.Name(), dep.Name, redactURL(repoURL))}
		}
		ch.AddDependency(sub)
	}
	return nil
}

// filesCall finds a template reading a literal path through .Files.
var filesCall = regexp.MustCompile(`\.Files\.(Get|GetBytes|Lines|Glob)\s+(?:"((?:[^"\\]|\\.)*)"|` + "`([^`]*)`" + `)`)

// checkFilesAccess refuses templates that name, through .Files, a path
// outside their chart. Helm would only read nothing there, since .Files
// holds the chart's own files; ferry makes the mistake, or the attempt, an
// error with the template and line.
func checkFilesAccess(ch *chart.Chart, chartPath string) error {
	for _, t := range ch.Templates {
		for _, m := range filesCall.FindAllSubmatchIndex(t.Data, -1) {
			arg := ""
			if m[4] >= 0 {
				arg = string(t.Data[m[4]:m[5]])
			} else if m[6] >= 0 {
				arg = string(t.Data[m[6]:m[7]])
			}
			if clean := path.Clean(arg); path.IsAbs(arg) || clean == ".." || strings.HasPrefix(clean, "../") {
				line := 1 + bytes.Count(t.Data[:m[0]], []byte("\n"))
				return &SourceError{Err: fmt.Errorf("%s/%s:%d: .Files.%s %q: %w", chartPath, t.Name, line, t.Data[m[2]:m[3]], arg, ErrOutsideChart)}
			}
		}
	}
	for _, d := range ch.Dependencies() {
		if err := checkFilesAccess(d, chartPath+"/charts/"+d.Name()); err != nil {
			return err
		}
	}
	return nil
}

// template runs Helm's install action in client-only dry-run mode, which
// is what `helm template` does, and returns its output: the manifests
// (CRDs first), then the hooks.
func (j *helmJob) template(ctx context.Context, ch *chart.Chart, vals map[string]any) (string, error) {
	o := j.opts()
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	inst := action.NewInstall(cfg)
	inst.DryRun = true
	inst.DryRunOption = "client"
	inst.ClientOnly = true
	inst.Replace = true
	inst.IncludeCRDs = true
	inst.ReleaseName = o.ReleaseName
	if inst.ReleaseName == "" {
		inst.ReleaseName = j.app.Name
	}
	inst.Namespace = j.app.Spec.Destination.Namespace
	if inst.Namespace == "" {
		inst.Namespace = "default"
	}
	kubeVersion := defaultKubeVersion
	if j.caps != nil {
		if j.caps.KubeVersion != "" {
			kubeVersion = j.caps.KubeVersion
		}
		inst.APIVersions = chartutil.VersionSet(j.caps.APIVersions)
	}
	if kubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(kubeVersion)
		if err != nil {
			return "", fmt.Errorf("cluster version %q: %w", kubeVersion, err)
		}
		inst.KubeVersion = kv
	}

	type result struct {
		rel *release.Release
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("helm panicked: %v", p)}
			}
		}()
		rel, err := inst.RunWithContext(ctx, ch, vals)
		done <- result{rel: rel, err: err}
	}()
	var res result
	select {
	case <-ctx.Done():
		// Helm's template engine cannot be interrupted; it finishes in the
		// background and its result is dropped.
		return "", fmt.Errorf("helm template of chart %s: %w", ch.Name(), ctx.Err())
	case res = <-done:
	}
	if res.err != nil {
		return "", &SourceError{Err: fmt.Errorf("helm template of chart %s: %v", ch.Name(), res.err)}
	}
	var b strings.Builder
	b.WriteString(strings.TrimSpace(res.rel.Manifest))
	b.WriteByte('\n')
	for _, h := range res.rel.Hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String(), nil
}

// decodeHelmOutput decodes `helm template` output, naming each object by
// the template that rendered it.
func decodeHelmOutput(text string) ([]Object, error) {
	docs, err := readDocuments("helm template", []byte(text))
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, doc := range docs {
		file := "helm template"
		for _, line := range strings.SplitN(string(doc.text), "\n", 4) {
			if src, ok := strings.CutPrefix(line, "# Source: "); ok {
				file = strings.TrimSpace(src)
				break
			}
		}
		objs, err := decodeDocument(file, document{text: doc.text, line: 1}, false)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
