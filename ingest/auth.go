package ingest

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Authorizer checks the bearer token of API calls. There are two tokens: the
// admin token may read and mutate, the read-only token may only read. Both
// the read API and the mutating handlers ask the same Authorizer, so the
// rules live in one place.
type Authorizer struct {
	admin         []byte
	read          []byte
	anonymousRead bool
}

// NewAuthorizer returns an Authorizer. An empty admin token disables
// mutations; reads need either token unless anonymousRead is set.
func NewAuthorizer(admin, read []byte, anonymousRead bool) *Authorizer {
	return &Authorizer{admin: admin, read: read, anonymousRead: anonymousRead}
}

// role is what a request's bearer token grants.
type role int

const (
	roleNone role = iota
	roleRead
	roleAdmin
)

// roleOf compares the bearer token with both tokens in constant time. Both
// comparisons always run, so the answer time does not tell which token was
// close.
func (a *Authorizer) roleOf(r *http.Request) role {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return roleNone
	}
	tok := []byte(strings.TrimSpace(got))
	isAdmin := len(a.admin) > 0 && subtle.ConstantTimeCompare(tok, a.admin) == 1
	isRead := len(a.read) > 0 && subtle.ConstantTimeCompare(tok, a.read) == 1
	switch {
	case isAdmin:
		return roleAdmin
	case isRead:
		return roleRead
	}
	return roleNone
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="ferry"`)
	WriteAPIError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
}

// Read checks a reading call. It answers the request itself and returns
// false when the call may not go on.
func (a *Authorizer) Read(w http.ResponseWriter, r *http.Request) bool {
	if a.anonymousRead || a.roleOf(r) != roleNone {
		return true
	}
	unauthorized(w)
	return false
}

// Mutate checks a mutating call: only the admin token may. It answers the
// request itself and returns false when the call may not go on.
func (a *Authorizer) Mutate(w http.ResponseWriter, r *http.Request) bool {
	if len(a.admin) == 0 {
		WriteAPIError(w, http.StatusForbidden, "mutations_disabled", "this ferry has no API token (--api-token-file); mutating calls are disabled")
		return false
	}
	switch a.roleOf(r) {
	case roleAdmin:
		return true
	case roleRead:
		WriteAPIError(w, http.StatusForbidden, "forbidden", "the read-only token may not change anything")
		return false
	}
	unauthorized(w)
	return false
}

// RequireRead wraps h so that it answers only calls that may read.
func (a *Authorizer) RequireRead(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Read(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}
