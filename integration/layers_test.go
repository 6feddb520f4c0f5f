package integration

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/integration/testenv"
)

// floors are DESIGN.md's layers: a package may import only ferry packages
// on a lower floor. worker, render and apply share a floor and never import
// one another.
var floors = map[string]int{
	"proto":  1,
	"worker": 2, "render": 2, "apply": 2,
	"ingest": 3,
	"cmd":    4,
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
		from, ok := floors[room(pkg)]
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
			to := floors[room(imp)]
			if room(imp) != room(pkg) && to >= from {
				t.Errorf("%s (floor %d) imports %s (floor %d): imports run down a floor only", pkg, from, imp, to)
			}
		}
	}
	if checked < 8 {
		t.Fatalf("checked %d packages; the listing looks wrong:\n%s", checked, out)
	}
}
