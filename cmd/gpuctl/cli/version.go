package cli

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func versionCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "Print gpuctl's version and build details",
		ArgsUsage: " ",
		Flags:     []cli.Flag{jsonFlag},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			v := map[string]string{"version": env.Version, "go": runtime.Version(), "platform": runtime.GOOS + "/" + runtime.GOARCH}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v["commit"] = s.Value
					}
				}
			}
			if c.Bool("json") {
				return json.NewEncoder(env.Stdout).Encode(v)
			}
			fmt.Fprintf(env.Stdout, "gpuctl %s (%s, %s)\n", v["version"], v["go"], v["platform"])
			return nil
		},
	}
}
