package render

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeManifests feeds arbitrary files to the manifest decoder, which
// reads whatever a repository holds: it must never panic, and whatever it
// accepts must be objects with apiVersion, kind and a name.
//
//	go test ./render -run '^$' -fuzz FuzzDecodeManifests -fuzztime 30s
func FuzzDecodeManifests(f *testing.F) {
	for _, seed := range []string{
		"",
		"---\n",
		cmYAML("a") + "---\n" + cmYAML("b"),
		`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}]}`,
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: x-\n",
		"apiVersion: v1\nkind: [unclosed\n",
		"- a\n- b\n",
		"apiVersion: v1\nkind: ConfigMapList\nitems: [1]\n",
		"a: &x [*x]\n",
		"--- # comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"\\u00e9\"}\n...\n",
		strings.Repeat("a: [", 50),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := DecodeManifests("fuzz.yaml", data)
		if err != nil {
			var se *SourceError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a SourceError", err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml:") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		for _, o := range objs {
			var m map[string]any
			if err := json.Unmarshal(o.JSON, &m); err != nil {
				t.Fatalf("object is not JSON: %v", err)
			}
			if m["apiVersion"] == "" || m["kind"] == "" || m["metadata"] == nil {
				t.Fatalf("accepted %s", o.JSON)
			}
			if !strings.HasPrefix(o.Source, "fuzz.yaml:") {
				t.Fatalf("source %q does not name the file", o.Source)
			}
		}
	})
}
