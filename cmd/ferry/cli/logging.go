package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrycd/ferry/worker"
)

// newLogger returns ferry's logger: JSON, or text when w is a terminal, at
// level, with every line of a traced call carrying trace_id and span_id and
// every line of a job carrying app and revision.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(contextHandler{h}), nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// contextHandler adds what the context knows of the call to each record.
type contextHandler struct{ slog.Handler }

func (h contextHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	if a, ok := worker.LogAttrsFrom(ctx); ok {
		// Lines that name the app or revision themselves keep their own.
		var hasApp, hasRev bool
		r.Attrs(func(at slog.Attr) bool {
			hasApp = hasApp || at.Key == "app"
			hasRev = hasRev || at.Key == "revision"
			return true
		})
		if !hasApp {
			r.AddAttrs(slog.String("app", a.App))
		}
		if !hasRev && a.Revision != "" {
			r.AddAttrs(slog.String("revision", a.Revision))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h contextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return contextHandler{h.Handler.WithAttrs(as)}
}

func (h contextHandler) WithGroup(name string) slog.Handler {
	return contextHandler{h.Handler.WithGroup(name)}
}
