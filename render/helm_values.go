package render

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
)

// values merges the user-supplied values of a Helm source the way Argo CD
// hands them to `helm template`: every value file in order (-f), then
// valuesObject or, when that is unset, values (one more -f; Argo CD
// ignores values when valuesObject is set), then the parameters (--set,
// then --set-string for those with forceString). Helm itself puts the
// chart's values.yaml beneath all of them. So the precedence is
// parameters > valuesObject > values > valueFiles > chart defaults.
func (j *helmJob) values(ch *chart.Chart) (map[string]any, error) {
	o := j.opts()
	base := map[string]any{}
	for _, vf := range o.ValueFiles {
		data, where, err := j.valueFile(ch, vf)
		if err != nil {
			return nil, err
		}
		cur, err := chartutil.ReadValues(data)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("value file %s:%d: invalid YAML: %v", where, 1+docErrLine(err), err)}
		}
		base = mergeValues(base, cur)
	}
	switch {
	case o.ValuesObject != nil:
		// A JSON round trip copies the spec's map, which Helm would
		// otherwise share with the next render.
		js, err := json.Marshal(o.ValuesObject)
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("helm.valuesObject: %v", err)}
		}
		cur := map[string]any{}
		if err := json.Unmarshal(js, &cur); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("helm.valuesObject: %v", err)}
		}
		base = mergeValues(base, cur)
	case strings.TrimSpace(o.Values) != "":
		cur, err := chartutil.ReadValues([]byte(o.Values))
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("helm.values:%d: invalid YAML: %v", 1+docErrLine(err), err)}
		}
		base = mergeValues(base, cur)
	}
	// Argo CD keys parameters by name, so a later one with the same name
	// replaces an earlier one.
	type param struct {
		name, value string
		str         bool
	}
	var params []param
	seen := map[string]int{}
	for _, p := range o.Parameters {
		if i, ok := seen[p.Name]; ok {
			params[i] = param{p.Name, p.Value, p.ForceString}
			continue
		}
		seen[p.Name] = len(params)
		params = append(params, param{p.Name, p.Value, p.ForceString})
	}
	for _, str := range []bool{false, true} {
		for _, p := range params {
			if p.str != str {
				continue
			}
			set := p.name + "=" + escapeSetValue(p.value)
			var err error
			if str {
				err = strvals.ParseIntoString(set, base)
			} else {
				err = strvals.ParseInto(set, base)
			}
			if err != nil {
				return nil, &SourceError{Err: fmt.Errorf("helm parameter %s: %v", p.name, err)}
			}
		}
	}
	return base, nil
}

// escapeSetValue escapes the commas of a parameter value, so that it stays
// one value, unless the value is a {a,b} list, as Argo CD does.
func escapeSetValue(v string) string {
	if strings.HasPrefix(v, "{") && strings.HasSuffix(v, "}") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == ',' && (i == 0 || v[i-1] != '\\') {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// valueFile reads one entry of helm.valueFiles:
//   - $ref/path reads path from the repository of the source whose ref is
//     "ref", relative to its root;
//   - /path reads path relative to the root of this source's repository;
//   - anything else is relative to the chart: its directory in git, or the
//     chart archive for a chart from a Helm repository.
//
// Every path stays inside its repository (or chart), symbolic links
// included. It returns the bytes and a name for errors.
func (j *helmJob) valueFile(ch *chart.Chart, vf string) ([]byte, string, error) {
	vf = strings.TrimSpace(vf)
	if u, err := url.Parse(vf); err == nil && u.Scheme != "" && len(u.Scheme) > 1 {
		return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: remote value files are not supported; keep it in git and use $ref", redactURL(vf))}
	}
	if strings.HasPrefix(vf, "$") {
		name, rest, _ := strings.Cut(vf[1:], "/")
		rd, ok := j.refs[name]
		if !ok {
			return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: no source of the app has ref %q", vf, name)}
		}
		return readValueFile(rd, vf, path.Clean(rest))
	}
	if j.rd == nil {
		// A chart from a chart repository: the file is inside the archive.
		p := path.Clean(vf)
		if path.IsAbs(vf) || p == ".." || strings.HasPrefix(p, "../") {
			return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: %w", vf, ErrOutsideChart)}
		}
		for _, f := range ch.Raw {
			if f.Name == p {
				return f.Data, vf, nil
			}
		}
		return nil, vf, &SourceError{Err: fmt.Errorf("value file %s does not exist in chart %s", vf, ch.Name())}
	}
	if strings.HasPrefix(vf, "/") {
		return readValueFile(j.rd, vf, path.Clean(strings.TrimPrefix(vf, "/")))
	}
	return readValueFile(j.rd, vf, path.Join(j.chartDir, vf))
}

// readValueFile reads p, a cleaned path relative to the root of rd's
// repository that may climb out of it with "..", which is refused.
func readValueFile(rd *repoReader, vf, p string) ([]byte, string, error) {
	if p == ".." || strings.HasPrefix(p, "../") {
		return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: %w", vf, ErrOutsideRepository)}
	}
	if p == "." {
		p = ""
	}
	data, n, err := rd.readFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: %s does not exist at commit %s of %s", vf, p, rd.trees.snap.Commit.String()[:12], rd.what)}
	case err != nil:
		var se *SourceError
		if errors.As(err, &se) {
			return nil, vf, &SourceError{Err: fmt.Errorf("value file %s: %w", vf, se.Err), Transient: se.Transient}
		}
		return nil, vf, fmt.Errorf("value file %s: %w", vf, err)
	}
	return data, n.path, nil
}

// mergeValues merges the values of one more -f file over base, as helm's
// -f does: the later file wins key by key, recursing into maps, and its
// nulls are kept so that they can remove a chart default. The CLI merges
// with a function of its own, unexported; chartutil.MergeTables gives the
// same result (CoalesceTables would not: it drops a null that overrides an
// earlier value). MergeTables logs a warning where a map and a scalar
// meet, and changes both maps, which are this render's own.
func mergeValues(base, later map[string]any) map[string]any {
	return chartutil.MergeTables(later, base)
}
