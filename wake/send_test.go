package wake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/ollamalive/gpuctl/inventory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTransport records sends; fail(n, target) can refuse the n-th (from 0).
type fakeTransport struct {
	mu    sync.Mutex
	sends []fakeSend
	fail  func(n int, t Target) error
}

type fakeSend struct {
	at      time.Time
	target  Target
	payload []byte
}

func (f *fakeTransport) Send(_ context.Context, t Target, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.sends)
	f.sends = append(f.sends, fakeSend{at: time.Now(), target: t, payload: append([]byte(nil), payload...)})
	if f.fail != nil {
		return f.fail(n, t)
	}
	return nil
}

func (f *fakeTransport) all() []fakeSend {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeSend(nil), f.sends...)
}

func testPlan(t *testing.T, tr Transport) *Plan {
	return &Plan{
		Host:   "pc",
		Packet: MagicPacket{Target: mustMAC(t, "d8:bb:c1:0a:0b:0c")},
		Targets: []Target{
			{Kind: UDP, Addr: netip.MustParseAddrPort("10.77.1.255:9"), Device: "eth0"},
			{Kind: Ethernet, Device: "eth0"},
		},
		Transport: tr,
	}
}

func TestBurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{}
		p := testPlan(t, tr)
		start := time.Now()
		sent, err := p.Burst(t.Context(), 3, 100*time.Millisecond)
		if err != nil || sent != 6 {
			t.Fatalf("Burst = %d, %v; want 6, nil", sent, err)
		}
		want, _ := p.Packet.MarshalBinary()
		for i, s := range tr.all() {
			if at := s.at.Sub(start); at != time.Duration(i/2)*100*time.Millisecond {
				t.Errorf("send %d at +%v", i, at)
			}
			if s.target != p.Targets[i%2] {
				t.Errorf("send %d to %v", i, s.target)
			}
			if string(s.payload) != string(want) {
				t.Errorf("send %d payload %x", i, s.payload)
			}
		}
		if d := time.Since(start); d != 200*time.Millisecond {
			t.Errorf("burst took %v, want 200ms (no wait after the last round)", d)
		}
	})
}

func TestBurstPartialFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{fail: func(_ int, tg Target) error {
			if tg.Kind == Ethernet {
				return fmt.Errorf("raw: %w", os.ErrPermission)
			}
			return nil
		}}
		sent, err := testPlan(t, tr).Burst(t.Context(), 4, time.Second)
		if sent != 4 {
			t.Errorf("sent %d, want 4", sent)
		}
		if !errors.Is(err, os.ErrPermission) {
			t.Fatalf("err = %v", err)
		}
		if n := strings.Count(err.Error(), "ethernet ff:ff:ff:ff:ff:ff on eth0"); n != 1 {
			t.Errorf("failure reported %d times: %v", n, err)
		}
		if len(tr.all()) != 8 {
			t.Errorf("%d attempts, want 8 (failed targets are retried each round)", len(tr.all()))
		}
	})
}

func TestBurstStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{}
		ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
		defer cancel()
		sent, err := testPlan(t, tr).Burst(ctx, 10, 100*time.Millisecond)
		if sent != 6 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Burst = %d, %v; want 6, deadline exceeded", sent, err)
		}
	})
}

func TestBurstRejectsBadPlan(t *testing.T) {
	p := testPlan(t, &fakeTransport{})
	p.Packet.Password = inventory.Secret{1, 2, 3}
	if _, err := p.Burst(t.Context(), 1, 0); err == nil {
		t.Error("3-byte password accepted")
	}
	p = testPlan(t, &fakeTransport{})
	p.Targets = nil
	if _, err := p.Burst(t.Context(), 1, 0); err == nil {
		t.Error("no targets accepted")
	}
}

func TestSenderSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The first 3 packets are lost (scenario W1); the schedule goes on.
		tr := &fakeTransport{fail: func(n int, _ Target) error {
			if n < 3 {
				return errors.New("network is unreachable")
			}
			return nil
		}}
		p := testPlan(t, tr)
		p.Targets = p.Targets[:1]
		var results []string
		s := &Sender{Plan: p, Every: 5 * time.Second, Count: 3, Interval: 200 * time.Millisecond,
			OnBurst: func(sent int, err error) { results = append(results, fmt.Sprintf("%d %v", sent, err != nil)) }}
		ctx, cancel := context.WithTimeout(t.Context(), 12*time.Second)
		defer cancel()
		start := time.Now()
		if err := s.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 12*time.Second {
			t.Errorf("Run returned after %v, want when the context ended (12s)", d)
		}
		var at []time.Duration
		for _, s := range tr.all() {
			at = append(at, s.at.Sub(start))
		}
		want := []time.Duration{0, 200 * time.Millisecond, 400 * time.Millisecond,
			5 * time.Second, 5200 * time.Millisecond, 5400 * time.Millisecond,
			10 * time.Second, 10200 * time.Millisecond, 10400 * time.Millisecond}
		if fmt.Sprint(at) != fmt.Sprint(want) {
			t.Errorf("sent at %v, want %v", at, want)
		}
		if fmt.Sprint(results) != "[0 true 3 false 3 false]" {
			t.Errorf("bursts %v", results)
		}
	})
}

func TestRepeatUntilContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{}
		p := testPlan(t, tr)
		ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
		defer cancel()
		done := make(chan error)
		go func() { done <- p.Repeat(ctx, time.Minute) }()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Bursts at 0 and 60s, DefaultCount rounds to 2 targets each.
		if n := len(tr.all()); n != 2*DefaultCount*2 {
			t.Errorf("%d sends, want %d", n, 2*DefaultCount*2)
		}
	})
}

// A real UDP round trip on loopback (no broadcast, no privileges).
func TestUDPLoopback(t *testing.T) {
	l, err := ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		invalid []string
	)
	l.OnInvalid = func(from string, err error) {
		mu.Lock()
		invalid = append(invalid, from+": "+err.Error())
		mu.Unlock()
	}
	seen := make(chan Seen, 10)
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error)
	go func() { served <- l.Serve(ctx, func(s Seen) { seen <- s }) }()

	dst := l.Addr().(*net.UDPAddr).AddrPort()
	pkt := MagicPacket{Target: mustMAC(t, "d8:bb:c1:0a:0b:0c"), Password: inventory.Secret{9, 9, 9, 9, 9, 9}}
	good, _ := pkt.MarshalBinary()
	if err := SendUDP(t.Context(), dst, "", []byte("not a magic packet")); err != nil {
		t.Fatal(err)
	}
	if err := SendUDP(t.Context(), dst, "", append(good[:len(good):len(good)], 1)); err != nil {
		t.Fatal(err)
	}
	if err := SendUDP(t.Context(), dst, "", good); err != nil {
		t.Fatal(err)
	}
	var s Seen
	select {
	case s = <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("no packet seen in 10s")
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if s.Via != UDP || s.Source.Addr() != netip.MustParseAddr("127.0.0.1") || s.Source.Port() == 0 {
		t.Errorf("seen %+v", s)
	}
	if !s.SecureOn() || !s.Matches(pkt.Target, pkt.Password) || s.Matches(pkt.Target, nil) {
		t.Errorf("SecureOn %v, Matches wrong", s.SecureOn())
	}
	line := s.String()
	j, _ := json.Marshal(s)
	for _, out := range []string{line, string(j), fmt.Sprintf("%v %+v", s, s)} {
		if strings.Contains(out, "09:09") || strings.Contains(out, "090909") || strings.Contains(out, "9 9 9") {
			t.Errorf("password leaked: %s", out)
		}
	}
	if !strings.Contains(line, "udp from 127.0.0.1:") || !strings.Contains(line, "magic packet for d8:bb:c1:0a:0b:0c with a 6-byte SecureOn password") {
		t.Errorf("line %q", line)
	}
	if !strings.Contains(string(j), `"target":"d8:bb:c1:0a:0b:0c","secureon":true,"secureon_bytes":6`) {
		t.Errorf("json %s", j)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(invalid) != 1 || !strings.Contains(invalid[0], "followed by 7 bytes") {
		t.Errorf("invalid reports %q, want the one with a 7-byte trailer", invalid)
	}
}

// The check SendUDP makes before opening a socket. It is tested on its own,
// so that a regression can never put a packet on the real network.
func TestSendUDPRefusesLimitedBroadcast(t *testing.T) {
	for _, a := range []string{"255.255.255.255:9", "0.0.0.0:9", "[::ffff:255.255.255.255]:9", "[::]:9"} {
		err := checkDestination(netip.MustParseAddrPort(a))
		if err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("%s: err = %v", a, err)
		}
	}
	for _, a := range []string{"10.77.1.255:9", "127.0.0.1:7"} {
		if err := checkDestination(netip.MustParseAddrPort(a)); err != nil {
			t.Errorf("%s refused: %v", a, err)
		}
	}
}

func TestSendUDPUnknownDevice(t *testing.T) {
	err := SendUDP(t.Context(), netip.MustParseAddrPort("127.0.0.1:9"), "nosuchdev0", []byte("x"))
	if err == nil {
		t.Skip("binding to a device is not permitted here, so the name is not checked")
	}
	if !strings.Contains(err.Error(), "nosuchdev0") {
		t.Errorf("err = %v", err)
	}
}

// Without CAP_NET_RAW, raw sends and listens say what is needed. As root the
// capability is dropped from one locked thread, which is then discarded.
func TestRawNeedsCapNetRaw(t *testing.T) {
	check := func(err error) {
		t.Helper()
		if !errors.Is(err, os.ErrPermission) || !errors.Is(err, ErrNeedsRaw) {
			t.Fatalf("err = %v, want os.ErrPermission and ErrNeedsRaw", err)
		}
		for _, want := range []string{"needs CAP_NET_RAW", "setcap cap_net_raw+ep $(which gpuctl)", "on lo"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("message lacks %q: %v", want, err)
			}
		}
	}
	if os.Geteuid() != 0 {
		check(SendEthernet(t.Context(), "lo", make([]byte, 102)))
		_, err := ListenRaw("lo")
		check(err)
		return
	}
	type result struct{ send, listen error }
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- result{send: err, listen: err}
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_RAW
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- result{send: err, listen: err}
			return
		}
		var r result
		r.send = SendEthernet(context.Background(), "lo", make([]byte, 102))
		l, err := ListenRaw("lo")
		if err == nil {
			l.Close()
		}
		r.listen = err
		done <- r
	}()
	r := <-done
	check(r.send)
	check(r.listen)
}
