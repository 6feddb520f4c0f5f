package render

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	goyaml "go.yaml.in/yaml/v2"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
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
	return func(p string) bool { return manifestFile(p) && directoryGlobs(root, d, p) }
}

// directoryGlobs reports whether the directory source's include and
// exclude globs keep the file p of root.
func directoryGlobs(root string, d *v1alpha1.DirectorySource, p string) bool {
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

// DecodeManifests splits a YAML or JSON file into Kubernetes objects,
// where kubectl apply -f would split it (see readDocuments). Empty
// documents are skipped; a document that is not valid YAML, or not an
// object with apiVersion, kind and metadata.name, is an error naming the
// file and the line the document starts on. So is a file kubectl would
// read only in part: ferry applies all of a file or none of it.
func DecodeManifests(file string, data []byte) ([]Object, error) {
	return decodeManifests(file, data, false)
}

// decodeManifests is DecodeManifests; keepSOPS keeps the SOPS documents
// objects already record (see markSOPS).
func decodeManifests(file string, data []byte, keepSOPS bool) ([]Object, error) {
	docs, err := readDocuments(file, data)
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, doc := range docs {
		objs, err := decodeDocument(file, doc, keepSOPS)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

// decodeDocument decodes one YAML document of file into objects: none for
// an empty document, several for a List.
func decodeDocument(file string, doc document, keepSOPS bool) ([]Object, error) {
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
		if isSOPS(obj) {
			// One MAC over every item: no item can be decrypted alone.
			return nil, &SourceError{Err: fmt.Errorf("%s:%d: a SOPS-encrypted %s cannot be decrypted item by item; encrypt each object in a document of its own", file, doc.line, kind)}
		}
		items, _ := obj["items"].([]any)
		out := make([]Object, 0, len(items))
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				return nil, &SourceError{Err: fmt.Errorf("%s:%d: item %d of %s is not an object", file, doc.line, i, kind)}
			}
			// An item's encrypted text is not its own: drop any mark.
			markSOPS(m, file, nil, false)
			delete(m, "sops")
			o, err := canonical(m, file, doc.line)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
		return out, nil
	}
	markSOPS(obj, file, doc.text, keepSOPS)
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

// document is one YAML document of a stream.
type document struct {
	text []byte
	line int // 1-based line of the document's first line in the file
}

// readDocuments splits a YAML stream into documents with apimachinery's
// YAMLReader, the reader of kubectl apply -f and of Argo CD, so that ferry
// finds the documents they find. It splits on a line that is "---",
// optionally followed by blanks or a comment, and refuses "---" followed by
// anything else. CRLF line endings read as LF.
//
// The reader says nothing of lines, so readDocuments counts them: every
// line comes back with one "\n", and the only lines not returned are the
// separators that end a document (one that opens the stream, or follows
// another separator, is kept in the next document). So each document
// starts one line after the end of the one before.
func readDocuments(file string, data []byte) ([]document, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []document
	for line := 1; ; {
		text, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s:%d: invalid YAML: %v", file, rejectedLine(data, line), err)}
		}
		if err := afterEndMarker(text); err != nil {
			return nil, &SourceError{Err: fmt.Errorf("%s:%d: invalid YAML: %v", file, line+docErrLine(err), err)}
		}
		docs = append(docs, document{text: text, line: line})
		line += bytes.Count(text, []byte("\n")) + 1
	}
}

// rejectedLine returns the line, at or after from, that the YAMLReader
// refused. The reader does not say which, so each candidate line is handed
// to a reader of its own.
func rejectedLine(data []byte, from int) int {
	n := 0
	for l := range bytes.Lines(data) {
		n++
		if n < from || !bytes.HasPrefix(l, []byte("---")) {
			continue
		}
		if _, err := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(l))).Read(); err != nil && !errors.Is(err, io.EOF) {
			return n
		}
	}
	return from
}

// afterEndMarker checks what follows a "..." end marker in a document the
// YAMLReader returned. The reader splits on "---" alone, so text after
// "..." stays in the same document, where sigs.k8s.io/yaml (and so kubectl)
// never reads it: a document written there without its "---" would be
// dropped in silence. The YAML parser sigs.k8s.io/yaml uses reads on past
// the marker here, and whatever it finds is an error.
func afterEndMarker(text []byte) error {
	if !bytes.HasPrefix(text, []byte("...")) && !bytes.Contains(text, []byte("\n...")) {
		return nil
	}
	dec := goyaml.NewDecoder(bytes.NewReader(text))
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil // decodeDocument reports it
	}
	switch err := dec.Decode(&v); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return err
	default:
		return errors.New(`a second document follows the end marker "..." without a "---" line`)
	}
}

// docErrLine extracts the "line N" a YAML error reports, relative to its
// document, as an offset to add to the document's first line. The YAML
// parsers give the line in their message only.
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
