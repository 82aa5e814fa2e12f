package idle

import (
	"context"

	"github.com/ollamalive/gpuctl/inventory"
)

// Evaluate (tests only) checks every idle signal of h once, against the saved idle
// state, without changing anything: what `gpuctl status` and `shutdown
// --dry-run` show. It errors only when h is not a host idle shutdown
// handles or the saved state is unreadable.
func Evaluate(ctx context.Context, d *Deps, h *inventory.Host) (Report, error) {
	prev, err := LoadState(d.StateDir, h.Name)
	if err != nil {
		return Report{}, err
	}
	runner, closer, rep := connect(ctx, d, h)
	if closer != nil {
		defer closer.Close()
	}
	if rep.Box != BoxUp {
		return rep, nil
	}
	return evaluate(ctx, d, h, runner, prev), nil
}
