package render

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// Object is one rendered manifest in canonical JSON, with where it came from.
type Object struct {
	JSON   []byte
	Source string // file:line
}

func manifestFile(p string) bool {
	switch strings.ToLower(path.Ext(p)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// directoryFilter returns the file filter of a directory source: manifest
// files, narrowed by the include and exclude globs (matched against the path
// relative to the source path and against the base name).
func directoryFilter(root string, d *v1alpha1.DirectorySource) func(string) bool {
	return func(p string) bool {
		if !manifestFile(p) {
			return false
		}
		if d == nil {
			return true
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if d.Include != "" && !globAny(d.Include, rel) {
			return false
		}
		if d.Exclude != "" && globAny(d.Exclude, rel) {
			return false
		}
		return true
	}
}

// globAny matches rel against a glob or a {a,b} list of globs.
func globAny(pattern, rel string) bool {
	pattern = strings.TrimSpace(pattern)
	pats := []string{pattern}
	if strings.HasPrefix(pattern, "{") && strings.HasSuffix(pattern, "}") {
		pats = strings.Split(pattern[1:len(pattern)-1], ",")
	}
	for _, p := range pats {
		p = strings.TrimSpace(p)
		if ok, _ := path.Match(p, rel); ok {
			return true
		}
		if ok, _ := path.Match(p, path.Base(rel)); ok {
			return true
		}
	}
	return false
}

// DecodeManifests splits a YAML or JSON file into Kubernetes objects. Empty
// documents are skipped; a document that is not valid YAML, or not an
// object with apiVersion, kind and metadata.name, is an error naming the
// file and the line the document starts on.
func DecodeManifests(file string, data []byte) ([]Object, error) {
	var out []Object
	for _, doc := range splitDocuments(data) {
		objs, err := decodeDocument(file, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// decodeDocument decodes one YAML document of file into objects: none for
// an empty document, several for a List.
func decodeDocument(file string, doc document) ([]Object, error) {
	if len(bytes.TrimSpace(doc.text)) == 0 {
		return nil, nil
	}
	js, err := yaml.YAMLToJSON(doc.text)
	if err != nil {
		return nil, &SourceError{Err: fmt.Errorf("%s:%d: invalid YAML: %v", file, doc.line+docErrLine(err), err)}
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil {
		return nil, &SourceError{Err: fmt.Errorf("%s:%d: a manifest must be a mapping: %v", file, doc.line, err)}
	}
	// A List wraps objects; unwrap it as kubectl does.
	if kind, _ := obj["kind"].(string); strings.HasSuffix(kind, "List") && obj["items"] != nil {
		items, _ := obj["items"].([]any)
		out := make([]Object, 0, len(items))
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				return nil, &SourceError{Err: fmt.Errorf("%s:%d: item %d of %s is not an object", file, doc.line, i, kind)}
			}
			o, err := canonical(m, file, doc.line)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, nil
	}
	o, err := canonical(obj, file, doc.line)
	if err != nil {
		return nil, err
	}
	return []Object{o}, nil
}

func canonical(obj map[string]any, file string, line int) (Object, error) {
	where := fmt.Sprintf("%s:%d", file, line)
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if apiVersion == "" || kind == "" {
		return Object{}, &SourceError{Err: fmt.Errorf("%s: object has no apiVersion or kind", where)}
	}
	if name == "" {
		if _, gen := meta["generateName"]; !gen {
			return Object{}, &SourceError{Err: fmt.Errorf("%s: %s has no metadata.name", where, kind)}
		}
	}
	// encoding/json sorts map keys, so equal objects encode equally.
	js, err := json.Marshal(obj)
	if err != nil {
		return Object{}, &SourceError{Err: fmt.Errorf("%s: %v", where, err)}
	}
	return Object{JSON: js, Source: where}, nil
}

type document struct {
	text []byte
	line int // 1-based line of the document's first line in the file
}

// splitDocuments splits a YAML stream on "---" lines, remembering where each
// document starts.
func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start, line := 1, 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if bytes.HasPrefix(text, []byte("---")) && len(bytes.TrimSpace(text[3:])) == 0 {
			docs = append(docs, document{text: bytes.Clone(cur.Bytes()), line: start})
			cur.Reset()
			start = line + 1
			continue
		}
		cur.Write(text)
		cur.WriteByte('\n')
	}
	docs = append(docs, document{text: cur.Bytes(), line: start})
	return docs
}

// docErrLine extracts the "line N" a YAML error reports, relative to its
// document, as an offset to add to the document's first line.
func docErrLine(err error) int {
	msg := err.Error()
	i := strings.Index(msg, "line ")
	if i < 0 {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(msg[i+len("line "):], "%d", &n); err != nil || n < 1 {
		return 0
	}
	return n - 1
}
