package wake_test

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/wake"
	"github.com/ollamalive/gpuctl/wake/waketest"
)

// Tier 3: two network namespaces ("server" and "pc") joined by a veth pair.
// The default sender runs in the server namespace, listeners (UDP and raw)
// in the pc namespace. Nothing leaves these namespaces.
func TestWakeAcrossNamespaces(t *testing.T) {
	for _, tc := range []struct {
		name          string
		server, pc    string
		wantBroadcast string
		password      inventory.Secret
		decoy         bool // a docker0 with the default route in the server namespace
	}{
		{name: "slash23", server: "10.77.0.5/23", pc: "10.77.1.20/23", wantBroadcast: "10.77.1.255", decoy: true},
		{name: "slash28", server: "10.88.0.1/28", pc: "10.88.0.9/28", wantBroadcast: "10.88.0.15", password: inventory.Secret{1, 2, 3, 4, 5, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pair := waketest.NewPair(t, tc.server, tc.pc)
			if tc.decoy {
				// Both ends in the server namespace (no dummy module needed).
				pair.Server.IP("link", "add", "docker0", "type", "veth", "peer", "name", "docker0p")
				pair.Server.AddAddr("docker0", "172.17.0.1/16")
				pair.Server.Up("docker0")
				pair.Server.Up("docker0p")
				pair.Server.IP("route", "add", "default", "dev", "docker0")
			}
			var pcMAC inventory.MAC
			copy(pcMAC[:], pair.Veth.BMAC)
			pcAddr, _, _ := strings.Cut(tc.pc, "/")
			host := &inventory.Host{Name: "gaming-pc", MAC: pcMAC, Address: pcAddr, WOLPassword: tc.password}

			// Listeners, created inside the pc namespace.
			var udpL, rawL *wake.Listener
			err := pair.PC.Do(func() error {
				var err error
				if udpL, err = wake.ListenUDP("0.0.0.0:9"); err != nil {
					return err
				}
				rawL, err = wake.ListenRaw(pair.PCDev)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			rec := newRecorder()
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			for _, l := range []*wake.Listener{udpL, rawL} {
				wg.Go(func() {
					if err := l.Serve(ctx, rec.add); err != nil {
						t.Errorf("Serve: %v", err)
					}
				})
			}
			t.Cleanup(func() { cancel(); wg.Wait() })

			// 1. The default sender: UDP to the computed directed broadcast.
			const n1 = 5
			var plan *wake.Plan
			err = pair.Server.Do(func() error {
				var err error
				if plan, err = wake.NewPlan(ctx, host); err != nil {
					return err
				}
				sent, err := plan.Burst(ctx, n1, 10*time.Millisecond)
				if err == nil && sent != n1 {
					t.Errorf("sent %d, want %d", sent, n1)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			wantUDP := netip.AddrPortFrom(netip.MustParseAddr(tc.wantBroadcast), 9)
			if len(plan.Targets) != 1 || plan.Targets[0].Kind != wake.UDP || plan.Targets[0].Addr != wantUDP || plan.Targets[0].Device != pair.ServerDev {
				t.Fatalf("targets %v, want udp %s via %s", plan.Targets, wantUDP, pair.ServerDev)
			}
			if want := "directed broadcast of " + pair.ServerDev + " " + tc.server; plan.Targets[0].Why != want {
				t.Errorf("why %q, want %q", plan.Targets[0].Why, want)
			}
			rec.waitFor(t, func(c counts) bool { return c.udp >= n1 && c.rawIP >= n1 })

			// 2. With wol_interface: raw Ethernet frames as well.
			const n2 = 4
			host.WOLInterface = pair.ServerDev
			err = pair.Server.Do(func() error {
				var err error
				if plan, err = wake.NewPlan(ctx, host); err != nil {
					return err
				}
				sent, err := plan.Burst(ctx, n2, 10*time.Millisecond)
				if err == nil && sent != 2*n2 {
					t.Errorf("sent %d, want %d", sent, 2*n2)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.Targets) != 2 || plan.Targets[0].Kind != wake.Ethernet || plan.Targets[0].Device != pair.ServerDev {
				t.Fatalf("targets %v, want ethernet on %s first", plan.Targets, pair.ServerDev)
			}
			c := rec.waitFor(t, func(c counts) bool { return c.udp >= n1+n2 && c.rawIP >= n1+n2 && c.raw0842 >= n2 })
			cancel()
			wg.Wait()
			c = rec.counts()
			if c.udp != n1+n2 || c.rawIP != n1+n2 || c.raw0842 != n2 || c.other != 0 {
				t.Errorf("seen %+v, want udp %d, raw IP %d, raw 0x0842 %d, nothing else", c, n1+n2, n1+n2, n2)
			}

			for _, s := range rec.all() {
				if !s.Matches(pcMAC, tc.password) {
					t.Errorf("%v: does not match the PC's MAC and password", s)
				}
				if s.SecureOn() != (len(tc.password) > 0) {
					t.Errorf("%v: SecureOn %v", s, s.SecureOn())
				}
				serverIP, _, _ := strings.Cut(tc.server, "/")
				switch s.Via {
				case wake.UDP:
					if s.Source.Addr().String() != serverIP {
						t.Errorf("%v: from %s, want %s", s, s.Source, serverIP)
					}
				case wake.Ethernet:
					if s.SourceMAC.String() != pair.Veth.AMAC.String() || s.Interface != pair.PCDev || s.Outgoing {
						t.Errorf("%v: source MAC %s (want %s), interface %s", s, s.SourceMAC, pair.Veth.AMAC, s.Interface)
					}
					if s.EtherType == 0x0800 && (s.Dest != wantUDP || s.Source.Addr().String() != serverIP) {
						t.Errorf("%v: to %s, want %s", s, s.Dest, wantUDP)
					}
				}
				if strings.Contains(s.String(), "01:02:03") {
					t.Errorf("password printed: %s", s)
				}
			}
		})
	}
}

// A host whose address is on no interface of the server namespace gets a
// NoRouteError naming the address and what was considered; nothing is sent.
func TestNoRouteInNamespace(t *testing.T) {
	pair := waketest.NewPair(t, "10.77.0.5/23", "10.77.1.20/23")
	host := &inventory.Host{Name: "gaming-pc", MAC: inventory.MAC{0xd8, 0xbb, 0xc1, 0x0a, 0x0b, 0x0c}, Address: "192.0.2.77"}
	var err error
	if derr := pair.Server.Do(func() error { _, err = wake.NewPlan(t.Context(), host); return nil }); derr != nil {
		t.Fatal(derr)
	}
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"192.0.2.77", "lo 127.0.0.1/8 (loopback)", "srv0 10.77.0.5/23"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

type counts struct{ udp, rawIP, raw0842, other int }

type recorder struct {
	mu   sync.Mutex
	seen []wake.Seen
	ch   chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) add(s wake.Seen) {
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []wake.Seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]wake.Seen(nil), r.seen...)
}

func (r *recorder) counts() counts {
	var c counts
	for _, s := range r.all() {
		switch {
		case s.Via == wake.UDP:
			c.udp++
		case s.EtherType == 0x0800:
			c.rawIP++
		case s.EtherType == wake.EtherType:
			c.raw0842++
		default:
			c.other++
		}
	}
	return c
}

// waitFor waits (10 s at most) until the counts satisfy ok.
func (r *recorder) waitFor(t *testing.T, ok func(counts) bool) counts {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c := r.counts()
		if ok(c) {
			return c
		}
		select {
		case <-r.ch:
		case <-deadline.C:
			t.Fatalf("listeners saw %+v after 10s", c)
		}
	}
}
