package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/wake"
)

func wolCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:  "wol",
		Usage: "Send Wake-on-LAN magic packets, or watch for them",
		Subcommands: []*cli.Command{
			{
				Name:  "send",
				Usage: "Send a burst of magic packets to a host from the inventory, or to a MAC",
				Description: "Without --to, packets go to the host's wol_to addresses, or else to port 9 of the\n" +
					"directed broadcast of the interface whose network holds the host's address\n" +
					"(and as raw Ethernet frames on wol_interface or --iface). A magic packet is\n" +
					"never acknowledged: check with `gpuctl wol listen` on another machine.",
				ArgsUsage: "HOST|MAC",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "to", Usage: "send to `IP:PORT` (such as 192.168.1.255:9) instead of wol_to or the directed broadcast; repeatable"},
					&cli.StringFlag{Name: "iface", Usage: "also send raw Ethernet frames (EtherType 0x0842) on interface `IF`; needs CAP_NET_RAW"},
					&cli.IntFlag{Name: "count", Value: wake.DefaultCount, Usage: "send `N` packets to each target"},
					&cli.DurationFlag{Name: "interval", Value: wake.DefaultInterval, Usage: "wait `DURATION` between packets"},
				},
				Action: func(c *cli.Context) error {
					a, err := args(c, 1, 1, "HOST or MAC")
					if err != nil {
						return err
					}
					return runWOLSend(c.Context, env, c, wolSendOpts{
						target: a[0], to: c.StringSlice("to"), iface: c.String("iface"),
						count: c.Int("count"), interval: c.Duration("interval"),
					})
				},
			},
			{
				Name:  "listen",
				Usage: "Print every magic packet that arrives, until interrupted",
				Description: "Run it on a second machine on the PC's network when a wake does nothing.\n" +
					"--iface sees every frame on the interface, as the PC's NIC would: magic\n" +
					"packets in UDP and in EtherType 0x0842 frames alike. SecureOn passwords are\n" +
					"never printed, only whether one was present.",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "udp", Usage: "listen for UDP on `ADDR` (default :9 unless --iface is given); repeatable"},
					&cli.StringFlag{Name: "iface", Usage: "listen for raw frames on interface `IF`; needs CAP_NET_RAW"},
					jsonFlag,
				},
				Action: func(c *cli.Context) error {
					if _, err := args(c, 0, 0, ""); err != nil {
						return err
					}
					return runWOLListen(c.Context, env, wolListenOpts{
						udp: c.StringSlice("udp"), iface: c.String("iface"), json: c.Bool("json"),
					})
				},
			},
		},
	}
}

type wolSendOpts struct {
	target   string
	to       []string
	iface    string
	count    int
	interval time.Duration
}

func runWOLSend(ctx context.Context, env *Env, c *cli.Context, o wolSendOpts) error {
	if o.count < 1 || o.count > 1000 {
		return usageError("--count %d: give a number from 1 to 1000", o.count)
	}
	if o.interval < 0 || o.interval > time.Minute {
		return usageError("--interval %s: give a duration from 0s to 1m", o.interval)
	}
	var to []inventory.HostPort
	for _, s := range o.to {
		hp, err := inventory.ParseHostPort(s)
		if err != nil {
			return usageError("--to %v", err)
		}
		if _, ok := hp.Addr(); !ok {
			return usageError("--to %q: give an IP address, not a name (a sleeping host answers no DNS)", s)
		}
		to = append(to, hp)
	}

	host, err := wolHost(c, env, o.target)
	if err != nil {
		return err
	}
	h := *host
	if len(to) > 0 {
		h.WOLTo = to
	}
	if o.iface != "" {
		h.WOLInterface = o.iface
	}
	if h.Address == "" && len(h.WOLTo) == 0 && h.WOLInterface == "" {
		return usageError("no host in the inventory has MAC %s, so gpuctl does not know its network; give --to IP:PORT (the broadcast address of the PC's network, such as 192.168.1.255:9) or --iface IF", h.MAC)
	}

	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	plan, err := wake.NewPlan(pctx, &h)
	cancel()
	if err != nil {
		return withCode(ExitFailure, err)
	}
	plan.Logger = env.Logger
	for _, t := range plan.Targets {
		fmt.Fprintf(env.Stderr, "sending %d magic packets for %s (%s) to %s (%s)\n", o.count, h.Name, h.MAC, t, t.Why)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Duration(o.count)*o.interval+10*time.Second)
	defer cancel()
	sent, err := plan.Burst(sctx, o.count, o.interval)
	if sent == 0 {
		if err == nil {
			err = errors.New("no packet was sent")
		}
		return withCode(ExitFailure, err)
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "gpuctl: warning: %v\n", err)
	}
	fmt.Fprintf(env.Stderr, "sent %d magic packets for %s; nothing acknowledges them (check with `gpuctl wol listen` on another machine)\n", sent, h.Name)
	return nil
}

// wolHost resolves HOST|MAC: an inventory host by name, or a host of the
// inventory with that MAC, or a bare MAC (no inventory needed).
func wolHost(c *cli.Context, env *Env, arg string) (*inventory.Host, error) {
	mac, macErr := inventory.ParseMAC(arg)
	if macErr != nil {
		inv, err := loadInventory(c, env)
		if err != nil {
			return nil, err
		}
		h, err := inv.host(arg)
		if err != nil {
			return nil, usageError("%q is neither a MAC address nor a host in %s (hosts: %s)", arg, inv.Path, strings.Join(inv.HostNames(), ", "))
		}
		if h.MAC.IsZero() {
			return nil, usageError("host %s has no mac in %s, so it cannot be woken; add mac = \"aa:bb:cc:dd:ee:ff\" to its [[host]] table", h.Name, inv.Path)
		}
		return h, nil
	}
	inv, err := loadInventory(c, env)
	switch {
	case errors.Is(err, inventory.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		for i := range inv.Hosts {
			if inv.Hosts[i].MAC == mac {
				return &inv.Hosts[i], nil
			}
		}
	}
	return &inventory.Host{Name: mac.String(), MAC: mac}, nil
}

type wolListenOpts struct {
	udp   []string
	iface string
	json  bool
}

func runWOLListen(ctx context.Context, env *Env, o wolListenOpts) error {
	if len(o.udp) == 0 && o.iface == "" {
		o.udp = []string{":9"}
	}
	var (
		ls    []*wake.Listener
		where []string
	)
	closeAll := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, a := range o.udp {
		l, err := wake.ListenUDP(a)
		if err != nil {
			closeAll()
			return withCode(ExitFailure, err)
		}
		ls = append(ls, l)
		where = append(where, "udp "+l.Addr().String())
	}
	if o.iface != "" {
		l, err := wake.ListenRaw(o.iface)
		if err != nil {
			closeAll()
			return withCode(ExitFailure, err)
		}
		ls = append(ls, l)
		where = append(where, "every frame on "+o.iface)
	}

	var mu sync.Mutex
	enc := json.NewEncoder(env.Stdout)
	print := func(s wake.Seen) {
		mu.Lock()
		defer mu.Unlock()
		if o.json {
			_ = enc.Encode(s)
			return
		}
		fmt.Fprintf(env.Stdout, "%s %s\n", s.Time.Format("2006-01-02T15:04:05.000Z07:00"), s)
	}
	invalid := func(from string, err error) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(env.Stderr, "gpuctl: ignored a malformed magic packet from %s: %v\n", from, err)
	}
	fmt.Fprintf(env.Stderr, "listening for magic packets on %s (Ctrl-C to stop)\n", strings.Join(where, ", "))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(ls))
	for _, l := range ls {
		l.OnInvalid = invalid
		go func() {
			err := l.Serve(ctx, print)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var first error
	for range ls {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return withCode(ExitFailure, first)
}
