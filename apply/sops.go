package apply

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/logging"
	"github.com/getsops/sops/v3/stores/dotenv"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"github.com/sirupsen/logrus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/ferrycd/ferry/proto/application/v1alpha1"
)

// SOPS documents reach the apply role still encrypted: the render marks
// each with the document as Git has it (v1alpha1.AnnotationSOPSDocument).
// The role decrypts them here, in memory, just before the sync applies
// them; nothing decrypted is stored, logged, traced or sent anywhere but to
// the API server.

func init() {
	// sops logs every identity that fails to open a document, at info
	// level, to stderr; ferry reports what failed itself.
	logging.SetLevel(logrus.WarnLevel)
}

// DefaultSOPSSecret is the Secret in ferry's namespace whose keys ending in
// ".agekey" hold the age identities that decrypt SOPS documents.
const DefaultSOPSSecret = "ferry-sops"

// ErrDecrypt is wrapped by every failure to decrypt a SOPS document: no
// key, a wrong key, a tampered MAC. Retrying does not help until Git or the
// key Secret changes.
var ErrDecrypt = errors.New(v1alpha1.DecryptFailed)

// SOPSKeys finds the age identities that decrypt SOPS documents.
type SOPSKeys interface {
	// AgeIdentities returns the identities of the key Secret named secret
	// in ferry's namespace ("" names the default one), with any the
	// operator gave in files.
	AgeIdentities(ctx context.Context, secret string) (sopsage.ParsedIdentities, error)
	// HashKey returns the installation's key for the inventory hashes of
	// decrypted objects: the same whatever SOPS key opened them, so that
	// re-encrypting a file for a new key writes nothing.
	HashKey(ctx context.Context) ([]byte, error)
}

// HashKeySecret is the Secret in ferry's namespace holding the key of the
// inventory hashes of decrypted objects; ferry creates it when missing.
const HashKeySecret = "ferry-inventory-hash-key"

// SecretSOPSKeys reads age identities from Secrets in ferry's namespace
// and from files.
type SecretSOPSKeys struct {
	dyn       dynamic.Interface
	namespace string
	files     []string

	mu      sync.Mutex
	hashKey []byte
}

// NewSecretSOPSKeys reads identities from Secrets in namespace, and from
// the age key files given (--sops-age-key-file).
func NewSecretSOPSKeys(dyn dynamic.Interface, namespace string, files ...string) *SecretSOPSKeys {
	return &SecretSOPSKeys{dyn: dyn, namespace: namespace, files: files}
}

var secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// AgeIdentities reads every key ending in ".agekey" of the Secret, and the
// files. A Secret that does not exist gives no identities; only the
// default one may be missing without an error.
func (k *SecretSOPSKeys) AgeIdentities(ctx context.Context, secret string) (sopsage.ParsedIdentities, error) {
	var ids sopsage.ParsedIdentities
	for _, f := range k.files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading --sops-age-key-file: %w", err)
		}
		if err := ids.Import(string(b)); err != nil {
			return nil, fmt.Errorf("--sops-age-key-file %s: %w", f, err)
		}
	}
	name := secret
	if name == "" {
		name = DefaultSOPSSecret
	}
	u, err := k.dyn.Resource(secretsResource).Namespace(k.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && secret == "" {
		return ids, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the SOPS key Secret %s/%s: %w", k.namespace, name, err)
	}
	data, _, _ := unstructured.NestedStringMap(u.Object, "data")
	keys := make([]string, 0, len(data))
	for key := range data {
		if strings.HasSuffix(key, ".agekey") {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		b, err := base64.StdEncoding.DecodeString(data[key])
		if err != nil {
			return nil, fmt.Errorf("SOPS key Secret %s/%s, key %s: %w", k.namespace, name, key, err)
		}
		if err := ids.Import(string(b)); err != nil {
			return nil, fmt.Errorf("SOPS key Secret %s/%s, key %s: %w", k.namespace, name, key, err)
		}
	}
	return ids, nil
}

// HashKey reads the key of HashKeySecret, creating the Secret with 32
// random bytes when it does not exist yet.
func (k *SecretSOPSKeys) HashKey(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.hashKey != nil {
		return k.hashKey, nil
	}
	secrets := k.dyn.Resource(secretsResource).Namespace(k.namespace)
	for range 3 {
		u, err := secrets.Get(ctx, HashKeySecret, metav1.GetOptions{})
		if err == nil {
			enc, _, _ := unstructured.NestedString(u.Object, "data", "key")
			key, err := base64.StdEncoding.DecodeString(enc)
			if err != nil || len(key) < 16 {
				return nil, fmt.Errorf("Secret %s/%s holds no usable key", k.namespace, HashKeySecret)
			}
			k.hashKey = key
			return key, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading Secret %s/%s: %w", k.namespace, HashKeySecret, err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		_, err = secrets.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{"name": HashKeySecret, "namespace": k.namespace},
			"data":     map[string]any{"key": base64.StdEncoding.EncodeToString(key)},
		}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating Secret %s/%s: %w", k.namespace, HashKeySecret, err)
		}
	}
	return nil, fmt.Errorf("Secret %s/%s: could not read or create it", k.namespace, HashKeySecret)
}

// hasSOPS reports whether any object carries a SOPS document.
func hasSOPS(objs []*unstructured.Unstructured) bool {
	for _, u := range objs {
		for k := range u.GetAnnotations() {
			if k == v1alpha1.AnnotationSOPSDocument || strings.HasPrefix(k, v1alpha1.AnnotationSOPSGeneratedPrefix) {
				return true
			}
		}
	}
	return false
}

// decryptSOPS replaces, in place, every object that carries a SOPS
// document with its decrypted values: every top-level field of the
// document but apiVersion, kind, metadata and sops replaces the rendered
// object's, whose metadata (as Kustomize or Helm left it) stays. The first
// failure names the object and its file, and nothing is decrypted for the
// caller to use. It returns the objects it decrypted, and the
// installation's key of their inventory hashes (SyncOptions.Decrypted),
// the same whatever identity opened them.
func decryptSOPS(ctx context.Context, keys SOPSKeys, secret string, objs []*unstructured.Unstructured) (map[*unstructured.Unstructured]bool, []byte, error) {
	if !hasSOPS(objs) {
		return nil, nil, nil
	}
	if keys == nil {
		return nil, nil, fmt.Errorf("%w: ferry has no SOPS keys configured", ErrDecrypt)
	}
	ids, err := keys.AgeIdentities(ctx, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	hk, err := keys.HashKey(ctx)
	if err != nil {
		return nil, nil, err
	}
	decrypted := map[*unstructured.Unstructured]bool{}
	for _, u := range objs {
		ann := u.GetAnnotations()
		generated, err := decryptGenerated(u, ids)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s %s: %v", ErrDecrypt, u.GetKind(), objectName(u), err)
		}
		if generated {
			decrypted[u] = true
			ann = u.GetAnnotations()
		}
		enc, ok := ann[v1alpha1.AnnotationSOPSDocument]
		if !ok {
			continue
		}
		what := fmt.Sprintf("%s %s", u.GetKind(), objectName(u))
		if src := ann[v1alpha1.AnnotationSOPSSource]; src != "" {
			what += " from " + src
		}
		doc, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrDecrypt, what, err)
		}
		plain, err := decryptDocument(doc, ids)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrDecrypt, what, err)
		}
		for k, v := range plain {
			switch k {
			case "apiVersion", "kind", "metadata", "sops":
				continue
			}
			u.Object[k] = v
		}
		delete(u.Object, "sops")
		delete(ann, v1alpha1.AnnotationSOPSDocument)
		delete(ann, v1alpha1.AnnotationSOPSSource)
		u.SetAnnotations(ann)
		if len(ann) == 0 {
			unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
		}
		decrypted[u] = true
	}
	return decrypted, hk, nil
}

func objectName(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return ns + "/" + u.GetName()
	}
	return u.GetName()
}

// decryptDocument decrypts one SOPS YAML document with age identities and
// checks its MAC, as `sops decrypt` does.
func decryptDocument(doc []byte, ids sopsage.ParsedIdentities) (map[string]any, error) {
	out, err := decryptFile(sopsyaml.NewStore(&config.YAMLStoreConfig{}), doc, ids)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(out)
	if err != nil {
		return nil, fmt.Errorf("reading the decrypted document: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("the decrypted document is not a mapping: %v", err)
	}
	return m, nil
}

// decryptFile decrypts a SOPS file in store's format and returns it in
// plain text, in the same format.
func decryptFile(store sops.Store, doc []byte, ids sopsage.ParsedIdentities) ([]byte, error) {
	tree, err := store.LoadEncryptedFile(doc)
	if err != nil {
		return nil, fmt.Errorf("reading the SOPS document: %v", err)
	}
	if len(tree.Metadata.KeyGroups) > 1 {
		return nil, errors.New("the document splits its data key over key groups (Shamir), which ferry does not read")
	}
	dataKey, err := ageDataKey(tree, ids)
	if err != nil {
		return nil, err
	}
	cipher := aes.NewCipher()
	mac, err := tree.Decrypt(dataKey, cipher)
	if err != nil {
		return nil, fmt.Errorf("decrypting its values: %v", err)
	}
	fileMAC, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, dataKey, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("reading its MAC: %v", err)
	}
	if fileMAC != mac {
		return nil, errors.New("MAC mismatch: the file was changed after it was encrypted")
	}
	out, err := store.EmitPlainFile(tree.Branches)
	if err != nil {
		return nil, fmt.Errorf("writing the decrypted document: %v", err)
	}
	return out, nil
}

// storeFor returns the SOPS store of a generated file's format.
func storeFor(format string) (sops.Store, error) {
	switch format {
	case "dotenv":
		return dotenv.NewStore(&config.DotenvStoreConfig{}), nil
	case "json":
		return sopsjson.NewStore(&config.JSONStoreConfig{}), nil
	case "yaml":
		return sopsyaml.NewStore(&config.YAMLStoreConfig{}), nil
	case "binary":
		return sopsjson.NewBinaryStore(&config.JSONBinaryStoreConfig{}), nil
	}
	return nil, fmt.Errorf("unknown SOPS file format %q", format)
}

// decryptGenerated fills the data of a Secret a Kustomize secretGenerator
// made from SOPS-encrypted files, from the files its annotations carry, and
// removes the annotations and the placeholders.
func decryptGenerated(u *unstructured.Unstructured, ids sopsage.ParsedIdentities) (bool, error) {
	ann := u.GetAnnotations()
	var names []string
	for k := range ann {
		if strings.HasPrefix(k, v1alpha1.AnnotationSOPSGeneratedPrefix) {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return false, nil
	}
	sort.Strings(names)
	data, _, _ := unstructured.NestedStringMap(u.Object, "data")
	if data == nil {
		data = map[string]string{}
	}
	for k := range data {
		if strings.HasPrefix(k, v1alpha1.SOPSPlaceholderPrefix) {
			delete(data, k)
		}
	}
	for _, name := range names {
		raw, err := base64.StdEncoding.DecodeString(ann[name])
		if err != nil {
			return false, fmt.Errorf("%s: %v", name, err)
		}
		var g v1alpha1.SOPSGenerated
		if err := json.Unmarshal(raw, &g); err != nil {
			return false, fmt.Errorf("%s: %v", name, err)
		}
		store, err := storeFor(g.Format)
		if err != nil {
			return false, fmt.Errorf("%s: %v", g.File, err)
		}
		plain, err := decryptFile(store, g.Document, ids)
		if err != nil {
			return false, fmt.Errorf("%s: %v", g.File, err)
		}
		if g.Kind == "files" {
			data[g.Key] = base64.StdEncoding.EncodeToString(plain)
			continue
		}
		for _, line := range strings.Split(string(plain), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return false, fmt.Errorf("%s: a dotenv line without \"=\"", g.File)
			}
			data[k] = base64.StdEncoding.EncodeToString([]byte(v))
		}
	}
	for _, name := range names {
		delete(ann, name)
	}
	u.SetAnnotations(ann)
	if len(ann) == 0 {
		unstructured.RemoveNestedField(u.Object, "metadata", "annotations")
	}
	if err := unstructured.SetNestedStringMap(u.Object, data, "data"); err != nil {
		return false, err
	}
	return true, nil
}

// ageDataKey decrypts the document's data key with the first age
// recipient one of ids opens.
func ageDataKey(tree sops.Tree, ids sopsage.ParsedIdentities) ([]byte, error) {
	var recipients []string
	for _, group := range tree.Metadata.KeyGroups {
		for _, k := range group {
			mk, ok := k.(*sopsage.MasterKey)
			if !ok {
				continue
			}
			recipients = append(recipients, mk.Recipient)
			if len(ids) == 0 {
				continue
			}
			// A copy: the tree's key must not keep the identities.
			key := *mk
			ids.ApplyToMasterKey(&key)
			if dk, err := key.Decrypt(); err == nil {
				return dk, nil
			}
		}
	}
	if len(recipients) == 0 {
		return nil, errors.New("the document has no age recipient; ferry decrypts with age keys only")
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no age key is configured (Secret %s, or --sops-age-key-file); the document is for %s", DefaultSOPSSecret, strings.Join(recipients, ", "))
	}
	return nil, fmt.Errorf("none of the %d configured age keys opens it; the document is for %s", len(ids), strings.Join(recipients, ", "))
}
