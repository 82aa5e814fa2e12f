package idle

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/controller/activity"
	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

// The real idle script, sent by the real SSH client to the in-process SSH
// server, run by the local sh with stub who, nvidia-smi, ss, ip and ethtool
// that print the captures in controller/fixtures (date, cat /proc/uptime, printenv,
// find, timeout and awk are the system's own).
func TestScriptEndToEnd(t *testing.T) {
	for _, tool := range []string{"sh", "find", "timeout", "awk", "date", "printenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is needed: %v", tool, err)
			}
			t.Skipf("%s not found", tool)
		}
	}
	td := t.TempDir() // the captures, as files for the stubs to cat
	for _, name := range fixtures.Names() {
		if err := os.WriteFile(filepath.Join(td, name), fixtures.Must(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := t.TempDir()
	models := filepath.Join(t.TempDir(), "ollama")
	if err := os.MkdirAll(filepath.Join(models, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(models, "blobs", "sha256-0123-partial")
	if err := os.WriteFile(partial, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(partial, old, old); err != nil {
		t.Fatal(err)
	}
	ssOut := filepath.Join(t.TempDir(), "ss.txt")
	copyFile(t, filepath.Join(td, "ss_Htn_state-established_sport-11434_none_LOCAL.txt"), ssOut)
	stub := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Each stub checks its arguments, so the script's exact argv is tested.
	stub("who", `[ $# -eq 0 ] || exit 64; cat `+shq(filepath.Join(td, "who_utmp-4-sessions_C-locale_LOCAL.txt"))+` | grep -v -e alice -e bob -e carol`)
	stub("nvidia-smi", `[ "$*" = "--query-gpu=utilization.gpu --format=csv,noheader,nounits" ] || exit 64; echo 7`)
	stub("ss", `[ "$*" = "-Htn state established ( sport = :11434 )" ] || exit 64; cat "`+ssOut+`"`)
	stub("ip", `[ "$*" = "-o route get 192.0.2.10" ] || exit 64; cat `+shq(filepath.Join(td, "ip_o_route_get_onlink_LOCAL.txt")))
	stub("ethtool", `[ "$*" = "eth0" ] || exit 64; printf 'Settings for eth0:\n'; cat `+shq(filepath.Join(td, "ethtool_grep-Wake_magic_g.txt")))

	srv := sshtest.New(t, sshtest.Options{})
	srv.HandleFunc(func(raw string, argv []string) bool { return len(argv) > 0 && argv[0] == "sh" },
		func(raw string, stdin io.Reader, stdout, stderr io.Writer) int {
			argv, err := sshtest.SplitWords(raw)
			if err != nil {
				io.WriteString(stderr, err.Error())
				return 255
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "SSH_CONNECTION=192.0.2.10 50522 192.0.2.20 22"}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			if err := cmd.Run(); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return ee.ExitCode()
				}
				io.WriteString(stderr, err.Error())
				return 255
			}
			return 0
		})
	var off atomic.Bool
	srv.HandleFunc(func(raw string, _ []string) bool { return raw == "sudo -n /run/current-system/sw/bin/poweroff" },
		func(string, io.Reader, io.Writer, io.Writer) int { off.Store(true); return 0 })

	ol := ollamatest.Start(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "tiny"}}})
	if err := ol.Install("tiny"); err != nil {
		t.Fatal(err)
	}
	if err := ol.Load("tiny", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, portS, _ := net.SplitHostPort(srv.Addr())
	port, _ := strconv.Atoi(portS)
	u, err := inventory.ParseURL(ol.URL)
	if err != nil {
		t.Fatal(err)
	}
	h := &inventory.Host{Name: "gaming-pc", OnDemand: true, Address: "127.0.0.1", SSHPort: port, SSHUser: "gpuctl",
		OllamaURL: u, ModelsDir: models, IdleAfter: inventory.Duration(time.Nanosecond),
		MinUptime: inventory.Duration(time.Second), GPUBusyPercent: 10}
	// The inventory says 11434 (the port the ss filter uses); the HTTP
	// client below dials the fake's real port instead.
	h.OllamaURL.Host = "127.0.0.1:11434"
	var nd net.Dialer
	d := &Deps{
		StateDir: t.TempDir(),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if off.Load() {
				return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
			}
			return nd.DialContext(ctx, network, addr)
		},
		Connect: func(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
			c, err := sshexec.Dial(ctx, sshexec.Config{Host: h.Name, Addr: srv.Addr(), User: h.SSHUser, HostKey: srv.HostKey(),
				Signers:     []ssh.Signer{srv.ClientSigner()},
				DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }})
			if err != nil {
				return nil, nil, err
			}
			return c, c, nil
		},
		Activity: func(ctx context.Context) (activity.Reading, error) {
			return activity.Reading{State: activity.Stopped}, nil
		},
		Unload: func(ctx context.Context, h *inventory.Host, names []string) error {
			return nil
		},
		OffPoll: 10 * time.Millisecond,
	}
	fake := strings.TrimPrefix(ol.URL, "http://")
	tr := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return nd.DialContext(ctx, network, fake)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	d.HTTP = &http.Client{Transport: tr}

	rep, err := Evaluate(context.Background(), d, h)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		SigProxy:   "proxy stopped; 0 in flight",
		SigOllama:  "1 loaded, none past its expiry: tiny:latest (unloads in",
		SigPulls:   "1 stale partial file(s)",
		SigLogins:  "ignoring 1 session(s) of gpuctl's user gpuctl",
		SigGPU:     "GPU0 7% (busy above 10%)",
		SigClients: "no client on :11434 but the gpuctl server (0 connection(s) from 192.0.2.10)",
		SigUptime:  "up ",
	}
	for _, s := range rep.Signals {
		if s.Busy || !strings.Contains(s.Value, want[s.Name]) {
			t.Errorf("signal %s: busy=%v %q, want idle %q", s.Name, s.Busy, s.Value, want[s.Name])
		}
	}
	if !rep.WOL.Armed || rep.WOL.Interface != "eth0" || rep.WOL.Mode != "g" {
		t.Errorf("wol %+v", rep.WOL)
	}
	if rep.Busy || rep.Uptime <= 0 {
		t.Fatalf("report %+v", rep)
	}

	// A direct client: the v4-v6 capture has 127.0.0.1 and ::1 as peers.
	copyFile(t, filepath.Join(td, "ss_Htn_state-established_sport-11434_v4-v6_LOCAL.txt"), ssOut)
	out, err := Run(context.Background(), d, h, Options{IfIdle: true})
	if out.Action != ActBusy || !strings.Contains(out.Reason, "2 direct client(s) on :11434: 127.0.0.1:43268, [::1]:43814") {
		t.Fatalf("direct clients: %s %s %v", out.Action, out.Reason, err)
	}
	copyFile(t, filepath.Join(td, "ss_Htn_state-established_sport-11434_none_LOCAL.txt"), ssOut)
	if out, err = Run(context.Background(), d, h, Options{IfIdle: true}); out.Action != ActNotYet {
		t.Fatalf("first idle check: %s %s %v", out.Action, out.Reason, err)
	}
	time.Sleep(time.Millisecond) // wall clock: idle_after is 1ns
	out, err = Run(context.Background(), d, h, Options{IfIdle: true})
	if out.Action != ActPoweredOff || err != nil {
		t.Fatalf("poweroff: %s %s %v", out.Action, out.Reason, err)
	}
	var raws []string
	for _, c := range srv.Commands() {
		if c.ArgvErr != nil {
			t.Errorf("command %.60q does not split as sh would: %v", c.Raw, c.ArgvErr)
		}
		raws = append(raws, c.Argv[0])
	}
	if got := strings.Join(raws, " "); got != "sh sh sh sh sudo" {
		t.Errorf("commands %q", got)
	}
	if last := srv.Commands()[len(srv.Commands())-1].Raw; last != "sudo -n /run/current-system/sw/bin/poweroff" {
		t.Errorf("poweroff command %q", last)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// shq single-quotes a path for the stubs.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
