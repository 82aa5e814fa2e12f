package wake

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

// Kind says how a Target is reached.
type Kind int

const (
	// UDP sends the magic packet as the payload of a UDP datagram.
	UDP Kind = iota + 1
	// Ethernet sends it as a bare Ethernet frame (EtherType 0x0842) to
	// ff:ff:ff:ff:ff:ff; it needs CAP_NET_RAW.
	Ethernet
)

func (k Kind) String() string {
	switch k {
	case UDP:
		return "udp"
	case Ethernet:
		return "ethernet"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Target is one place a magic packet is sent to.
type Target struct {
	Kind Kind
	// Addr is the UDP destination (Kind UDP).
	Addr netip.AddrPort
	// Device is the interface: for Ethernet the one the frame leaves on; for
	// UDP, when set, the socket is bound to it (SO_BINDTODEVICE) so the
	// broadcast leaves on that NIC whatever the routing table says.
	Device string
	// Why says where the target came from ("wol_to", "directed broadcast of
	// eth0 192.168.1.10/23", "wol_interface").
	Why string
}

func (t Target) String() string {
	switch t.Kind {
	case UDP:
		if t.Device != "" {
			return "udp " + t.Addr.String() + " via " + t.Device
		}
		return "udp " + t.Addr.String()
	case Ethernet:
		return "ethernet ff:ff:ff:ff:ff:ff on " + t.Device
	}
	return t.Kind.String()
}

// Plan is how one host is woken: the packet and every target it goes to.
// Build one with NewPlan (or Planner.Plan), then call Burst or Repeat.
type Plan struct {
	// Host is the inventory name, or the MAC when there is none.
	Host    string
	Packet  MagicPacket
	Targets []Target
	// Transport sends the packets; nil means the real network (Net).
	Transport Transport
	// Logger gets one debug line per packet and a warning per failed send;
	// nil discards. It never sees the SecureOn password.
	Logger *slog.Logger
}

// Interface is a network interface as the planner sees it.
type Interface struct {
	Name     string
	Flags    net.Flags
	Prefixes []netip.Prefix // IPv4 and IPv6 addresses with their prefix length
}

// SystemInterfaces lists the interfaces of the current network namespace.
func SystemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing the addresses of %s: %w", ifi.Name, err)
		}
		in := Interface{Name: ifi.Name, Flags: ifi.Flags}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			in.Prefixes = append(in.Prefixes, netip.PrefixFrom(ip.Unmap(), ones))
		}
		out = append(out, in)
	}
	return out, nil
}

// Planner computes plans. The zero value uses the real interfaces and DNS.
type Planner struct {
	// Interfaces lists the candidate interfaces; nil means SystemInterfaces.
	Interfaces func() ([]Interface, error)
	// Resolve turns a host name into IPv4 addresses; nil means the system
	// resolver. It is only used when a host's address is a name.
	Resolve func(ctx context.Context, name string) ([]netip.Addr, error)
}

// NoRouteError is returned when no interface is on the same network as the
// host's address, so no directed broadcast can be computed.
type NoRouteError struct {
	Host       string
	Address    string // as written in the inventory
	Addr       netip.Addr
	Considered []string // "eth0 192.168.1.10/24", "lo 127.0.0.1/8 (loopback)"
}

func (e *NoRouteError) Error() string {
	addr := e.Address
	if e.Addr.IsValid() && e.Addr.String() != e.Address {
		addr += " (" + e.Addr.String() + ")"
	}
	considered := "none"
	if len(e.Considered) > 0 {
		considered = strings.Join(e.Considered, ", ")
	}
	return fmt.Sprintf("host %s: no interface is on the network of address %s, so there is no directed broadcast to send the magic packet to (interfaces considered: %s); set wol_to to the broadcast address of the PC's network (such as 192.168.1.255:9) or wol_interface",
		e.Host, addr, considered)
}

// NewPlan is Planner{}.Plan: the plan for waking h from this machine.
func NewPlan(ctx context.Context, h *inventory.Host) (*Plan, error) {
	var p Planner
	return p.Plan(ctx, h)
}

// Plan works out where h's magic packets go:
//
//   - every wol_to address, as written (port 9 unless the entry says
//     otherwise, 7 for instance);
//   - with wol_interface, raw Ethernet frames on that interface;
//   - without wol_to, UDP to port 9 of the directed broadcast of the
//     interface whose prefix contains h's address, from that interface's real
//     prefix length, with the socket bound to that interface.
//
// A host with neither wol_to nor an on-link interface nor wol_interface gets
// a *NoRouteError naming the address and every interface considered.
func (pl *Planner) Plan(ctx context.Context, h *inventory.Host) (*Plan, error) {
	if h.MAC.IsZero() {
		return nil, fmt.Errorf("host %s has no mac, so it cannot be woken; add mac = \"aa:bb:cc:dd:ee:ff\" to its [[host]] table", h.Name)
	}
	p := &Plan{Host: h.Name, Packet: MagicPacket{Target: h.MAC, Password: h.WOLPassword}}
	if err := p.Packet.check(); err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for _, to := range h.WOLTo {
		a, ok := to.Addr()
		if !ok {
			return nil, fmt.Errorf("host %s: wol_to %q is not an IP address", h.Name, to.String())
		}
		port := to.Port
		if port == 0 {
			port = inventory.DefaultWOLPort
		}
		p.Targets = append(p.Targets, Target{Kind: UDP, Addr: netip.AddrPortFrom(a.Unmap(), port), Why: "wol_to"})
	}
	if h.WOLInterface != "" {
		p.Targets = append(p.Targets, Target{Kind: Ethernet, Device: h.WOLInterface, Why: "wol_interface"})
	}
	if len(h.WOLTo) > 0 {
		return p, nil
	}
	t, err := pl.directed(ctx, h)
	if err != nil {
		if h.WOLInterface != "" {
			// The raw frames still go out; the UDP broadcast is a bonus.
			return p, nil
		}
		return nil, err
	}
	p.Targets = append(p.Targets, t)
	return p, nil
}

// directed computes the directed-broadcast target for h's address.
func (pl *Planner) directed(ctx context.Context, h *inventory.Host) (Target, error) {
	if h.Address == "" {
		return Target{}, fmt.Errorf("host %s has no address to compute a directed broadcast from; set wol_to or wol_interface", h.Name)
	}
	addr, err := pl.resolve(ctx, h)
	if err != nil {
		return Target{}, err
	}
	list := pl.Interfaces
	if list == nil {
		list = SystemInterfaces
	}
	ifs, err := list()
	if err != nil {
		return Target{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	ifi, pfx, considered := OnLink(ifs, addr)
	if ifi == nil {
		return Target{}, &NoRouteError{Host: h.Name, Address: h.Address, Addr: addr, Considered: considered}
	}
	if ifi.Flags&net.FlagBroadcast == 0 {
		return Target{}, fmt.Errorf("host %s: address %s is on %s (%s), which has no broadcast (point-to-point or loopback); set wol_to or wol_interface",
			h.Name, addr, ifi.Name, pfx)
	}
	bc, err := DirectedBroadcast(pfx)
	if err != nil {
		return Target{}, fmt.Errorf("host %s: address %s is on %s: %w; set wol_to or wol_interface", h.Name, addr, ifi.Name, err)
	}
	return Target{
		Kind:   UDP,
		Addr:   netip.AddrPortFrom(bc, inventory.DefaultWOLPort),
		Device: ifi.Name,
		Why:    "directed broadcast of " + ifi.Name + " " + pfx.String(),
	}, nil
}

func (pl *Planner) resolve(ctx context.Context, h *inventory.Host) (netip.Addr, error) {
	if a, err := netip.ParseAddr(h.Address); err == nil {
		a = a.Unmap()
		if !a.Is4() {
			return netip.Addr{}, fmt.Errorf("host %s: address %s is IPv6, which has no broadcast; set wol_to to the IPv4 broadcast of the PC's network (such as 192.168.1.255:9) or wol_interface", h.Name, a)
		}
		return a, nil
	}
	resolve := pl.Resolve
	if resolve == nil {
		resolve = func(ctx context.Context, name string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	addrs, err := resolve(ctx, h.Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("host %s: resolving address %s to find its network: %w; set wol_to to the broadcast address of the PC's network", h.Name, h.Address, err)
	}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("host %s: address %s has no IPv4 address; set wol_to or wol_interface", h.Name, h.Address)
}

// OnLink finds the up interface with the longest IPv4 prefix containing
// addr (ties go to the earlier interface). It also returns a description of
// every interface it looked at, for error messages.
func OnLink(ifs []Interface, addr netip.Addr) (*Interface, netip.Prefix, []string) {
	var (
		best       *Interface
		bestPfx    netip.Prefix
		considered []string
	)
	for i := range ifs {
		ifi := &ifs[i]
		var v4 []string
		for _, p := range ifi.Prefixes {
			if !p.Addr().Is4() {
				continue
			}
			v4 = append(v4, p.String())
			if ifi.Flags&net.FlagUp == 0 || !p.Contains(addr) {
				continue
			}
			if best == nil || p.Bits() > bestPfx.Bits() {
				best, bestPfx = ifi, p
			}
		}
		desc := ifi.Name
		if len(v4) == 0 {
			desc += " (no IPv4 address)"
		} else {
			desc += " " + strings.Join(v4, " ")
		}
		switch {
		case ifi.Flags&net.FlagUp == 0:
			desc += " (down)"
		case ifi.Flags&net.FlagLoopback != 0:
			desc += " (loopback)"
		}
		considered = append(considered, desc)
	}
	sort.Strings(considered)
	return best, bestPfx, considered
}

// DirectedBroadcast is the broadcast address of an IPv4 prefix: every host
// bit set, for any prefix length from /0 to /30. A /31 (RFC 3021) and a /32
// have no broadcast address, and IPv6 has none at all.
func DirectedBroadcast(p netip.Prefix) (netip.Addr, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not an IPv4 prefix, so it has no broadcast address", p)
	}
	if p.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("%s is a /%d, which has no broadcast address", p, p.Bits())
	}
	a := p.Addr().As4()
	host := ^uint32(0) >> p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= host
	if v == ^uint32(0) {
		return netip.Addr{}, fmt.Errorf("%s is a /%d, whose broadcast would be 255.255.255.255, which leaves by the default route", p, p.Bits())
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}
