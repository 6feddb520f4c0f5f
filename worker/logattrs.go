package worker

import "context"

type logKey struct{}

// LogAttrs are the attributes every log line of one job carries.
type LogAttrs struct {
	App      string
	Revision string
}

// WithLogAttrs returns ctx carrying a, for the log handler set up in cmd.
func WithLogAttrs(ctx context.Context, a LogAttrs) context.Context {
	return context.WithValue(ctx, logKey{}, a)
}

// LogAttrsFrom returns the attributes WithLogAttrs stored in ctx.
func LogAttrsFrom(ctx context.Context) (LogAttrs, bool) {
	a, ok := ctx.Value(logKey{}).(LogAttrs)
	return a, ok
}
