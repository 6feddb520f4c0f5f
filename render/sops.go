package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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
