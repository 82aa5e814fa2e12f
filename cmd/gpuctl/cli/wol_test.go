package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/wake"
	"github.com/ollamalive/gpuctl/wake/waketest"
)

// notifyBuf is a goroutine-safe buffer that signals every write.
type notifyBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	ch chan struct{}
}

func newNotifyBuf() *notifyBuf { return &notifyBuf{ch: make(chan struct{}, 1)} }

func (n *notifyBuf) Write(p []byte) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case n.ch <- struct{}{}:
	default:
	}
	return n.b.Write(p)
}

func (n *notifyBuf) String() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.b.String()
}

// waitFor waits up to 10 s for ok(contents).
func (n *notifyBuf) waitFor(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	for {
		if s := n.String(); ok(s) {
			return s
		}
		select {
		case <-n.ch:
		case <-timer.C:
			t.Fatalf("no %s after 10s; output so far:\n%s", what, n.String())
		}
	}
}

func writeInventory(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gpuctl.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listenLoopback collects magic packets sent to a loopback UDP port.
func listenLoopback(t *testing.T) (addr string, seen func(n int) []wake.Seen) {
	t.Helper()
	l, err := wake.ListenUDP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []wake.Seen
	ch := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Serve(ctx, func(s wake.Seen) {
			mu.Lock()
			got = append(got, s)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l.Addr().String(), func(n int) []wake.Seen {
		t.Helper()
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		for {
			mu.Lock()
			c := append([]wake.Seen(nil), got...)
			mu.Unlock()
			if len(c) >= n {
				return c
			}
			select {
			case <-ch:
			case <-timer.C:
				t.Fatalf("saw %d magic packets after 10s, want %d", len(c), n)
			}
		}
	}
}

func noInventoryEnv(t *testing.T) map[string]string {
	d := t.TempDir()
	return map[string]string{"HOME": d, "XDG_CONFIG_HOME": filepath.Join(d, "xdg")}
}

func TestWOLSendHostToLoopback(t *testing.T) {
	addr, seen := listenLoopback(t)
	cfg := writeInventory(t, fmt.Sprintf(`
[[host]]
name = "gaming-pc"
on_demand = true
mac = "aa:bb:cc:dd:ee:01"
address = "127.0.0.2"
wol_to = [%q]
wol_password = "de:ad:be:ef:42:42"
`, addr))
	code, stdout, stderr := run(t, nil, "--config", cfg, "wol", "send", "--count", "3", "--interval", "1ms", "gaming-pc")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := seen(3)
	if len(got) != 3 {
		t.Errorf("saw %d packets, want 3", len(got))
	}
	mac, _ := inventory.ParseMAC("aa:bb:cc:dd:ee:01")
	for _, s := range got {
		if !s.Matches(mac, inventory.Secret{0xde, 0xad, 0xbe, 0xef, 0x42, 0x42}) {
			t.Errorf("%v does not carry the host's MAC and password", s)
		}
	}
	want := "sending 3 magic packets for gaming-pc (aa:bb:cc:dd:ee:01) to udp " + addr + " (wol_to)\nsent 3 magic packets for gaming-pc"
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if stdout != "" {
		t.Errorf("stdout %q", stdout)
	}
	if strings.Contains(strings.ToLower(stderr), "de:ad") || strings.Contains(stderr, "deadbeef") {
		t.Errorf("password printed: %s", stderr)
	}
}

func TestWOLSendMACToLoopback(t *testing.T) {
	addr, seen := listenLoopback(t)
	code, _, stderr := run(t, noInventoryEnv(t), "wol", "send", "--to", addr, "--count", "2", "--interval", "0s", "D8-BB-C1-0A-0B-0C")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := seen(2)
	if got[0].Packet.Target.String() != "d8:bb:c1:0a:0b:0c" || got[0].SecureOn() {
		t.Errorf("seen %v", got[0])
	}
	// A MAC that belongs to an inventory host uses that host (and --to overrides wol_to).
	cfg := writeInventory(t, `
[[host]]
name = "gaming-pc"
mac = "d8:bb:c1:0a:0b:0c"
address = "127.0.0.2"
wol_to = ["127.0.0.3:9"]
`)
	code, _, stderr = run(t, nil, "--config", cfg, "wol", "send", "--to", addr, "--count", "1", "d8:bb:c1:0a:0b:0c")
	if code != ExitOK || !strings.Contains(stderr, "for gaming-pc (d8:bb:c1:0a:0b:0c) to udp "+addr) {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	seen(3)
}

func TestWOLSendUsageErrors(t *testing.T) {
	cfg := writeInventory(t, `
[[host]]
name = "server"
address = "127.0.0.1"

[[host]]
name = "gaming-pc"
mac = "aa:bb:cc:dd:ee:01"
address = "127.0.0.2"
`)
	for _, c := range []struct {
		args []string
		env  map[string]string
		msg  string
	}{
		{[]string{"wol", "send"}, nil, "missing HOST or MAC"},
		{[]string{"wol", "send", "a", "b"}, nil, `unexpected argument "b"`},
		{[]string{"wol", "send", "gaming-pc", "--count", "0"}, nil, "--count 0: give a number from 1 to 1000"},
		{[]string{"wol", "send", "--count", "0", "gaming-pc"}, nil, "--count 0: give a number from 1 to 1000"},
		{[]string{"wol", "send", "--interval", "-1s", "gaming-pc"}, nil, "--interval -1s"},
		{[]string{"wol", "send", "--to", "pc.lan:9", "gaming-pc"}, nil, `--to "pc.lan:9": give an IP address`},
		{[]string{"wol", "send", "--to", "127.0.0.3", "gaming-pc"}, nil, `"127.0.0.3" is not host:port`},
		{[]string{"--config", cfg, "wol", "send", "server"}, nil, "host server has no mac in " + cfg},
		{[]string{"--config", cfg, "wol", "send", "nosuch"}, nil, `"nosuch" is neither a MAC address nor a host in ` + cfg + " (hosts: server, gaming-pc)"},
		{[]string{"wol", "send", "d8:bb:c1:0a:0b:0c"}, noInventoryEnv(t), "no host in the inventory has MAC d8:bb:c1:0a:0b:0c, so gpuctl does not know its network; give --to IP:PORT"},
		{[]string{"wol", "send", "nosuch"}, noInventoryEnv(t), "no inventory file found"},
		{[]string{"wol", "listen", "extra"}, nil, `unexpected argument "extra"`},
	} {
		env := c.env
		if env == nil {
			env = map[string]string{"GPUCTL_CONFIG": cfg}
		}
		code, stdout, stderr := run(t, env, c.args...)
		if code != ExitUsage || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.msg)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q", c.args, stdout)
		}
	}
}

// `wol send` for a host whose address is on no interface fails with exit 1
// and names the address and every interface considered. It runs in a test
// network namespace, so nothing could leave even if it did not fail.
func TestWOLSendNoRoute(t *testing.T) {
	ns := waketest.NewNS(t)
	ns.IP("link", "add", "eth7", "type", "veth", "peer", "name", "eth8")
	ns.AddAddr("eth7", "10.77.0.5/23")
	ns.Up("eth7")
	ns.Up("eth8")
	cfg := writeInventory(t, `
[[host]]
name = "gaming-pc"
on_demand = true
mac = "aa:bb:cc:dd:ee:01"
address = "192.0.2.77"
`)
	var (
		code           int
		stdout, stderr bytes.Buffer
	)
	err := ns.Do(func() error {
		code = Run(context.Background(), &Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }},
			[]string{"gpuctl", "--config", cfg, "wol", "send", "gaming-pc"})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if code != ExitFailure {
		t.Errorf("exit %d, want 1", code)
	}
	msg := stderr.String()
	for _, want := range []string{"host gaming-pc: no interface is on the network of address 192.0.2.77",
		"interfaces considered: eth7 10.77.0.5/23, eth8 (no IPv4 address), lo 127.0.0.1/8 (loopback)", "set wol_to"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr lacks %q:\n%s", want, msg)
		}
	}
	if stdout.Len() != 0 || strings.Contains(msg, "sending") {
		t.Errorf("stdout %q stderr %q", stdout.String(), msg)
	}
}

func TestWOLListen(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			stdout, stderr := newNotifyBuf(), newNotifyBuf()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			argv := []string{"gpuctl", "wol", "listen", "--udp", "127.0.0.1:0"}
			if asJSON {
				argv = append(argv, "--json")
			}
			done := make(chan int)
			go func() {
				done <- Run(ctx, &Env{Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }}, argv)
			}()
			re := regexp.MustCompile(`listening for magic packets on udp (127\.0\.0\.1:\d+) \(Ctrl-C to stop\)`)
			m := re.FindStringSubmatch(stderr.waitFor(t, "listening line", re.MatchString))
			dst := netip.MustParseAddrPort(m[1])

			mac, _ := inventory.ParseMAC("d8:bb:c1:0a:0b:0c")
			plain, _ := wake.MagicPacket{Target: mac}.MarshalBinary()
			secure, _ := wake.MagicPacket{Target: mac, Password: inventory.Secret{0xde, 0xad, 0xbe, 0xef}}.MarshalBinary()
			for _, p := range [][]byte{plain, []byte("noise"), append(plain[:102:102], 1, 2), secure} {
				if err := wake.SendUDP(ctx, dst, "", p); err != nil {
					t.Fatal(err)
				}
			}
			out := stdout.waitFor(t, "two packet lines", func(s string) bool { return strings.Count(s, "\n") >= 2 })
			stderr.waitFor(t, "malformed report", func(s string) bool { return strings.Contains(s, "malformed") })
			cancel()
			if code := <-done; code != ExitOK {
				t.Errorf("exit %d after the context ended: %s", code, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines:\n%s", len(lines), out)
			}
			if strings.Contains(out, "de:ad") || strings.Contains(out, "deadbeef") {
				t.Errorf("password printed:\n%s", out)
			}
			if !strings.Contains(stderr.String(), "ignored a malformed magic packet from 127.0.0.1:") ||
				!strings.Contains(stderr.String(), "followed by 2 bytes") {
				t.Errorf("stderr %q", stderr.String())
			}
			if asJSON {
				var rec struct {
					Via, Source, Target string
					SecureOn            bool
					SecureOnBytes       int `json:"secureon_bytes"`
				}
				if err := json.Unmarshal([]byte(lines[1]), &rec); err != nil {
					t.Fatal(err)
				}
				host, _, _ := net.SplitHostPort(rec.Source)
				if rec.Via != "udp" || host != "127.0.0.1" || rec.Target != "d8:bb:c1:0a:0b:0c" || !rec.SecureOn || rec.SecureOnBytes != 4 {
					t.Errorf("record %+v from %s", rec, lines[1])
				}
				return
			}
			lineRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\S* udp from 127\.0\.0\.1:\d+: magic packet for d8:bb:c1:0a:0b:0c`)
			for _, l := range lines {
				if !lineRE.MatchString(l) {
					t.Errorf("line %q", l)
				}
			}
			if !strings.HasSuffix(lines[0], ", no SecureOn password") || !strings.HasSuffix(lines[1], " with a 4-byte SecureOn password") {
				t.Errorf("lines %q", lines)
			}
		})
	}
}

func TestWOLListenRawNeedsIface(t *testing.T) {
	code, _, stderr := run(t, nil, "wol", "listen", "--iface", "nosuchif0")
	if code != ExitFailure || !strings.Contains(stderr, "nosuchif0") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// The whole CLI path between two test namespaces: `wol listen` in the pc
// namespace (UDP and raw), `wol send` with the default target in the server
// namespace.
func TestWOLSendAndListenInNamespaces(t *testing.T) {
	pair := waketest.NewPair(t, "10.77.0.5/23", "10.77.1.20/23")
	stdout, stderr := newNotifyBuf(), newNotifyBuf()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan int, 1)
	go func() {
		_ = pair.PC.Do(func() error {
			listening <- Run(ctx, &Env{Stdout: stdout, Stderr: stderr, Getenv: func(string) string { return "" }},
				[]string{"gpuctl", "wol", "listen", "--udp", ":9", "--iface", pair.PCDev, "--json"})
			return nil
		})
	}()
	stderr.waitFor(t, "listening line", func(s string) bool { return strings.Contains(s, "listening for magic packets") })

	mac := pair.Veth.BMAC.String()
	cfg := writeInventory(t, fmt.Sprintf(`
[[host]]
name = "gaming-pc"
on_demand = true
mac = %q
address = "10.77.1.20"
`, mac))
	var (
		code     int
		sendErrs bytes.Buffer
	)
	if err := pair.Server.Do(func() error {
		code = Run(context.Background(), &Env{Stderr: &sendErrs, Getenv: func(string) string { return "" }},
			[]string{"gpuctl", "--config", cfg, "wol", "send", "--count", "2", "--interval", "1ms", "gaming-pc"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code != ExitOK {
		t.Fatalf("send: exit %d: %s", code, sendErrs.String())
	}
	if want := "to udp 10.77.1.255:9 via srv0 (directed broadcast of srv0 10.77.0.5/23)"; !strings.Contains(sendErrs.String(), want) {
		t.Errorf("send stderr %q lacks %q", sendErrs.String(), want)
	}
	stdout.waitFor(t, "4 records", func(s string) bool { return strings.Count(s, "\n") >= 4 })
	cancel()
	if c := <-listening; c != ExitOK {
		t.Errorf("listen exit %d: %s", c, stderr.String())
	}
	out := stdout.String()
	var udp, raw int
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct{ Via, Target, Destination, Interface string }
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if rec.Target != mac {
			t.Errorf("target %s, want %s", rec.Target, mac)
		}
		switch rec.Via {
		case "udp":
			udp++
		case "ethernet":
			raw++
			if rec.Destination != "10.77.1.255:9" || rec.Interface != pair.PCDev {
				t.Errorf("raw record %s", l)
			}
		}
	}
	if udp != 2 || raw != 2 {
		t.Errorf("udp %d raw %d, want 2 and 2:\n%s", udp, raw, out)
	}
}
