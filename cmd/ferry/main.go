// Command ferry is ferry's one binary: `ferry serve` runs the whole pipeline
// with an embedded NATS server, and the other verbs are its CLI.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferrycd/ferry/cmd/ferry/cli"
	"github.com/ferrycd/ferry/render"
)

func main() {
	// Started as a render process, this binary renders and exits here.
	render.RunRenderProcess()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
