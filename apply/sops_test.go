package apply

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	sopsage "github.com/getsops/sops/v3/age"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferrycd/ferry/integration/sopstest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// staticKeys stands in for the key Secret, which the integration test
// reads from a real API server.
type staticKeys []string

func (k staticKeys) AgeIdentities(context.Context, string) (sopsage.ParsedIdentities, error) {
	var ids sopsage.ParsedIdentities
	return ids, ids.Import(k...)
}

func (k staticKeys) HashKey(context.Context) ([]byte, error) { return []byte("a test hash key"), nil }

// marked returns the object the render makes of an encrypted document.
func marked(t *testing.T, enc string) *unstructured.Unstructured {
	t.Helper()
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "cm", "annotations": map[string]any{
			v1alpha1.AnnotationSOPSDocument: base64.StdEncoding.EncodeToString([]byte(enc)),
			v1alpha1.AnnotationSOPSSource:   "apps/cm.enc.yaml",
		}},
		"data": map[string]any{"token": "ENC[...]"},
		"sops": map[string]any{"mac": "ENC[...]"},
	}}
}

func TestDecryptSOPS(t *testing.T) {
	key := sopstest.NewKey(t)
	enc := sopstest.Encrypt(t, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  token: s3cret-token\n", key)

	t.Run("without a key, the error names the object, the file and the recipient", func(t *testing.T) {
		_, _, err := decryptSOPS(t.Context(), staticKeys{}, "", []*unstructured.Unstructured{marked(t, enc)})
		if !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "ConfigMap cm from apps/cm.enc.yaml") ||
			!strings.Contains(err.Error(), "no age key is configured") || !strings.Contains(err.Error(), key.Recipient) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("with the key, values replace the ciphertext and the marks go", func(t *testing.T) {
		u := marked(t, enc)
		decrypted, hashKey, err := decryptSOPS(t.Context(), staticKeys{key.Identity}, "", []*unstructured.Unstructured{u})
		if err != nil {
			t.Fatal(err)
		}
		if got, _, _ := unstructured.NestedString(u.Object, "data", "token"); got != "s3cret-token" || u.Object["sops"] != nil || len(u.GetAnnotations()) != 0 {
			t.Errorf("object after decryption: %v", u.Object)
		}
		if !decrypted[u] || len(hashKey) == 0 {
			t.Error("the decrypted object, or the inventory hash key, is not returned")
		}
	})
	t.Run("a diff of a decrypted object of any kind shows masks only", func(t *testing.T) {
		live := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "cm"}, "data": map[string]any{"token": "old-s3cret"}}}
		desired := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "cm"}, "data": map[string]any{"token": "s3cret-token"}}}
		d, err := renderDiff(ObjectRef{Version: "v1", Kind: "ConfigMap", Name: "cm"}, DiffUpdate, live, desired, true)
		if err != nil || d == nil {
			t.Fatalf("diff %v, error %v", d, err)
		}
		if strings.Contains(d.Diff, "s3cret") || !strings.Contains(d.Diff, secretMask+" (after)") {
			t.Errorf("diff shows a decrypted value, or no mask:\n%s", d.Diff)
		}
	})
}
