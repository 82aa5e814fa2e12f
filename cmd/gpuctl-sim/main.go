// Command gpuctl-sim runs simulated gaming PCs for gpuctl (see package
// sim), runs the end-to-end demo (`gpuctl-sim demo`, what `make demo` runs),
// and, invoked as nvidia-smi, docker, findmnt, df, sudo, who or ethtool, is
// a simulated box's stand-in command.
package main

import (
	"os"

	"github.com/ollamalive/gpuctl/cmd/gpuctl-sim/sim"
)

func main() {
	os.Exit(sim.Main(os.Args, os.Getenv, os.Stdout, os.Stderr))
}
