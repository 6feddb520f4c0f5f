package job

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	cases := []struct {
		name string
		b    Backoff
		n    int
		want time.Duration
	}{
		{"the first try waits First", Backoff{First: time.Second, Factor: 2, Max: time.Minute}, 1, time.Second},
		{"each try doubles", Backoff{First: time.Second, Factor: 2, Max: time.Minute}, 4, 8 * time.Second},
		{"capped at Max", Backoff{First: time.Second, Factor: 2, Max: time.Minute}, 10, time.Minute},
		{"a try before the first halves", Backoff{First: 2 * time.Second, Factor: 2, Max: time.Minute}, 0, time.Second},
		{"no cap without Max", Backoff{First: time.Second, Factor: 2}, 11, 1024 * time.Second},
		{"a factor of 3", Backoff{First: 2 * time.Second, Factor: 3, Max: time.Hour}, 3, 18 * time.Second},
		{"huge tries do not overflow", Backoff{First: time.Second, Factor: 2}, 200, time.Duration(1<<63 - 1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.b.Delay(c.n); got != c.want {
				t.Errorf("%+v.Delay(%d) = %s, want %s", c.b, c.n, got, c.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	base := errors.New("boom")
	t.Run("terminal wraps and is found through wrapping", func(t *testing.T) {
		err := fmt.Errorf("outer: %w", Terminal(base))
		if !IsTerminal(err) || !errors.Is(err, base) {
			t.Fatalf("IsTerminal=%v Is(base)=%v", IsTerminal(err), errors.Is(err, base))
		}
		if _, ok := RetryDelay(err); ok {
			t.Fatal("a terminal error asks for a retry")
		}
	})
	t.Run("retry after carries its delay", func(t *testing.T) {
		err := RetryAfter(base, 3*time.Second)
		d, ok := RetryDelay(err)
		if !ok || d != 3*time.Second || IsTerminal(err) || !errors.Is(err, base) {
			t.Fatalf("RetryDelay = %s, %v; terminal %v", d, ok, IsTerminal(err))
		}
	})
	t.Run("nil stays nil", func(t *testing.T) {
		if Terminal(nil) != nil || RetryAfter(nil, time.Second) != nil {
			t.Fatal("wrapping nil made an error")
		}
	})
	t.Run("attempt defaults to the first", func(t *testing.T) {
		if n := Attempt(context.Background()); n != 1 {
			t.Fatalf("Attempt = %d", n)
		}
		if n := Attempt(WithAttempt(context.Background(), 4)); n != 4 {
			t.Fatalf("Attempt = %d", n)
		}
	})
}
