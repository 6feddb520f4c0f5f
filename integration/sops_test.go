package integration

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/integration/gitserver"
	"github.com/ferrycd/ferry/integration/sopstest"
	"github.com/ferrycd/ferry/integration/testenv"
	"github.com/ferrycd/ferry/integration/webhook"
	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// TestSOPSSecretsAreDecryptedOnlyAtApply pushes SOPS-encrypted Secrets, in
// a plain directory and as a Kustomize resource under a name prefix, and
// checks that they land decrypted, that their plaintext is nowhere else
// (JetStream streams, the object store and KV buckets, the data directory,
// logs, spans, the API's diff, history and resources), that a wrong key or
// a tampered file fails its app cleanly while a sound app in the same push
// syncs, and that re-encrypting unchanged values writes no Secret.
func TestSOPSSecretsAreDecryptedOnlyAtApply(t *testing.T) {
	cp := testenv.StartT(t)
	key, wrongKey := sopstest.NewKey(t), sopstest.NewKey(t)
	const plainValue, kustValue = "plain-s3cret-value-1f2e", "kust-s3cret-value-9a8b"
	plainSecret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: " + plainValue + "\n"
	kustSecret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: api\ndata:\n  token: " + base64.StdEncoding.EncodeToString([]byte(kustValue)) + "\n"

	git := gitserver.New(t)
	repo := git.NewRepo(t, "platform/sops")
	repo.WriteFile(t, "plain/secret.yaml", sopstest.Encrypt(t, plainSecret, key))
	repo.WriteFile(t, "kust/kustomization.yaml", "namePrefix: k-\ncommonLabels: {team: platform}\nresources:\n  - secret.yaml\n")
	repo.WriteFile(t, "kust/secret.yaml", sopstest.Encrypt(t, kustSecret, key))
	repo.WriteFile(t, "wrong/secret.yaml", sopstest.Encrypt(t, strings.ReplaceAll(plainSecret, "name: db", "name: wrong"), wrongKey))
	tampered := sopstest.Encrypt(t, strings.ReplaceAll(plainSecret, "name: db", "name: tampered"), key)
	repo.WriteFile(t, "tampered/secret.yaml", strings.Replace(tampered, "name: tampered", "name: swapped", 1))
	repo.WriteFile(t, "sound/config.yaml", configMap("sound", "hello"))
	// The seed's spelling: a KSOPS generator, with Kustomize plugins off.
	repo.WriteFile(t, "ksops/kustomization.yaml", "generators:\n  - secret-generator.yaml\n")
	repo.WriteFile(t, "ksops/secret-generator.yaml", "apiVersion: viaduct.ai/v1\nkind: ksops\nmetadata:\n  name: gen\n  annotations:\n    config.kubernetes.io/function: |\n      exec:\n        path: ksops\nfiles:\n  - ./secret.enc.yaml\n")
	repo.WriteFile(t, "ksops/secret.enc.yaml", sopstest.Encrypt(t, strings.ReplaceAll(plainSecret, "name: db", "name: from-ksops"), key))
	// A secretGenerator reading an encrypted dotenv file and an encrypted
	// binary file, as Flux reads them.
	const envValue, binValue = "env-s3cret-value-77aa", "bin-s3cret-value-33cc"
	repo.WriteFile(t, "gen/kustomization.yaml", "secretGenerator:\n  - name: app\n    envs: [app.enc.env]\n    files: [tls.key=tls.enc.bin]\n    literals: [plain=visible]\n")
	repo.WriteFile(t, "gen/app.enc.env", sopstest.EncryptDotenv(t, "API_TOKEN="+envValue+"\nMODE=prod\n", key))
	repo.WriteFile(t, "gen/tls.enc.bin", sopstest.EncryptBinary(t, []byte(binValue), key))
	// A chart whose template is an encrypted manifest.
	repo.WriteFile(t, "chart/Chart.yaml", "apiVersion: v2\nname: secrets\nversion: 0.1.0\n")
	repo.WriteFile(t, "chart/templates/secret.yaml", sopstest.Encrypt(t, strings.ReplaceAll(plainSecret, "name: db", "name: from-helm"), key))
	first := repo.Commit(t, "encrypted secrets")

	dataDir := filepath.Join(t.TempDir(), "data")
	logs := &syncBuffer{}
	writes := &writeCounter{path: "/secrets"}
	f := startFerry(t, cp, func(o *cli.ServeOptions) {
		o.DataDir, o.Stderr, o.LogLevel = dataDir, logs, "debug"
		o.RestConfig = writes.config(cp.Config)
	})
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	kube := kubernetes.NewForConfigOrDie(cp.Config)
	if _, err := kube.CoreV1().Secrets("ferry").Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "ferry-sops", Namespace: "ferry"},
		Data:       map[string][]byte{"team.agekey": []byte(key.Identity + "\n")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createNamespace(t, kube, "sops")
	for _, name := range []string{"plain", "kust", "wrong", "tampered", "sound", "ksops", "chart", "gen"} {
		createApp(t, dyn, &v1alpha1.Application{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
			Spec: v1alpha1.ApplicationSpec{
				Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: name},
				Destination: v1alpha1.Destination{Namespace: "sops"},
				SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
			},
		})
	}

	t.Run("a secretGenerator's encrypted dotenv and binary files land decrypted", func(t *testing.T) {
		eventually(t, "the generated Secret decrypted", func() (bool, string) {
			list, err := kube.CoreV1().Secrets("sops").List(t.Context(), metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			for _, s := range list.Items {
				if !strings.HasPrefix(s.Name, "app-") {
					continue
				}
				var keys []string
				for k := range s.Data {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				return string(s.Data["API_TOKEN"]) == envValue && string(s.Data["MODE"]) == "prod" && string(s.Data["tls.key"]) == binValue &&
						string(s.Data["plain"]) == "visible" && strings.Join(keys, ",") == "API_TOKEN,MODE,plain,tls.key" && !strings.Contains(fmt.Sprint(s.Annotations), "sops.ferry.dev"),
					fmt.Sprintf("%s: keys %v, annotations %v", s.Name, keys, s.Annotations)
			}
			return false, "no Secret app-*; " + getApp(t, dyn, "ferry", "gen").Status.LastError
		})
	})

	t.Run("encrypted Secrets land decrypted", func(t *testing.T) {
		for _, name := range []string{"from-ksops", "from-helm"} {
			eventually(t, name+" decrypted", func() (bool, string) {
				s, err := kube.CoreV1().Secrets("sops").Get(t.Context(), name, metav1.GetOptions{})
				if err != nil {
					return false, err.Error() + "; " + getApp(t, dyn, "ferry", strings.TrimPrefix(strings.Replace(name, "from-helm", "chart", 1), "from-")).Status.LastError
				}
				return string(s.Data["password"]) == plainValue, string(s.Data["password"])
			})
		}
		eventually(t, "both Secrets decrypted", func() (bool, string) {
			db, err := kube.CoreV1().Secrets("sops").Get(t.Context(), "db", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			api, err := kube.CoreV1().Secrets("sops").Get(t.Context(), "k-api", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			if _, has := db.Annotations[v1alpha1.AnnotationSOPSDocument]; has {
				return false, "the SOPS document annotation reached the cluster"
			}
			return string(db.Data["password"]) == plainValue && string(api.Data["token"]) == kustValue && api.Labels["team"] == "platform",
				fmt.Sprintf("db %q, k-api %q", db.Data["password"], api.Data["token"])
		})
	})
	t.Run("a wrong key and a tampered file fail their apps, naming the file; a sound app syncs", func(t *testing.T) {
		for name, want := range map[string]string{
			"wrong":    "none of the 1 configured age keys opens it",
			"tampered": "MAC mismatch",
		} {
			eventually(t, name+" failed", func() (bool, string) {
				app := getApp(t, dyn, "ferry", name)
				msg := app.Status.LastError
				return strings.Contains(msg, "cannot decrypt SOPS document") && strings.Contains(msg, name+"/secret.yaml") && strings.Contains(msg, want), msg
			})
		}
		for _, name := range []string{"wrong", "swapped", "tampered"} {
			if _, err := kube.CoreV1().Secrets("sops").Get(t.Context(), name, metav1.GetOptions{}); err == nil {
				t.Errorf("Secret %s was applied although its app failed to decrypt", name)
			}
		}
		eventually(t, "sound synced", func() (bool, string) {
			app := getApp(t, dyn, "ferry", "sound")
			return app.Status.Sync.Revision == first && app.Status.Sync.Status == v1alpha1.SyncStatusSynced, app.Status.LastError
		})
	})

	t.Run("adding the missing key to the key Secret syncs the app that needed it", func(t *testing.T) {
		sec, err := kube.CoreV1().Secrets("ferry").Get(t.Context(), "ferry-sops", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec.Data["rotated.agekey"] = []byte(wrongKey.Identity)
		if _, err := kube.CoreV1().Secrets("ferry").Update(t.Context(), sec, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the wrong app's Secret decrypted with the added key", func() (bool, string) {
			s, err := kube.CoreV1().Secrets("sops").Get(t.Context(), "wrong", metav1.GetOptions{})
			if err != nil {
				return false, err.Error() + "; " + getApp(t, dyn, "ferry", "wrong").Status.LastError
			}
			app := getApp(t, dyn, "ferry", "wrong")
			return string(s.Data["password"]) == plainValue && app.Status.Sync.DecryptedWith == "ferry-sops",
				fmt.Sprintf("password %q, decryptedWith %q", s.Data["password"], app.Status.Sync.DecryptedWith)
		})
	})

	t.Run("an app's own key Secret, only where its project allows it", func(t *testing.T) {
		teamKey := sopstest.NewKey(t)
		if _, err := kube.CoreV1().Secrets("ferry").Create(t.Context(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "team-sops", Namespace: "ferry"},
			Data:       map[string][]byte{"a.agekey": []byte(teamKey.Identity)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		project := &v1alpha1.Project{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.APIVersion, Kind: v1alpha1.ProjectKind},
			ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "ferry"},
			Spec: v1alpha1.ProjectSpec{SourceRepos: []string{"*"}, Destinations: []v1alpha1.ProjectDestination{{Namespace: "sops"}},
				DecryptionSecrets: []string{"team-sops"}},
		}
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(project)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(v1alpha1.ProjectsResource).Namespace("ferry").Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		repo.WriteFile(t, "team/secret.yaml", sopstest.Encrypt(t, strings.ReplaceAll(plainSecret, "name: db", "name: team"), teamKey))
		repo.Commit(t, "the team's own key")
		for name, secret := range map[string]string{"team": "team-sops", "team-other": "ferry-sops"} {
			createApp(t, dyn, &v1alpha1.Application{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ferry"},
				Spec: v1alpha1.ApplicationSpec{
					Project:     "team",
					Source:      &v1alpha1.ApplicationSource{RepoURL: repo.URL(), TargetRevision: "main", Path: "team"},
					Destination: v1alpha1.Destination{Namespace: "sops"},
					SyncPolicy:  &v1alpha1.SyncPolicy{Automated: &v1alpha1.Automated{Prune: true}},
					Decryption:  &v1alpha1.Decryption{Provider: "sops", SecretRef: &v1alpha1.LocalSecretReference{Name: secret}},
				},
			})
		}
		eventually(t, "the team's Secret decrypted with its own key", func() (bool, string) {
			s, err := kube.CoreV1().Secrets("sops").Get(t.Context(), "team", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return string(s.Data["password"]) == plainValue, string(s.Data["password"])
		})
		eventually(t, "the app naming a key its project does not allow refused", func() (bool, string) {
			msg := getApp(t, dyn, "ferry", "team-other").Status.LastError
			return strings.Contains(msg, `does not allow the SOPS key Secret "ferry-sops" (decryptionSecrets)`), msg
		})
	})

	t.Run("re-encrypting unchanged values for another key writes no Secret", func(t *testing.T) {
		before := writes.n.Load()
		head := getApp(t, dyn, "ferry", "plain").Status.Sync.Revision
		// wrongKey is in the key Secret since the rotation above.
		repo.WriteFile(t, "plain/secret.yaml", sopstest.Encrypt(t, plainSecret, wrongKey))
		second := repo.Commit(t, "re-encrypt")
		body := webhook.Push{
			CloneURL: repo.URL(), FullName: "platform/sops", DefaultBranch: "main",
			Ref: "refs/heads/main", Before: head, After: second,
			Commits: []webhook.Commit{{ID: second, Message: "re-encrypt", Modified: []string{"plain/secret.yaml"}}},
		}.Payload()
		if resp, err := webhook.Send(t.Context(), f.url+"/webhooks/github", "push", "sops-2", []byte(testSecret), body); err != nil || resp.Status != 202 {
			t.Fatalf("push webhook: %v %+v", err, resp)
		}
		eventually(t, "plain synced at the re-encryption", func() (bool, string) {
			app := getApp(t, dyn, "ferry", "plain")
			return app.Status.Sync.Revision == second && app.Status.Sync.Status == v1alpha1.SyncStatusSynced, app.Status.LastError
		})
		if n := writes.n.Load() - before; n != 0 {
			t.Errorf("%d Secret writes for a re-encryption of unchanged values; want 0", n)
		}
	})

	t.Run("the plaintext is nowhere but in the cluster's Secrets", func(t *testing.T) {
		var needles []string
		for _, v := range []string{plainValue, kustValue, envValue, binValue} {
			needles = append(needles, v, base64.StdEncoding.EncodeToString([]byte(v)))
		}
		check := func(where string, data []byte) {
			t.Helper()
			for _, n := range needles {
				if bytes.Contains(data, []byte(n)) {
					t.Errorf("%s holds a decrypted value (%.6s…)", where, n)
				}
			}
		}
		js, err := f.info.NATS.JetStream()
		if err != nil {
			t.Fatal(err)
		}
		streams, msgs, ciphertexts := 0, 0, 0
		for name := range js.StreamNames() {
			streams++
			info, err := js.StreamInfo(name)
			if err != nil {
				t.Fatal(err)
			}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
				m, err := js.GetMsg(name, seq)
				if err != nil {
					continue // deleted
				}
				msgs++
				if bytes.Contains(m.Data, []byte("ENC[AES256_GCM")) {
					ciphertexts++
				}
				check(fmt.Sprintf("stream %s message %d", name, seq), m.Data)
				check(fmt.Sprintf("stream %s message %d headers", name, seq), []byte(fmt.Sprint(m.Header)))
			}
		}
		if streams == 0 || ciphertexts == 0 {
			t.Fatalf("read %d streams and %d messages, %d with SOPS ciphertext; want the bundles among them", streams, msgs, ciphertexts)
		}
		files := 0
		err = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			check("data file "+p, b)
			return nil
		})
		if err != nil || files == 0 {
			t.Fatalf("read %d data files: %v", files, err)
		}
		check("the logs", []byte(fmt.Sprint(logs.lines())))
		for _, s := range f.spans.GetSpans() {
			check("span "+s.Name, []byte(fmt.Sprint(s.Attributes, s.Events, s.Status)))
		}
		for _, path := range []string{"/api/v1/apps/ferry/plain", "/api/v1/apps/ferry/plain/diff", "/api/v1/apps/ferry/plain/history",
			"/api/v1/apps/ferry/plain/resources", "/api/v1/apps/ferry/kust/diff", "/api/v1/apps/ferry/kust/history", "/api/v1/apps/ferry/gen/diff"} {
			resp := f.apiGet(t, path)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET %s: %s %s", path, resp.Status, b)
			}
			check("GET "+path, b)
		}
		t.Logf("searched %d streams (%d messages), %d data files, the logs, %d spans and 7 API answers", streams, msgs, files, len(f.spans.GetSpans()))
	})
}
