package integration

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/integration/testenv"
)

// mayImport is DESIGN.md's layers, room by room: the ferry rooms each may
// import. worker, render and apply share a floor and never import one
// another; ingest publishes and consumes through worker and reaches render
// and apply only through the wiring in cmd, which may import anything.
var mayImport = map[string][]string{
	"proto":  {"proto"},
	"worker": {"proto", "worker"},
	"render": {"proto", "render"},
	"apply":  {"proto", "apply"},
	"ingest": {"proto", "worker", "ingest"},
	"cmd":    {"proto", "worker", "render", "apply", "ingest", "cmd"},
}

// room is the top folder of a ferry package: proto, worker, ... .
func room(pkg string) string {
	rest := strings.TrimPrefix(pkg, "github.com/ferrycd/ferry/")
	top, _, _ := strings.Cut(rest, "/")
	return top
}

func TestLayers(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		allowed, ok := mayImport[room(pkg)]
		if !ok {
			continue // integration and the like may import anything
		}
		checked++
		for _, imp := range imports {
			if !strings.HasPrefix(imp, "github.com/ferrycd/ferry/") {
				if room(pkg) == "proto" && strings.HasPrefix(imp, "k8s.io/client-go") {
					t.Errorf("%s imports %s: the API types stay free of client-go", pkg, imp)
				}
				continue
			}
			if !slices.Contains(allowed, room(imp)) {
				t.Errorf("%s imports %s: DESIGN.md lets %s import only %v", pkg, imp, room(pkg), allowed)
			}
		}
	}
	if checked < 8 {
		t.Fatalf("checked %d packages; the listing looks wrong:\n%s", checked, out)
	}
}
