// Command gpuctl wakes an on-demand GPU box, checks it over SSH, keeps its
// Ollama models pulled, routes heavy requests to it and powers it off when idle.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ollamalive/gpuctl/cmd/gpuctl/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "devel"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, cli.OSEnv(version), os.Args)
	stop()
	os.Exit(code)
}
