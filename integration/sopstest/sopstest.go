// Package sopstest encrypts test fixtures with SOPS and a throwaway age
// key, with the sops Go library: there is no sops CLI in the tests, and no
// private key that matters in the repository.
package sopstest

import (
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/stores/dotenv"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
)

// Key is an age key pair made for one test.
type Key struct {
	// Identity is the private key, as an age key file holds it.
	Identity string
	// Recipient is the public key.
	Recipient string
}

// NewKey generates an age key.
func NewKey(t testing.TB) Key {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Identity: id.String(), Recipient: id.Recipient().String()}
}

// Encrypt encrypts a plaintext YAML document for k, as `sops encrypt
// --age <recipient> --encrypted-regex '^(data|stringData)$'` does.
func Encrypt(t testing.TB, plain string, k Key) string {
	t.Helper()
	return encrypt(t, sopsyaml.NewStore(&config.YAMLStoreConfig{}), []byte(plain), k, "^(data|stringData)$")
}

// EncryptDotenv encrypts a dotenv file for k, as `sops encrypt --age
// <recipient> app.env` does.
func EncryptDotenv(t testing.TB, plain string, k Key) string {
	t.Helper()
	return encrypt(t, dotenv.NewStore(&config.DotenvStoreConfig{}), []byte(plain), k, "")
}

// EncryptBinary encrypts any bytes for k, as `sops encrypt --input-type
// binary` does.
func EncryptBinary(t testing.TB, plain []byte, k Key) string {
	t.Helper()
	return encrypt(t, sopsjson.NewBinaryStore(&config.JSONBinaryStoreConfig{}), plain, k, "")
}

func encrypt(t testing.TB, store sops.Store, plain []byte, k Key, encryptedRegex string) string {
	t.Helper()
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := sopsage.MasterKeyFromRecipient(k.Recipient)
	if err != nil {
		t.Fatal(err)
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups:      []sops.KeyGroup{{mk}},
		EncryptedRegex: encryptedRegex,
		Version:        "3.13.3",
	}}
	dataKey, errs := tree.GenerateDataKey()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		t.Fatal(err)
	}
	tree.Metadata.LastModified = time.Now().UTC()
	if tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
