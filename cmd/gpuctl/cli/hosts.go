package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func hostsCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "hosts",
		Usage:     "List the hosts in the inventory",
		ArgsUsage: " ",
		Flags:     []cli.Flag{jsonFlag},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, ""); err != nil {
				return err
			}
			return runHosts(c.Context, env, c, c.Bool("json"))
		},
	}
}

// hostJSON is the `gpuctl hosts --json` record of one host.
type hostJSON struct {
	Name        string   `json:"name"`
	OnDemand    bool     `json:"on_demand"`
	Address     string   `json:"address"`
	MAC         string   `json:"mac,omitempty"`
	SSH         string   `json:"ssh"`
	OllamaURL   string   `json:"ollama_url"`
	VRAMBytes   uint64   `json:"vram_bytes,omitempty"`
	Models      []string `json:"models"`
	BootTimeout string   `json:"boot_timeout"`
	IdleAfter   string   `json:"idle_after"`
	Default     bool     `json:"default"`
}

func runHosts(_ context.Context, env *Env, c *cli.Context, asJSON bool) error {
	inv, err := loadInventory(c, env)
	if err != nil {
		return err
	}
	var out []hostJSON
	for _, h := range inv.Hosts {
		j := hostJSON{
			Name: h.Name, OnDemand: h.OnDemand, Address: h.Address,
			SSH:       h.SSHUser + "@" + h.SSHAddr(),
			OllamaURL: h.OllamaURL.String(), VRAMBytes: uint64(h.VRAM),
			Models: []string{}, BootTimeout: h.BootTimeout.String(), IdleAfter: h.IdleAfter.String(),
			Default: h.Name == inv.Serve.DefaultHost,
		}
		if !h.MAC.IsZero() {
			j.MAC = h.MAC.String()
		}
		for _, m := range h.Models {
			j.Models = append(j.Models, m.String())
		}
		out = append(out, j)
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tADDRESS\tMAC\tVRAM\tMODELS")
	for i, j := range out {
		kind := "always-on"
		if j.OnDemand {
			kind = "on-demand"
		}
		if j.Default {
			kind += " (default)"
		}
		mac, vram := j.MAC, "-"
		if mac == "" {
			mac = "-"
		}
		if inv.Hosts[i].VRAM > 0 {
			vram = inv.Hosts[i].VRAM.String()
		}
		models := strings.Join(j.Models, ",")
		if models == "" {
			models = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.Name, kind, j.Address, mac, vram, models)
	}
	return tw.Flush()
}
