package demo

import (
	"os"
	"testing"

	"github.com/ferrycd/ferry/render"
)

// TestMain lets this test binary serve as ferry's render processes, which
// ferry starts from its own executable.
func TestMain(m *testing.M) {
	render.RunRenderProcess()
	os.Exit(m.Run())
}
