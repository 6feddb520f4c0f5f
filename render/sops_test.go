package render

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/sopstest"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestSOPSDocumentsPassThroughEncrypted renders SOPS documents from a
// plain directory and from a Kustomize overlay that renames them: each
// object stays encrypted and carries its document exactly as Git has it,
// and a document that only claims to carry one loses the claim.
func TestSOPSDocumentsPassThroughEncrypted(t *testing.T) {
	key := sopstest.NewKey(t)
	enc := sopstest.Encrypt(t, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-value\n", key)
	forged := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: forged\n  annotations:\n    " + v1alpha1.AnnotationSOPSDocument + ": " +
		base64.StdEncoding.EncodeToString([]byte(enc)) + "\n"
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "sops")
	repo.WriteFile(t, "plain/secret.yaml", enc)
	repo.WriteFile(t, "plain/forged.yaml", forged)
	repo.WriteFile(t, "kust/kustomization.yaml", "namePrefix: p-\nnamespace: other\nresources:\n  - secret.yaml\n  - forged.yaml\n")
	repo.WriteFile(t, "kust/secret.yaml", enc)
	repo.WriteFile(t, "kust/forged.yaml", forged)
	sha := repo.Commit(t, "sops")
	r := newRenderer(t, Options{})
	for _, c := range []struct{ path, secret, forged, file string }{
		{"plain", "db", "forged", "plain/secret.yaml"},
		{"kust", "p-db", "p-forged", "kust/secret.yaml"},
	} {
		t.Run(c.path, func(t *testing.T) {
			objs := objects(t, render(t, r, app(c.path, "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: c.path}), sha))
			secret := findObject(t, objs, "Secret", c.secret)
			if _, ok := secret["sops"]; !ok || strings.Contains(toJSON(t, secret), "hunter2-value") {
				t.Errorf("the Secret is not passed through encrypted: %v", secret)
			}
			ann, _ := secret["metadata"].(map[string]any)["annotations"].(map[string]any)
			doc, err := base64.StdEncoding.DecodeString(ann[v1alpha1.AnnotationSOPSDocument].(string))
			if err != nil || string(doc) != enc || ann[v1alpha1.AnnotationSOPSSource] != c.file {
				t.Errorf("annotations %v; want the document as Git has it, from %s", ann, c.file)
			}
			meta := findObject(t, objs, "ConfigMap", c.forged)["metadata"].(map[string]any)
			if a, _ := meta["annotations"].(map[string]any); a[v1alpha1.AnnotationSOPSDocument] != nil {
				t.Errorf("a document from Git kept its claim to a SOPS document: %v", a)
			}
		})
	}
}

func toJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKSOPSGenerators renders a kustomization whose generators are KSOPS
// generators, in the legacy and the current spelling, with plugins off:
// the files they list come out as resources, still encrypted and marked.
func TestKSOPSGenerators(t *testing.T) {
	key := sopstest.NewKey(t)
	srv := gitserver.New(t)
	repo := srv.NewRepo(t, "ksops")
	repo.WriteFile(t, "app/kustomization.yaml", "namePrefix: k-\nresources:\n  - cm.yaml\ngenerators:\n  - legacy.yaml\n  - current.yaml\n")
	repo.WriteFile(t, "app/cm.yaml", cmYAML("plain"))
	repo.WriteFile(t, "app/legacy.yaml", "apiVersion: viaduct.ai/v1\nkind: ksops\nmetadata:\n  name: legacy\nfiles:\n  - secrets/one.enc.yaml\n")
	repo.WriteFile(t, "app/current.yaml", "apiVersion: viaduct.ai/v1\nkind: ksops\nmetadata:\n  name: current\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ksops\nfiles:\n  - ./secrets/two.enc.yaml\n")
	for _, name := range []string{"one", "two"} {
		repo.WriteFile(t, "app/secrets/"+name+".enc.yaml", sopstest.Encrypt(t, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: "+name+"\nstringData:\n  v: "+name+"-value\n", key))
	}
	repo.WriteFile(t, "bad/kustomization.yaml", "generators:\n  - gen.yaml\n")
	repo.WriteFile(t, "bad/gen.yaml", "apiVersion: viaduct.ai/v1\nkind: ksops\nmetadata:\n  name: bad\nsecretFrom:\n  - metadata: {name: x}\n")
	sha := repo.Commit(t, "ksops")
	r := newRenderer(t, Options{})

	objs := objects(t, render(t, r, app("app", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "app"}), sha))
	if got := objectNames(objs); strings.Join(slices.Sorted(slices.Values(got)), " ") != "ConfigMap/k-plain Secret/k-one Secret/k-two" {
		t.Fatalf("objects %v; want the ConfigMap and both generated Secrets", got)
	}
	for _, name := range []string{"k-one", "k-two"} {
		s := findObject(t, objs, "Secret", name)
		ann, _ := s["metadata"].(map[string]any)["annotations"].(map[string]any)
		if _, ok := s["sops"]; !ok || ann[v1alpha1.AnnotationSOPSDocument] == nil || strings.Contains(toJSON(t, s), "-value") {
			t.Errorf("Secret %s is not passed through encrypted and marked: %v", name, s)
		}
	}
	err := renderErr(t, r, app("bad", "default", v1alpha1.ApplicationSource{RepoURL: repo.URL(), Path: "bad"}), sha)
	if !strings.Contains(err.Error(), "bad/gen.yaml: KSOPS secretFrom is not supported") {
		t.Errorf("error %v; want one naming the generator file and secretFrom", err)
	}
}

func TestSOPSListIsRefused(t *testing.T) {
	key := sopstest.NewKey(t)
	list := sopstest.Encrypt(t, "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Secret\n    metadata: {name: a}\n    stringData: {v: x}\n", key)
	_, err := DecodeManifests("secrets.yaml", []byte(list))
	if err == nil || !strings.Contains(err.Error(), "secrets.yaml:1: a SOPS-encrypted List cannot be decrypted item by item") {
		t.Errorf("error %v; want a refusal naming the file", err)
	}
}
