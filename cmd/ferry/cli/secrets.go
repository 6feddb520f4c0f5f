package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

var secretsResource = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// readTokenSecret reads key "token" of the Secret ref (namespace/name). The
// token never reaches a log or an error.
func readTokenSecret(ctx context.Context, dyn dynamic.Interface, ref string) ([]byte, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--github-token-secret %q: want namespace/name", ref)
	}
	u, err := dyn.Resource(secretsResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", ref, err)
	}
	enc, _, _ := unstructured.NestedString(u.Object, "data", "token")
	b, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return nil, fmt.Errorf("Secret %s has no key %q", ref, "token")
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
