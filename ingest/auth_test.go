package ingest_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferrycd/ferry/ingest"
)

func TestAuthorizer(t *testing.T) {
	both := ingest.NewAuthorizer([]byte("admin"), []byte("reader"), false)
	anonymous := ingest.NewAuthorizer([]byte("admin"), []byte("reader"), true)
	noAdmin := ingest.NewAuthorizer(nil, []byte("reader"), false)
	cases := []struct {
		name   string
		auth   *ingest.Authorizer
		mutate bool
		token  string
		status int // 0: allowed
		code   string
	}{
		{"lets the read-only token read", both, false, "reader", 0, ""},
		{"lets the admin token read", both, false, "admin", 0, ""},
		{"refuses a read without a token", both, false, "", 401, `"unauthorized"`},
		{"refuses a read with a wrong token", both, false, "readerX", 401, `"unauthorized"`},
		{"lets anyone read with anonymous reads on", anonymous, false, "", 0, ""},
		{"lets the admin token mutate", both, true, "admin", 0, ""},
		{"forbids the read-only token to mutate", both, true, "reader", 403, `"forbidden"`},
		{"refuses a mutation without a token", both, true, "", 401, `"unauthorized"`},
		{"refuses an anonymous mutation even with anonymous reads on", anonymous, true, "", 401, `"unauthorized"`},
		{"refuses every mutation without an admin token", noAdmin, true, "reader", 403, `"mutations_disabled"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/v1/apps", nil)
			if c.token != "" {
				r.Header.Set("Authorization", "Bearer "+c.token)
			}
			w := httptest.NewRecorder()
			check := c.auth.Read
			if c.mutate {
				check = c.auth.Mutate
			}
			ok := check(w, r)
			if c.status == 0 {
				if !ok {
					t.Fatalf("refused: %d %s", w.Code, w.Body)
				}
				return
			}
			if ok || w.Code != c.status || !strings.Contains(w.Body.String(), c.code) {
				t.Fatalf("got allowed=%v %d %s, want %d with %s", ok, w.Code, w.Body, c.status, c.code)
			}
			if c.status == 401 && w.Header().Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
		})
	}
}
