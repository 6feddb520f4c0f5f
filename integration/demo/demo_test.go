package demo

import (
	"bytes"
	"strings"
	"testing"
)

func TestDemoBumpsTheImageTag(t *testing.T) {
	var out bytes.Buffer
	res, err := Run(t.Context(), Options{Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", Out: &out, Log: t.Output()})
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.ToImage != newImage || res.Revision == "" || res.TraceID == "" || strings.Join(res.SecretKeys, ", ") != "password (28 bytes), username (5 bytes)" {
		t.Fatalf("unexpected result %+v", res)
	}
	for _, want := range []string{"deployment/blog image in the cluster: " + newImage, "Deployment", "stopped cleanly"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
}
