package controller

import (
	"os/exec"

	"github.com/ollamalive/gpuctl/inventory"
)

func runLocal(args []string) ([]byte, error) {
	return exec.Command(args[0], args[1:]...).CombinedOutput()
}

func toModels(names ...string) []inventory.ModelName {
	out := make([]inventory.ModelName, len(names))
	for i, n := range names {
		out[i] = inventory.ModelName(n)
	}
	return out
}
