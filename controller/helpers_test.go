package controller

import (
	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/inventory"
)

func fx(name string) []byte { return fixtures.Must(name) }

func toModels(names ...string) []inventory.ModelName {
	out := make([]inventory.ModelName, len(names))
	for i, n := range names {
		out[i] = inventory.ModelName(n)
	}
	return out
}
