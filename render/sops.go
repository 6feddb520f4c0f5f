package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// SOPS-encrypted manifests pass through the render still encrypted. The
// apply role decrypts them just before it applies them, from the document
// as Git has it, which rides along in an annotation (see
// v1alpha1.AnnotationSOPSDocument).

// isSOPS reports whether a decoded manifest carries SOPS metadata.
func isSOPS(obj map[string]any) bool {
	m, ok := obj["sops"].(map[string]any)
	if !ok {
		return false
	}
	_, hasMAC := m["mac"]
	return hasMAC
}

// markSOPS records on obj the encrypted document it was decoded from, and
// drops the annotations from any other object: only ferry's render may
// say what the apply role decrypts. keep leaves a document recorded
// earlier in place (kustomize's output, whose documents kustomize has
// transformed, carries the one kustomizeFS recorded from the file).
func markSOPS(obj map[string]any, file string, doc []byte, keep bool) {
	meta, _ := obj["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	if !isSOPS(obj) {
		if ann != nil {
			delete(ann, v1alpha1.AnnotationSOPSDocument)
			delete(ann, v1alpha1.AnnotationSOPSSource)
			if len(ann) == 0 {
				delete(meta, "annotations")
			}
		}
		return
	}
	if keep && ann != nil && ann[v1alpha1.AnnotationSOPSDocument] != nil {
		return
	}
	if meta == nil {
		meta = map[string]any{}
		obj["metadata"] = meta
	}
	if ann == nil {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	ann[v1alpha1.AnnotationSOPSDocument] = base64.StdEncoding.EncodeToString(bytes.TrimPrefix(doc, []byte("---\n")))
	ann[v1alpha1.AnnotationSOPSSource] = file
}

// markSOPSFile rewrites a file kustomize reads so that each SOPS document
// in it carries its own encrypted text, which kustomize then keeps through
// its transformations. A file without SOPS documents comes back as it is.
func markSOPSFile(file string, data []byte) []byte {
	if !bytes.Contains(data, []byte("sops:")) || !bytes.Contains(data, []byte("mac:")) {
		return data
	}
	docs, err := readDocuments(file, data)
	if err != nil {
		return data
	}
	var out bytes.Buffer
	changed := false
	for i, doc := range docs {
		text := doc.text
		var obj map[string]any
		if js, err := yaml.YAMLToJSON(doc.text); err == nil && json.Unmarshal(js, &obj) == nil && isSOPS(obj) {
			markSOPS(obj, file, doc.text, false)
			if y, err := yaml.Marshal(obj); err == nil {
				text, changed = y, true
			}
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		out.Write(text)
		if !strings.HasSuffix(string(text), "\n") {
			out.WriteString("\n")
		}
	}
	if !changed {
		return data
	}
	return out.Bytes()
}

// rewriteKSOPS serves a kustomization whose generators include KSOPS
// generators (apiVersion viaduct.ai/v1, kind ksops, in the legacy plugin
// spelling or the current exec-function one) with the files each lists
// moved to resources. Kustomize plugins stay off: the files are SOPS
// documents, which pass through the render encrypted and are decrypted
// at apply, as KSOPS would have produced them decrypted. A kustomization
// without KSOPS generators comes back as it is.
func rewriteKSOPS(rd *repoReader, file string, data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte("generators")) {
		return data, nil
	}
	var k map[string]any
	if err := yaml.Unmarshal(data, &k); err != nil {
		return data, nil // kustomize reports it
	}
	gens, _ := k["generators"].([]any)
	if len(gens) == 0 {
		return data, nil
	}
	dir := path.Dir(file)
	var kept, moved []any
	for _, g := range gens {
		entry, ok := g.(string)
		if !ok || strings.Contains(entry, "\n") {
			kept = append(kept, g)
			continue
		}
		files, isKSOPS, err := ksopsFiles(rd, dir, entry)
		if err != nil {
			return nil, err
		}
		if !isKSOPS {
			kept = append(kept, g)
			continue
		}
		for _, f := range files {
			moved = append(moved, f)
		}
	}
	if len(moved) == 0 {
		return data, nil
	}
	if len(kept) > 0 {
		k["generators"] = kept
	} else {
		delete(k, "generators")
	}
	resources, _ := k["resources"].([]any)
	k["resources"] = append(resources, moved...)
	return yaml.Marshal(k)
}

// ksopsFiles reads the generator config entry names, relative to the
// kustomization's directory dir, and returns the files of a KSOPS
// generator.
func ksopsFiles(rd *repoReader, dir, entry string) ([]string, bool, error) {
	p, err := ConfinePath(path.Join(dir, entry))
	if err != nil {
		return nil, false, nil // kustomize reports it
	}
	data, n, err := rd.readFile(p)
	if err != nil {
		return nil, false, nil // a directory, or missing: kustomize reports it
	}
	var cfg struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Files      []string `json:"files"`
		SecretFrom []any    `json:"secretFrom"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil || !strings.HasPrefix(cfg.APIVersion, "viaduct.ai/") || !strings.EqualFold(cfg.Kind, "ksops") {
		return nil, false, nil
	}
	if len(cfg.SecretFrom) > 0 {
		return nil, true, &SourceError{Err: fmt.Errorf("%s: KSOPS secretFrom is not supported; list the encrypted manifests under files", n.path)}
	}
	if len(cfg.Files) == 0 {
		return nil, true, &SourceError{Err: fmt.Errorf("%s: the KSOPS generator lists no files", n.path)}
	}
	return cfg.Files, true, nil
}
