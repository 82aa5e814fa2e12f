package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ollamalive/gpuctl/cmd/gpuctl/cli"
)

var updateScripts = flag.Bool("update", false, "rewrite testdata/script files with the actual output")

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"gpuctl": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := cli.Run(ctx, cli.OSEnv("test"), os.Args)
			stop()
			os.Exit(code)
		},
	})
}

// TestScripts runs the CLI scripts in testdata/script/*.txtar against the
// real command, built into the test binary.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:           "../../testdata/script",
		UpdateScripts: *updateScripts,
		Setup: func(e *testscript.Env) error {
			e.Setenv("GPUCTL_STATE_DIR", e.WorkDir+"/state")
			e.Setenv("XDG_CONFIG_HOME", e.WorkDir+"/.config")
			return nil
		},
	})
}
