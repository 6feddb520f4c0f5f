package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferrycd/ferry/integration/demo"
	"github.com/ferrycd/ferry/render"
)

func main() {
	// ferry's renders run in processes started from this binary.
	render.RunRenderProcess()
	listen := flag.String("listen", "127.0.0.1:8080", "ferry's webhook address")
	apiListen := flag.String("api-listen", "127.0.0.1:8081", "ferry's API address")
	exit := flag.Bool("exit", false, "stop after the image-tag bump instead of running until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := demo.Run(ctx, demo.Options{Listen: *listen, APIListen: *apiListen, Stay: !*exit, Out: os.Stdout, Log: os.Stderr}); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
