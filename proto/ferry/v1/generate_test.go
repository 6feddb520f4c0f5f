package ferryv1_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the Go code into a temporary folder
// and fails when the committed ferry.pb.go differs, so a .proto edit cannot
// land without `go tool task generate`.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc is required to check the generated code: apt-get install protobuf-compiler (go tool task deps does this)")
	}
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", "../../generate.sh")
	cmd.Env = append(os.Environ(), "OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}
	want, err := os.ReadFile(filepath.Join(out, "ferry", "v1", "ferry.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("ferry.pb.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Fatal("proto/ferry/v1/ferry.pb.go is stale: run `go tool task generate` and commit the result")
	}
}
