package wake

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/inventory"
)

func TestDirectedBroadcast(t *testing.T) {
	for _, tc := range []struct {
		prefix, want string
	}{
		{"10.77.0.5/23", "10.77.1.255"},
		{"10.77.1.20/23", "10.77.1.255"},
		{"10.88.0.1/28", "10.88.0.15"},
		{"10.88.0.17/28", "10.88.0.31"},
		{"192.168.1.10/24", "192.168.1.255"},
		{"192.168.3.200/22", "192.168.3.255"},
		{"172.16.5.4/12", "172.31.255.255"},
		{"10.1.2.3/8", "10.255.255.255"},
		{"192.0.2.1/30", "192.0.2.3"},
		{"100.64.0.1/10", "100.127.255.255"},
		{"10.0.0.1/1", "127.255.255.255"},
	} {
		got, err := DirectedBroadcast(netip.MustParsePrefix(tc.prefix))
		if err != nil {
			t.Errorf("%s: %v", tc.prefix, err)
			continue
		}
		if got.String() != tc.want {
			t.Errorf("%s: broadcast %s, want %s", tc.prefix, got, tc.want)
		}
		if got.As4()[3] == 0 {
			t.Errorf("%s: broadcast %s ends in .0", tc.prefix, got)
		}
	}
	for _, bad := range []string{"10.0.0.0/31", "10.0.0.1/32", "200.0.0.1/1", "0.0.0.0/0", "2001:db8::1/64"} {
		if got, err := DirectedBroadcast(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("%s: broadcast %s, want an error", bad, got)
		}
	}
}

var (
	up    = net.FlagUp | net.FlagBroadcast | net.FlagMulticast | net.FlagRunning
	lo    = Interface{Name: "lo", Flags: net.FlagUp | net.FlagLoopback, Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}}
	eth0  = Interface{Name: "eth0", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.77.0.5/23"), netip.MustParsePrefix("fe80::1/64")}}
	dock  = Interface{Name: "docker0", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("172.17.0.1/16")}}
	wg0   = Interface{Name: "wg0", Flags: net.FlagUp | net.FlagPointToPoint, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/24")}}
	down  = Interface{Name: "eth1", Flags: net.FlagBroadcast, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.168.50.2/24")}}
	lan28 = Interface{Name: "enp3s0", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.88.0.1/28")}}
	wide  = Interface{Name: "br0", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.88.0.2/16")}}
	tiny  = Interface{Name: "p2p0", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.55.0.0/31")}}
	noV4  = Interface{Name: "eth9", Flags: up, Prefixes: []netip.Prefix{netip.MustParsePrefix("fe80::2/64")}}
)

func planner(ifs ...Interface) *Planner {
	return &Planner{
		Interfaces: func() ([]Interface, error) { return ifs, nil },
		Resolve: func(_ context.Context, name string) ([]netip.Addr, error) {
			switch name {
			case "gaming-pc.lan":
				return []netip.Addr{netip.MustParseAddr("10.77.1.20")}, nil
			case "unrouted.lan":
				return []netip.Addr{netip.MustParseAddr("192.0.2.77")}, nil
			case "v6only.lan":
				return []netip.Addr{netip.MustParseAddr("2001:db8::5")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		},
	}
}

func TestPlan(t *testing.T) {
	mac := mustMAC(t, "d8:bb:c1:0a:0b:0c")
	hp := func(s string) inventory.HostPort {
		v, err := inventory.ParseHostPort(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name    string
		host    inventory.Host
		ifs     []Interface
		want    []string // Target.String()
		wantWhy []string
		wantErr string
	}{
		{
			name: "/23 directed broadcast despite docker default route",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "10.77.1.20"},
			ifs:  []Interface{lo, dock, eth0, wg0},
			want: []string{"udp 10.77.1.255:9 via eth0"}, wantWhy: []string{"directed broadcast of eth0 10.77.0.5/23"},
		},
		{
			name: "/28",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "10.88.0.9"},
			ifs:  []Interface{lo, lan28},
			want: []string{"udp 10.88.0.15:9 via enp3s0"},
		},
		{
			name: "longest prefix wins",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "10.88.0.9"},
			ifs:  []Interface{wide, lan28},
			want: []string{"udp 10.88.0.15:9 via enp3s0"},
		},
		{
			name: "name resolved",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "gaming-pc.lan"},
			ifs:  []Interface{lo, eth0},
			want: []string{"udp 10.77.1.255:9 via eth0"},
		},
		{
			name: "wol_to as written, port 7 kept",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "10.77.1.20", WOLTo: []inventory.HostPort{hp("192.168.1.255:7"), hp("10.0.0.9:9")}},
			ifs:  []Interface{lo, eth0},
			want: []string{"udp 192.168.1.255:7", "udp 10.0.0.9:9"}, wantWhy: []string{"wol_to", "wol_to"},
		},
		{
			name: "wol_interface adds raw frames",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "10.77.1.20", WOLInterface: "eth0"},
			ifs:  []Interface{lo, eth0},
			want: []string{"ethernet ff:ff:ff:ff:ff:ff on eth0", "udp 10.77.1.255:9 via eth0"},
		},
		{
			name: "wol_interface without a route is enough",
			host: inventory.Host{Name: "pc", MAC: mac, Address: "192.0.2.77", WOLInterface: "eth0"},
			ifs:  []Interface{lo, eth0},
			want: []string{"ethernet ff:ff:ff:ff:ff:ff on eth0"},
		},
		{
			name:    "no route",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "192.0.2.77"},
			ifs:     []Interface{lo, eth0, dock, down, wg0, noV4},
			wantErr: "host pc: no interface is on the network of address 192.0.2.77",
		},
		{
			name:    "down interface is not used",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "192.168.50.9"},
			ifs:     []Interface{down},
			wantErr: "eth1 192.168.50.2/24 (down)",
		},
		{
			name:    "point-to-point",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "10.99.0.7"},
			ifs:     []Interface{wg0},
			wantErr: "wg0 (10.99.0.2/24), which has no broadcast",
		},
		{
			name:    "/31",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "10.55.0.1"},
			ifs:     []Interface{tiny},
			wantErr: "is a /31, which has no broadcast",
		},
		{
			name:    "ipv6 address",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "2001:db8::5"},
			ifs:     []Interface{eth0},
			wantErr: "is IPv6",
		},
		{
			name:    "name with only ipv6",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "v6only.lan"},
			ifs:     []Interface{eth0},
			wantErr: "has no IPv4 address",
		},
		{
			name:    "unresolvable",
			host:    inventory.Host{Name: "pc", MAC: mac, Address: "nowhere.lan"},
			ifs:     []Interface{eth0},
			wantErr: "resolving address nowhere.lan",
		},
		{
			name:    "no mac",
			host:    inventory.Host{Name: "pc", Address: "10.77.1.20"},
			ifs:     []Interface{eth0},
			wantErr: "host pc has no mac",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planner(tc.ifs...).Plan(context.Background(), &tc.host)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got, why []string
			for _, tg := range p.Targets {
				got = append(got, tg.String())
				why = append(why, tg.Why)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("targets %q, want %q", got, tc.want)
			}
			if tc.wantWhy != nil && strings.Join(why, "|") != strings.Join(tc.wantWhy, "|") {
				t.Errorf("why %q, want %q", why, tc.wantWhy)
			}
			if p.Packet.Target != mac || p.Host != "pc" {
				t.Errorf("packet %v host %q", p.Packet, p.Host)
			}
			for _, tg := range p.Targets {
				if tg.Kind == UDP && (tg.Addr.Addr() == netip.MustParseAddr("255.255.255.255") || tg.Addr.Addr().As4()[3] == 0) {
					t.Errorf("target %s", tg)
				}
			}
		})
	}
}

func TestNoRouteErrorNamesEverything(t *testing.T) {
	h := inventory.Host{Name: "gaming-pc", MAC: mustMAC(t, "d8:bb:c1:0a:0b:0c"), Address: "unrouted.lan"}
	_, err := planner(lo, eth0, dock, down, wg0, noV4).Plan(context.Background(), &h)
	var nr *NoRouteError
	if !errors.As(err, &nr) {
		t.Fatalf("err = %v, want *NoRouteError", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"host gaming-pc", "unrouted.lan (192.0.2.77)", "eth0 10.77.0.5/23",
		"docker0 172.17.0.1/16", "eth1 192.168.50.2/24 (down)", "lo 127.0.0.1/8 (loopback)",
		"wg0 10.99.0.2/24", "eth9 (no IPv4 address)", "set wol_to",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
}

func TestPlanPassword(t *testing.T) {
	h := inventory.Host{Name: "pc", MAC: mustMAC(t, "d8:bb:c1:0a:0b:0c"), Address: "10.77.1.20", WOLPassword: inventory.Secret{1, 2, 3, 4}}
	p, err := planner(eth0).Plan(context.Background(), &h)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := p.Packet.MarshalBinary(); len(b) != 106 {
		t.Fatalf("packet of %d bytes, want 106", len(b))
	}
}
