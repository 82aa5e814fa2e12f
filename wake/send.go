package wake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Defaults for bursts and repeats.
const (
	// DefaultCount is how many packets a burst sends to each target.
	DefaultCount = 3
	// DefaultInterval is the gap between the packets of a burst.
	DefaultInterval = 100 * time.Millisecond
	// DefaultEvery is the gap between bursts of a Sender.
	DefaultEvery = 5 * time.Second
	// sendTimeout bounds one send when the context has no deadline.
	sendTimeout = 2 * time.Second
)

// Transport sends one packet to one target. Net is the real one; tests and
// simulations plug in their own.
type Transport interface {
	Send(ctx context.Context, t Target, payload []byte) error
}

// Net sends over the real network of the calling thread's network
// namespace: UDP with SendUDP, Ethernet with SendEthernet.
var Net Transport = netTransport{}

type netTransport struct{}

func (netTransport) Send(ctx context.Context, t Target, payload []byte) error {
	switch t.Kind {
	case UDP:
		return SendUDP(ctx, t.Addr, t.Device, payload)
	case Ethernet:
		return SendEthernet(ctx, t.Device, payload)
	}
	return fmt.Errorf("unknown target kind %v", t.Kind)
}

// ErrNeedsRaw is wrapped (with os.ErrPermission) by errors from sending or
// listening on raw Ethernet without CAP_NET_RAW.
var ErrNeedsRaw = errors.New("needs CAP_NET_RAW: run as root or `setcap cap_net_raw+ep $(which gpuctl)`")

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(sendTimeout)
}

// checkDestination refuses destinations a magic packet must never go to.
func checkDestination(dst netip.AddrPort) error {
	if !dst.IsValid() || dst.Port() == 0 {
		return fmt.Errorf("sending a magic packet: %q is not an ip:port", dst)
	}
	if a := dst.Addr().Unmap(); a == netip.IPv4Unspecified() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || a == netip.IPv6Unspecified() {
		return fmt.Errorf("sending a magic packet to %s: refusing the limited broadcast/unspecified address, which leaves by the default route; use the directed broadcast of the PC's network", dst)
	}
	return nil
}

// SendUDP sends payload in one UDP datagram to dst from a fresh socket with
// SO_BROADCAST set. With device non-empty the socket is bound to that
// interface (SO_BINDTODEVICE), so a broadcast leaves on it; where binding is
// not permitted (an unprivileged user on a kernel before 5.7) the routing
// table decides instead, which for a directed broadcast picks the same
// interface.
func SendUDP(ctx context.Context, dst netip.AddrPort, device string, payload []byte) error {
	if err := checkDestination(dst); err != nil {
		return err
	}
	network, local := "udp4", "0.0.0.0:0"
	if dst.Addr().Unmap().Is6() {
		network, local = "udp6", "[::]:0"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); e != nil {
				serr = fmt.Errorf("setting SO_BROADCAST: %w", e)
				return
			}
			if device == "" {
				return
			}
			if e := unix.BindToDevice(int(fd), device); e != nil && !errors.Is(e, unix.EPERM) {
				if errors.Is(e, unix.ENODEV) {
					serr = fmt.Errorf("binding to interface %s: no such interface here", device)
				} else {
					serr = fmt.Errorf("binding to interface %s: %w", device, e)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(ctx, network, local)
	if err != nil {
		return fmt.Errorf("sending a magic packet to %s: %w", dst, err)
	}
	defer c.Close()
	uc := c.(*net.UDPConn)
	if err := uc.SetWriteDeadline(deadline(ctx)); err != nil {
		return err
	}
	if _, err := uc.WriteToUDPAddrPort(payload, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())); err != nil {
		return fmt.Errorf("sending a magic packet to %s: %w", dst, err)
	}
	return nil
}

var ethernetBroadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// SendEthernet sends payload as one Ethernet frame with EtherType 0x0842 to
// ff:ff:ff:ff:ff:ff on the named interface. Without CAP_NET_RAW the error
// wraps os.ErrPermission and ErrNeedsRaw.
func SendEthernet(ctx context.Context, device string, payload []byte) error {
	ifi, err := net.InterfaceByName(device)
	if err != nil {
		return fmt.Errorf("raw Ethernet: interface %s: %w", device, err)
	}
	c, err := packet.Listen(ifi, packet.Datagram, EtherType, nil)
	if err != nil {
		return rawError("sending raw Ethernet frames on "+device, err)
	}
	defer c.Close()
	if err := c.SetWriteDeadline(deadline(ctx)); err != nil {
		return err
	}
	if _, err := c.WriteTo(payload, &packet.Addr{HardwareAddr: ethernetBroadcast}); err != nil {
		return rawError("sending a raw Ethernet frame on "+device, err)
	}
	return nil
}

func rawError(what string, err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%s %w (%w)", what, ErrNeedsRaw, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (p *Plan) transport() Transport {
	if p.Transport != nil {
		return p.Transport
	}
	return Net
}

func (p *Plan) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Burst sends n packets (DefaultCount when n < 1) to every target, interval
// apart, round by round, in the calling goroutine (so a caller inside a
// network namespace sends from it). It returns how many packets went out
// and, joined, the first error of each target that failed; sent > 0 with an
// error means some targets were reached. It stops early when ctx ends.
func (p *Plan) Burst(ctx context.Context, n int, interval time.Duration) (int, error) {
	if n < 1 {
		n = DefaultCount
	}
	if len(p.Targets) == 0 {
		return 0, fmt.Errorf("host %s: no targets to send the magic packet to", p.Host)
	}
	payload, err := p.Packet.MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("host %s: %w", p.Host, err)
	}
	tr, log := p.transport(), p.logger()
	failed := make([]error, len(p.Targets))
	sent := 0
	var t *time.Timer
	for round := 0; round < n; round++ {
		if round > 0 && interval > 0 {
			if t == nil {
				t = time.NewTimer(interval)
				defer t.Stop()
			} else {
				t.Reset(interval)
			}
			select {
			case <-ctx.Done():
				return sent, p.burstErr(failed, context.Cause(ctx))
			case <-t.C:
			}
		}
		for i, tg := range p.Targets {
			if err := ctx.Err(); err != nil {
				return sent, p.burstErr(failed, context.Cause(ctx))
			}
			if err := tr.Send(ctx, tg, payload); err != nil {
				if failed[i] == nil {
					failed[i] = err
					log.Warn("magic packet not sent", "host", p.Host, "target", tg.String(), "err", err)
				}
				continue
			}
			sent++
			log.Debug("magic packet sent", "host", p.Host, "mac", p.Packet.Target.String(), "target", tg.String(), "round", round+1)
		}
	}
	return sent, p.burstErr(failed, nil)
}

func (p *Plan) burstErr(failed []error, extra error) error {
	var list []error
	for i, err := range failed {
		if err != nil {
			list = append(list, fmt.Errorf("host %s: %s: %w", p.Host, p.Targets[i], err))
		}
	}
	if extra != nil {
		list = append(list, extra)
	}
	return errors.Join(list...)
}

// Repeat is Sender{Plan: p, Every: every}.Run(ctx): a burst now and one
// every interval until ctx ends.
func (p *Plan) Repeat(ctx context.Context, every time.Duration) error {
	s := Sender{Plan: p, Every: every}
	return s.Run(ctx)
}

// Sender keeps sending bursts on a schedule: the controller runs one while
// it waits for the woken PC to answer SSH, since no magic packet is ever
// acknowledged.
type Sender struct {
	Plan *Plan
	// Every is the gap from one burst's start to the next; DefaultEvery when 0.
	Every time.Duration
	// Count and Interval shape each burst (DefaultCount, DefaultInterval when 0).
	Count    int
	Interval time.Duration
	// OnBurst, when set, is called after every burst with its result.
	OnBurst func(sent int, err error)
}

// Run sends a burst at once and then every s.Every until ctx ends, when it
// returns nil. Failed bursts are logged and reported to OnBurst; they do not
// stop the schedule. Run sends from the calling goroutine.
func (s *Sender) Run(ctx context.Context) error {
	if s.Plan == nil {
		return errors.New("wake.Sender: no Plan")
	}
	every, interval := s.Every, s.Interval
	if every <= 0 {
		every = DefaultEvery
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		sent, err := s.Plan.Burst(ctx, s.Count, interval)
		if ctx.Err() != nil {
			return nil
		}
		if s.OnBurst != nil {
			s.OnBurst(sent, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
