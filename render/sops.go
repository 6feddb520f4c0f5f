package render

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

// rewriteKustomization serves a kustomization with what ferry does for
// SOPS in place of what Kustomize would need plugins or plaintext for: its
// KSOPS generators become resources (rewriteKSOPS), and its
// secretGenerator entries that read SOPS-encrypted files carry them to the
// apply role (rewriteSecretGenerators). A kustomization that needs neither
// comes back as it is.
func rewriteKustomization(rd *repoReader, file string, data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte("generators")) && !bytes.Contains(data, []byte("secretGenerator")) {
		return data, nil
	}
	var k map[string]any
	if err := yaml.Unmarshal(data, &k); err != nil {
		return data, nil // kustomize reports it
	}
	ksops, err := rewriteKSOPS(rd, file, k)
	if err != nil {
		return nil, err
	}
	gens, err := rewriteSecretGenerators(rd, file, k)
	if err != nil {
		return nil, err
	}
	if !ksops && !gens {
		return data, nil
	}
	return yaml.Marshal(k)
}

// rewriteKSOPS moves, in the kustomization k, the files of its KSOPS
// generators (apiVersion viaduct.ai/v1, kind ksops, in the legacy plugin
// spelling or the current exec-function one) to resources. Kustomize
// plugins stay off: the files are SOPS documents, which pass through the
// render encrypted and are decrypted at apply, as KSOPS would have
// produced them decrypted.
func rewriteKSOPS(rd *repoReader, file string, k map[string]any) (bool, error) {
	gens, _ := k["generators"].([]any)
	if len(gens) == 0 {
		return false, nil
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
			return false, err
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
		return false, nil
	}
	if len(kept) > 0 {
		k["generators"] = kept
	} else {
		delete(k, "generators")
	}
	resources, _ := k["resources"].([]any)
	k["resources"] = append(resources, moved...)
	return true, nil
}

// rewriteSecretGenerators takes, out of the kustomization k's
// secretGenerator entries, every envs or files entry that names a
// SOPS-encrypted file (dotenv, JSON, YAML or binary, as Flux reads them),
// and records the file on the generated Secret instead
// (v1alpha1.AnnotationSOPSGeneratedPrefix), with a placeholder literal
// holding a hash of the ciphertext, so that the Secret's name suffix still
// follows the file. The apply role decrypts the files into the Secret's
// data.
func rewriteSecretGenerators(rd *repoReader, file string, k map[string]any) (bool, error) {
	gens, _ := k["secretGenerator"].([]any)
	dir := path.Dir(file)
	changed := false
	for _, g := range gens {
		gen, ok := g.(map[string]any)
		if !ok {
			continue
		}
		n := 0
		var carried []v1alpha1.SOPSGenerated
		for _, field := range []string{"envs", "files"} {
			entries, _ := gen[field].([]any)
			var kept []any
			for _, e := range entries {
				entry, ok := e.(string)
				if !ok {
					kept = append(kept, e)
					continue
				}
				key, p := "", entry
				if field == "files" {
					if k, v, ok := strings.Cut(entry, "="); ok {
						key, p = k, v
					} else {
						key = path.Base(entry)
					}
				}
				g, err := sopsGeneratedFile(rd, dir, field, key, p)
				if err != nil {
					return false, err
				}
				if g == nil {
					kept = append(kept, e)
					continue
				}
				carried = append(carried, *g)
			}
			if len(carried) > n {
				if len(kept) > 0 {
					gen[field] = kept
				} else {
					delete(gen, field)
				}
				n = len(carried)
			}
		}
		if len(carried) == 0 {
			continue
		}
		changed = true
		opts, _ := gen["options"].(map[string]any)
		if opts == nil {
			opts = map[string]any{}
			gen["options"] = opts
		}
		ann, _ := opts["annotations"].(map[string]any)
		if ann == nil {
			ann = map[string]any{}
			opts["annotations"] = ann
		}
		literals, _ := gen["literals"].([]any)
		for i, c := range carried {
			js, err := json.Marshal(c)
			if err != nil {
				return false, err
			}
			ann[fmt.Sprintf("%s%d", v1alpha1.AnnotationSOPSGeneratedPrefix, i)] = base64.StdEncoding.EncodeToString(js)
			sum := sha256.Sum256(c.Document)
			literals = append(literals, fmt.Sprintf("%s%d=%s", v1alpha1.SOPSPlaceholderPrefix, i, hex.EncodeToString(sum[:8])))
		}
		gen["literals"] = literals
	}
	return changed, nil
}

// sopsGeneratedFile reads the file p (relative to dir) a secretGenerator
// names under field, and returns it as a SOPSGenerated when it is
// SOPS-encrypted, or nil.
func sopsGeneratedFile(rd *repoReader, dir, field, key, p string) (*v1alpha1.SOPSGenerated, error) {
	clean, err := ConfinePath(path.Join(dir, p))
	if err != nil {
		return nil, nil // kustomize reports it
	}
	data, n, err := rd.readFile(clean)
	if err != nil {
		return nil, nil // kustomize reports it
	}
	format := ""
	switch ext := strings.ToLower(path.Ext(clean)); {
	case field == "envs" || ext == ".env":
		if bytes.Contains(data, []byte("\nsops_mac=")) || bytes.HasPrefix(data, []byte("sops_mac=")) {
			format = "dotenv"
		}
	case ext == ".yaml" || ext == ".yml":
		var m map[string]any
		if yaml.Unmarshal(data, &m) == nil && isSOPS(m) {
			format = "yaml"
		}
	default:
		var m map[string]any
		if json.Unmarshal(data, &m) == nil && isSOPS(m) {
			format = "binary"
			if ext == ".json" {
				format = "json"
			}
		}
	}
	if format == "" {
		return nil, nil
	}
	if field == "envs" && format != "dotenv" {
		return nil, &SourceError{Err: fmt.Errorf("%s: an envs entry must be a dotenv file", n.path)}
	}
	return &v1alpha1.SOPSGenerated{Kind: field, Key: key, Format: format, File: n.path, Document: data}, nil
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
