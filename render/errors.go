package render

import (
	"errors"
	"fmt"
)

// SourceError is a failure caused by the app's sources: a missing path or
// revision, invalid YAML, an escape from the repository. Retrying does not
// help unless Transient is set (a network failure while fetching).
type SourceError struct {
	Err       error
	Transient bool
}

func (e *SourceError) Error() string { return e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// IsTransient reports whether err is worth retrying: a transient source
// error, or any error that is not a SourceError at all. An error render
// does not recognise is transient, as in apply.IsTransient: retrying it
// costs a backoff, giving up on it could lose a revision.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var se *SourceError
	if errors.As(err, &se) {
		return se.Transient
	}
	return true
}

// AppError names the app and source a render failure belongs to.
type AppError struct {
	App    string // namespace/name
	Source int    // index into the app's sources; -1 when no one source failed
	// Where describes the source: its repository (without credentials) and
	// path or chart. Empty when the failure is not about one source.
	Where string
	Err   error
}

func (e *AppError) Error() string {
	if e.Source < 0 {
		return fmt.Sprintf("app %s: %v", e.App, e.Err)
	}
	if e.Where != "" {
		return fmt.Sprintf("app %s: source %d (%s): %v", e.App, e.Source, e.Where, e.Err)
	}
	return fmt.Sprintf("app %s: source %d: %v", e.App, e.Source, e.Err)
}
func (e *AppError) Unwrap() error { return e.Err }

// ErrEmptyRender is wrapped when an app renders no objects and does not
// allow that.
var ErrEmptyRender = errors.New("render produced no objects")

// ErrOutsideRepository is wrapped by the error for any path that leaves the
// repository, through ".." or a symbolic link.
var ErrOutsideRepository = errors.New("path leaves the repository")

// ErrLimitExceeded is wrapped when a render passes one of its caps: input
// bytes, output bytes or objects.
var ErrLimitExceeded = errors.New("render limit exceeded")

// ErrInvalidOption is wrapped by the errors of invalid constructor options.
var ErrInvalidOption = errors.New("invalid option")
