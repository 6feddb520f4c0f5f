package apply

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func secret(name, password string) string {
	return "apiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name + "\nstringData:\n  password: " + password + "\n  user: admin\n"
}

func TestDiff(t *testing.T) {
	a, log := newApplier(t)
	ns := newNamespace(t)
	opts := SyncOptions{App: inventoryNS + "/" + ns, Namespace: ns, Prune: true}
	mustSync(t, a, opts, objects(t,
		configMap("cfg", map[string]string{"level": "info"}, nil), configMap("same", nil, nil),
		configMap("gone", nil, nil), secret("creds", "old-secret-value")))

	log.reset()
	diffs, err := a.Diff(t.Context(), opts, objects(t,
		configMap("cfg", map[string]string{"level": "debug"}, nil), configMap("same", nil, nil),
		configMap("added", nil, nil), secret("creds", "new-secret-value")))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range log.writes() {
		if !strings.HasSuffix(w, "?dryRun") {
			t.Errorf("Diff wrote: %s", w)
		}
	}
	got := map[string]DiffAction{}
	for _, d := range diffs {
		got[d.Ref.String()] = d.Action
	}
	want := map[string]DiffAction{
		"ConfigMap/" + ns + "/cfg": DiffUpdate, "ConfigMap/" + ns + "/added": DiffCreate,
		"Secret/" + ns + "/creds": DiffUpdate, "ConfigMap/" + ns + "/gone": DiffPrune,
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("diffed objects (-want +got):\n%s", d)
	}
	byRef := map[string]string{}
	for _, d := range diffs {
		byRef[d.Ref.String()] = d.Diff
	}
	cfg := byRef["ConfigMap/"+ns+"/cfg"]
	if !strings.Contains(cfg, "-  level: info\n") || !strings.Contains(cfg, "+  level: debug\n") {
		t.Errorf("ConfigMap diff does not show the change:\n%s", cfg)
	}
	sec := byRef["Secret/"+ns+"/creds"]
	for _, plain := range []string{"old-secret-value", "new-secret-value", "admin"} {
		if strings.Contains(sec, plain) || strings.Contains(sec, base64.StdEncoding.EncodeToString([]byte(plain))) {
			t.Errorf("Secret diff leaks %q:\n%s", plain, sec)
		}
	}
	if !strings.Contains(sec, "-  password: ++++++++ (before)") || !strings.Contains(sec, "+  password: ++++++++ (after)") ||
		!strings.Contains(sec, "   user: ++++++++\n") {
		t.Errorf("Secret diff does not show which keys changed:\n%s", sec)
	}
	t.Logf("Secret diff:\n%s", sec)
}
