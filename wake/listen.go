package wake

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/packet"
	"github.com/ollamalive/gpuctl/inventory"
)

// ethPAll is ETH_P_ALL: a packet socket bound to it sees every frame.
const ethPAll = 0x0003

// Seen is one magic packet a Listener received.
type Seen struct {
	Time time.Time
	// Via is UDP for a UDP listener, Ethernet for a raw one (which sees magic
	// packets in any frame: EtherType 0x0842 as well as UDP broadcasts).
	Via Kind
	// Interface is the raw listener's interface ("" for UDP).
	Interface string
	// Source is the sender's ip:port (UDP, or a raw frame carrying IPv4/UDP).
	Source netip.AddrPort
	// Dest is the ip:port the frame was sent to (raw frames carrying
	// IPv4/UDP only; a UDP socket is not told).
	Dest netip.AddrPort
	// SourceMAC and EtherType come from the Ethernet header (raw only).
	SourceMAC net.HardwareAddr
	EtherType uint16
	// Outgoing marks a frame this machine sent itself (raw only).
	Outgoing bool
	// Packet is the magic packet; its Password prints as "(redacted)".
	Packet MagicPacket
}

// SecureOn reports whether the packet carried a SecureOn password.
func (s Seen) SecureOn() bool { return len(s.Packet.Password) > 0 }

// From is the sender in words: ip:port, or the source MAC for frames without IP.
func (s Seen) From() string {
	switch {
	case s.Via == Ethernet && s.Source.IsValid():
		return s.SourceMAC.String() + " " + s.Source.String()
	case s.Via == Ethernet:
		return s.SourceMAC.String()
	default:
		return s.Source.String()
	}
}

// String is one line for a terminal; it never shows the password.
func (s Seen) String() string {
	var b strings.Builder
	b.WriteString(s.Via.String())
	if s.Interface != "" {
		b.WriteString(" on " + s.Interface)
	}
	if s.Outgoing {
		b.WriteString(" (sent by this machine)")
	}
	b.WriteString(" from " + s.From())
	if s.Dest.IsValid() {
		b.WriteString(" to " + s.Dest.String())
	}
	if s.Via == Ethernet {
		fmt.Fprintf(&b, " ethertype 0x%04x", s.EtherType)
	}
	b.WriteString(": magic packet for " + s.Packet.Target.String())
	if s.SecureOn() {
		fmt.Fprintf(&b, " with a %d-byte SecureOn password", len(s.Packet.Password))
	} else {
		b.WriteString(", no SecureOn password")
	}
	return b.String()
}

// seenJSON is Seen's JSON form; the password is never in it.
type seenJSON struct {
	Time          time.Time `json:"time"`
	Via           string    `json:"via"`
	Interface     string    `json:"interface,omitempty"`
	Source        string    `json:"source,omitempty"`
	Dest          string    `json:"destination,omitempty"`
	SourceMAC     string    `json:"source_mac,omitempty"`
	EtherType     string    `json:"ethertype,omitempty"`
	Outgoing      bool      `json:"outgoing,omitempty"`
	Target        string    `json:"target"`
	SecureOn      bool      `json:"secureon"`
	PasswordBytes int       `json:"secureon_bytes,omitempty"`
}

// MarshalJSON writes the fields of Seen without the SecureOn password.
func (s Seen) MarshalJSON() ([]byte, error) {
	j := seenJSON{
		Time: s.Time, Via: s.Via.String(), Interface: s.Interface, Outgoing: s.Outgoing,
		Target: s.Packet.Target.String(), SecureOn: s.SecureOn(), PasswordBytes: len(s.Packet.Password),
	}
	if s.Source.IsValid() {
		j.Source = s.Source.String()
	}
	if s.Dest.IsValid() {
		j.Dest = s.Dest.String()
	}
	if len(s.SourceMAC) > 0 {
		j.SourceMAC = s.SourceMAC.String()
	}
	if s.Via == Ethernet {
		j.EtherType = fmt.Sprintf("0x%04x", s.EtherType)
	}
	return json.Marshal(j)
}

// Listener receives magic packets: on a UDP address (ListenUDP) or as every
// frame on an interface (ListenRaw). Create it where it must listen (inside a
// network namespace, say), then Serve it from any goroutine.
type Listener struct {
	// OnInvalid, when set, is told about payloads that start a magic packet
	// but are malformed (a wrong-length trailer, a multicast target). Payloads
	// with no magic packet at all are ignored silently.
	OnInvalid func(from string, err error)

	udp   *net.UDPConn
	raw   *packet.Conn
	iface string
	own   net.HardwareAddr
	once  sync.Once
	cerr  error
}

// ListenUDP listens for magic packets in UDP datagrams on addr (":9",
// "127.0.0.1:0"). Broadcasts to the port arrive on a wildcard address.
func ListenUDP(addr string) (*Listener, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for magic packets on %q: %w", addr, err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		if ua.Port > 0 && ua.Port < 1024 && errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("listening for magic packets on %s needs root or CAP_NET_BIND_SERVICE (port %d is below 1024), or listen on a port above 1023: %w", addr, ua.Port, err)
		}
		return nil, fmt.Errorf("listening for magic packets on %s: %w", addr, err)
	}
	return &Listener{udp: c}, nil
}

// ListenRaw listens on every frame that reaches the named interface (a
// packet socket bound to ETH_P_ALL), so it sees magic packets in EtherType
// 0x0842 frames and in UDP alike, as the NIC of a sleeping PC would. It needs
// CAP_NET_RAW; without it the error wraps os.ErrPermission and ErrNeedsRaw.
func ListenRaw(iface string) (*Listener, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("listening for raw magic packets: interface %s: %w", iface, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, ethPAll, nil)
	if err != nil {
		return nil, rawError("listening for raw frames on "+iface, err)
	}
	return &Listener{raw: c, iface: iface, own: ifi.HardwareAddr}, nil
}

// Addr is the local address: a *net.UDPAddr or a *packet.Addr.
func (l *Listener) Addr() net.Addr {
	if l.udp != nil {
		return l.udp.LocalAddr()
	}
	return l.raw.LocalAddr()
}

// Close stops the listener; a running Serve returns.
func (l *Listener) Close() error {
	l.once.Do(func() {
		if l.udp != nil {
			l.cerr = l.udp.Close()
		} else {
			l.cerr = l.raw.Close()
		}
	})
	return l.cerr
}

// Serve calls fn for every magic packet until ctx ends (then it returns nil)
// or reading fails. fn runs on Serve's goroutine, one packet at a time. The
// listener is closed when Serve returns.
func (l *Listener) Serve(ctx context.Context, fn func(Seen)) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	defer l.Close()
	buf := make([]byte, 1<<16)
	for {
		var (
			n    int
			err  error
			seen Seen
			ok   bool
		)
		if l.udp != nil {
			var from netip.AddrPort
			n, from, err = l.udp.ReadFromUDPAddrPort(buf)
			if n > 0 {
				seen, ok = l.parseUDP(buf[:n], from)
			}
		} else {
			n, _, err = l.raw.ReadFrom(buf)
			if n > 0 {
				seen, ok = l.parseFrame(buf[:n])
			}
		}
		if ok {
			fn(seen)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading magic packets on %s: %w", l.Addr(), err)
		}
	}
}

func (l *Listener) invalid(from string, err error) {
	if l.OnInvalid != nil && !errors.Is(err, ErrNoMagic) {
		l.OnInvalid(from, err)
	}
}

func (l *Listener) parseUDP(b []byte, from netip.AddrPort) (Seen, bool) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	p, err := ParseMagicPacket(b)
	if err != nil {
		l.invalid(from.String(), err)
		return Seen{}, false
	}
	return Seen{Time: time.Now(), Via: UDP, Source: from, Packet: p}, true
}

// parseFrame looks for a magic packet in an Ethernet frame; for IPv4/UDP it
// looks in the UDP payload and reports the addresses.
func (l *Listener) parseFrame(f []byte) (Seen, bool) {
	if len(f) < 14 {
		return Seen{}, false
	}
	s := Seen{
		Time: time.Now(), Via: Ethernet, Interface: l.iface,
		SourceMAC: append(net.HardwareAddr(nil), f[6:12]...),
		EtherType: binary.BigEndian.Uint16(f[12:14]),
	}
	s.Outgoing = len(l.own) == 6 && string(l.own) == string(f[6:12])
	payload := f[14:]
	if s.EtherType == 0x0800 {
		if src, dst, udp, ok := ipv4UDP(payload); ok {
			s.Source, s.Dest, payload = src, dst, udp
		}
	}
	p, err := ParseMagicPacket(payload)
	if err != nil {
		l.invalid(s.From(), err)
		return Seen{}, false
	}
	s.Packet = p
	return s, true
}

// ipv4UDP returns the addresses and payload of an unfragmented IPv4/UDP
// packet.
func ipv4UDP(b []byte) (src, dst netip.AddrPort, payload []byte, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	frag := binary.BigEndian.Uint16(b[6:8]) & 0x3fff
	if ihl < 20 || total < ihl+8 || total > len(b) || b[9] != 17 || frag != 0 {
		return
	}
	u := b[ihl:total]
	ulen := int(binary.BigEndian.Uint16(u[4:6]))
	if ulen < 8 || ulen > len(u) {
		return
	}
	sa, _ := netip.AddrFromSlice(b[12:16])
	da, _ := netip.AddrFromSlice(b[16:20])
	src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(u[0:2]))
	dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(u[2:4]))
	return src, dst, u[8:ulen], true
}

// Matches reports whether the packet would wake a NIC with this MAC and
// SecureOn password (none when empty): what a simulated PC checks.
func (s Seen) Matches(mac inventory.MAC, password inventory.Secret) bool {
	return s.Packet.Target == mac && s.Packet.Password.Equal(password)
}
