package idle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func wantAction(t *testing.T, out Outcome, err error, want Action) {
	t.Helper()
	if out.Action != want {
		t.Fatalf("action %q (%s; err %v), want %q\nsignals: %+v", out.Action, out.Reason, err, want, out.Report.Signals)
	}
}

// I1: a 10-minute stream with idle_after 5m is never cut off, and the idle
// clock starts when the stream ends.
func TestStreamThenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		out, err := e.cron() // idle before the stream: the sampled signals' clocks start here
		wantAction(t, out, err, ActNotYet)
		time.Sleep(time.Minute)
		end := e.tracker.Begin(e.host.Name)
		for i := 0; i < 10; i++ {
			time.Sleep(time.Minute)
			out, err := e.cron()
			wantAction(t, out, err, ActBusy)
			if !strings.Contains(out.Reason, "1 request(s) in flight") {
				t.Fatalf("reason %q does not name the stream", out.Reason)
			}
			if e.state().IdleSince != nil {
				t.Fatal("idle_since kept while busy")
			}
		}
		time.Sleep(30 * time.Second)
		end()
		ended := time.Now()
		time.Sleep(4*time.Minute + 30*time.Second)
		out, err = e.cron()
		wantAction(t, out, err, ActNotYet)
		if out.Report.IdleSince == nil || !out.Report.IdleSince.Equal(ended) {
			t.Fatalf("idle_since %v, want the stream's end %v", out.Report.IdleSince, ended)
		}
		if st := e.state(); st.IdleSince == nil || !st.IdleSince.Equal(ended) {
			t.Fatalf("persisted idle_since %v, want %v", st.IdleSince, ended)
		}
		time.Sleep(30*time.Second + time.Nanosecond)
		out, err = e.cron()
		wantAction(t, out, err, ActPoweredOff)
		if n := e.box.poweroffCount(); n != 1 {
			t.Fatalf("%d poweroffs", n)
		}
		if st := e.state(); st.Phase != PhaseOff || st.LastPoweroff == nil {
			t.Fatalf("state after poweroff: %+v", st)
		}
		out, err = e.cron()
		wantAction(t, out, err, ActAlreadyOff)
	})
}

// I2: idle for exactly idle_after is not enough; one tick more is.
func TestThresholdIsStrict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		end := e.tracker.Begin(e.host.Name)
		out, err := e.cron()
		wantAction(t, out, err, ActBusy)
		time.Sleep(time.Second)
		end()
		time.Sleep(5 * time.Minute)
		out, err = e.cron()
		wantAction(t, out, err, ActNotYet)
		if out.Report.IdleFor != 5*time.Minute {
			t.Fatalf("idle for %v", out.Report.IdleFor)
		}
		if e.box.poweroffCount() != 0 {
			t.Fatal("powered off at exactly idle_after")
		}
		time.Sleep(time.Nanosecond)
		out, err = e.cron()
		wantAction(t, out, err, ActPoweredOff)
	})
}

// idleEnv returns an env whose box has been idle long enough, so any
// busy signal is the only thing that holds a poweroff back.
func idleEnv(t *testing.T) *env {
	e := newEnv(t)
	out, err := e.cron()
	wantAction(t, out, err, ActNotYet)
	time.Sleep(6 * time.Minute)
	return e
}

// I3, I4, I5, I6: every busy signal holds the poweroff back and resets the
// idle clock; failed checks count as busy.
func TestBusySignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signal string
		setup  func(e *env)
		reason string
	}{
		{"api-ps-500", SigOllama, func(e *env) { e.psFault.Store(true) }, "HTTP 500"},
		{"ssh-timeout", SigUptime, func(e *env) { e.box.set(func(b *simBox) { b.stallScript = true }) }, "ssh:"},
		{"nvidia-smi-fails", SigGPU, func(e *env) { e.box.set(func(b *simBox) { b.gpu, b.gpuExit = gpuErr, 9 }) }, "couldn't communicate with the NVIDIA driver"},
		{"gpu-90", SigGPU, func(e *env) { e.box.set(func(b *simBox) { b.gpu = "90\n" }) }, "GPU0 90%"},
		{"gpu-not-supported", SigGPU, func(e *env) { e.box.set(func(b *simBox) { b.gpu = "[Not Supported]\n" }) }, "cannot report"},
		{"growing-partial", SigPulls, func(e *env) {
			e.box.set(func(b *simBox) {
				p := "/mnt/models/ollama/blobs/sha256-aa-partial"
				b.partials[p] = hostcmd.Partial{Path: p, Size: 4 << 30, Blocks: 10, MTime: time.Now().Add(-time.Hour)}
				b.writing[p] = true
			})
		}, "sha256-aa-partial"},
		{"gpuctl-pull", SigPulls, func(e *env) { e.pull("tiny:latest", 1) }, "gpuctl is pulling tiny:latest"},
		{"login", SigLogins, func(e *env) {
			e.box.set(func(b *simBox) {
				b.who = "gpuctl   pts/1        2024-06-04 21:59 (192.0.2.10)\nalice    pts/0        2024-06-04 21:58 (192.168.1.5)"
			})
		}, "alice on pts/0 from 192.168.1.5"},
		{"direct-client", SigClients, func(e *env) {
			e.box.set(func(b *simBox) {
				b.clients = "0      0      192.0.2.20:11434 192.0.2.10:43248\n0      0      [::ffff:192.0.2.20]:11434 [::ffff:192.0.2.77]:50000"
			})
		}, "192.0.2.77:50000"},
		{"proxy-unreadable", SigProxy, func(e *env) { e.proxyErr.Store(true) }, "could not be read"},
		{"model-past-expiry", SigOllama, func(e *env) {
			e.deps.HTTP = &http.Client{Transport: handlerTransport{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b := fixtures.Must("ollama_api_ps_docs-example.json")
				// expires_at is 2024-06-04T14:38:31-07:00; the box's clock
				// says a minute later.
				w.Header().Set("Date", "Tue, 04 Jun 2024 21:39:31 GMT")
				w.Write(b)
			})}}
		}, "probably generating"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idleEnv(t)
				tc.setup(e)
				out, err := e.cron()
				wantAction(t, out, err, ActBusy)
				if !strings.Contains(out.Reason, tc.reason) {
					t.Errorf("reason %q does not contain %q", out.Reason, tc.reason)
				}
				if e.box.poweroffCount() != 0 {
					t.Fatal("powered off while busy")
				}
				st := e.state()
				if st.IdleSince != nil {
					t.Errorf("idle_since %v kept after a busy check", st.IdleSince)
				}
				if _, ok := st.Since[tc.signal]; ok {
					t.Errorf("signal %s still has an idle clock: %+v", tc.signal, st.Since)
				}
				// The clock restarts: the next idle check is not enough.
				newEnvReset(e)
				time.Sleep(time.Minute)
				out, err = e.cron()
				wantAction(t, out, err, ActNotYet)
				time.Sleep(5 * time.Minute) // exactly idle_after since the first idle check
				out, err = e.cron()
				wantAction(t, out, err, ActNotYet)
				time.Sleep(time.Second)
				out, err = e.cron()
				wantAction(t, out, err, ActPoweredOff)
			})
		})
	}
}

// newEnvReset makes every signal idle again.
func newEnvReset(e *env) {
	e.psFault.Store(false)
	e.proxyErr.Store(false)
	e.pullMu.Lock()
	e.pulls = map[string]int{}
	e.pullMu.Unlock()
	hc := &http.Client{Transport: handlerTransport{h: e.ollama, psFault: &e.psFault}}
	e.deps.HTTP = hc
	e.box.set(func(b *simBox) {
		b.stallScript, b.gpu, b.gpuExit, b.who, b.clients = false, "3\n", 0, "", ""
		for p := range b.writing {
			delete(b.writing, p)
			delete(b.partials, p)
		}
	})
}

// What is not busy: gpuctl's own login and connections, a loaded model
// before its expiry, a stale partial blob, the GPU at the threshold.
func TestIdleDespite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		if err := e.ollama.Load("tiny", 30*time.Minute); err != nil {
			t.Fatal(err)
		}
		e.box.set(func(b *simBox) {
			b.who = "gpuctl   pts/1        Jun  4 21:59 (192.0.2.10)"
			b.clients = "0      0      192.0.2.20:11434 192.0.2.10:43248"
			b.gpu = "10\n"
			p := "/mnt/models/ollama/blobs/sha256-bb-partial"
			b.partials[p] = hostcmd.Partial{Path: p, Size: 1 << 30, Blocks: 4096, MTime: time.Now().Add(-3 * time.Hour)}
		})
		out, err := e.cron()
		wantAction(t, out, err, ActNotYet)
		time.Sleep(5*time.Minute + time.Second)
		out, err = e.cron()
		wantAction(t, out, err, ActPoweredOff)
		if got := e.ollama.Loaded(); len(got) != 0 {
			t.Errorf("still loaded after the shutdown: %v", got)
		}
		if n := e.ollama.Requests("POST /api/generate"); n != 1 {
			t.Errorf("%d unload requests, want 1", n)
		}
	})
}

// A partial blob that was written shortly before the check counts as a
// pull even without an earlier sample (a controller restarted mid-pull);
// once it stops changing and ages, the clock starts from its last write.
func TestPartialRestartMidPull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		p := "/mnt/models/ollama/blobs/sha256-cc-partial-3"
		e.box.set(func(b *simBox) {
			b.partials[p] = hostcmd.Partial{Path: p, Size: 312, Blocks: 8, MTime: time.Now().Add(-30 * time.Second)}
		})
		out, err := e.cron()
		wantAction(t, out, err, ActBusy)
		time.Sleep(2 * time.Minute)
		out, err = e.cron()
		wantAction(t, out, err, ActNotYet)
		if got := out.Report.IdleSince; got == nil || !got.Equal(time.Now()) {
			t.Fatalf("idle_since %v, want now (the pull signal was busy at the last check)", got)
		}
	})
}

// I9: a box woken minutes ago is not eligible, however idle.
func TestMinUptime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		e.host.IdleAfter = inventory.Duration(time.Minute)
		e.box.boot()
		time.Sleep(2 * time.Minute)
		out, err := e.cron()
		wantAction(t, out, err, ActNotYet) // idle clock never starts before boot
		time.Sleep(2 * time.Minute)
		out, err = e.cron()
		wantAction(t, out, err, ActNotElig)
		if !strings.Contains(out.Reason, "up only 4m of min_uptime 10m:") {
			t.Errorf("reason %q", out.Reason)
		}
		time.Sleep(6 * time.Minute)
		out, err = e.cron()
		wantAction(t, out, err, ActPoweredOff)
	})
}

// An idle clock from before a reboot does not count.
func TestIdleClockStartsAtBoot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		e.host.MinUptime = inventory.Duration(time.Minute)
		e.box.set(func(b *simBox) { b.bootAt = time.Now().Add(-90 * time.Second) })
		out, err := e.cron()
		wantAction(t, out, err, ActNotYet)
		if got := out.Report.IdleSince; got == nil || !got.Equal(time.Now().Add(-90*time.Second)) {
			t.Fatalf("idle_since %v, want the boot", got)
		}
	})
}

// W3: Wake-on-LAN not armed: refused, with the fix; nothing unloaded.
func TestWOLNotArmed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		if err := e.ollama.Load("tiny", time.Hour); err != nil {
			t.Fatal(err)
		}
		e.box.set(func(b *simBox) { b.wol = "d" })
		out, err := e.cron()
		wantAction(t, out, err, ActRefused)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "ethtool -s enp40s0 wol g") ||
			!strings.Contains(err.Error(), "Wake-on: d") {
			t.Fatalf("error %v", err)
		}
		if e.box.poweroffCount() != 0 || len(e.ollama.Loaded()) != 1 {
			t.Fatal("acted despite WoL off")
		}
		if st := e.state(); st.LastError == "" || st.Phase != PhaseReady {
			t.Errorf("state %+v", st)
		}
	})
}

// I11: poweroff refused by sudo, or accepted while the box stays up: back
// to ready, reason logged, retried next run.
func TestPoweroffFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		set    func(b *simBox)
		reason string
	}{
		{"sudo-refuses", func(b *simBox) { b.poweroffExit = 1 }, "a password is required"},
		{"stays-up", func(b *simBox) { b.stayUp = true }, "still answers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idleEnv(t)
				e.box.set(tc.set)
				out, err := e.cron()
				wantAction(t, out, err, ActFailed)
				if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("error %v", err)
				}
				st := e.state()
				if st.Phase != PhaseReady || !strings.Contains(st.LastError, tc.reason) {
					t.Fatalf("state %+v", st)
				}
				if !strings.Contains(e.logs.String(), "back to ready") {
					t.Errorf("failure not logged: %s", e.logs)
				}
				e.box.set(func(b *simBox) { b.poweroffExit, b.stayUp = 0, false })
				out, err = e.cron()
				wantAction(t, out, err, ActPoweredOff)
			})
		})
	}
}

// I8: two cron runs at once: one powers off, the other exits on the lock.
func TestConcurrentCronRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		e.box.set(func(b *simBox) { b.scriptDelay = 3 * time.Second })
		var wg sync.WaitGroup
		outs := make([]Outcome, 2)
		errs := make([]error, 2)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = e.cron()
			}()
		}
		wg.Wait()
		if n := e.box.poweroffCount(); n != 1 {
			t.Fatalf("%d poweroffs, want 1", n)
		}
		got := map[Action]int{}
		for i, o := range outs {
			got[o.Action]++
			if o.Action == ActLocked && !errors.Is(errs[i], statedir.ErrLocked) {
				t.Errorf("locked run: %v", errs[i])
			}
		}
		if got[ActPoweredOff] != 1 || got[ActLocked] != 1 {
			t.Fatalf("outcomes %+v", got)
		}
	})
}

// A wake holding the host lock keeps shutdowns off the host.
func TestWakeHoldsLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		lock, err := statedir.LockHost(context.Background(), e.deps.StateDir, e.host.Name, statedir.LockTry)
		if err != nil {
			t.Fatal(err)
		}
		out, err := e.cron()
		wantAction(t, out, err, ActLocked)
		lock.Unlock()
		out, err = e.cron()
		wantAction(t, out, err, ActPoweredOff)
	})
}

func TestNeverActs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		e.host.OnDemand = false
		out, err := e.cron()
		if out.Action != ActRefused || !errors.Is(err, ErrNotOnDemand) {
			t.Fatalf("always-on host: %+v %v", out, err)
		}
		e.host.OnDemand = true
		e.host.OtherOSProbe = 3389
		e.box.set(func(b *simBox) { b.up = false })
		e.deps.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasSuffix(addr, ":3389") {
				e.box.set(func(b *simBox) { b.up = true })
				defer e.box.set(func(b *simBox) { b.up = false })
			}
			return e.box.dial(ctx, network, addr)
		}
		out, err = e.cron()
		wantAction(t, out, err, ActOtherOS)
		if err != nil {
			t.Errorf("--if-idle on the other OS should exit 0: %v", err)
		}
		out, err = Run(context.Background(), e.deps, e.host, Options{})
		if out.Action != ActOtherOS || !errors.Is(err, ErrRefused) {
			t.Fatalf("explicit on the other OS: %+v %v", out, err)
		}
		if e.box.poweroffCount() != 0 {
			t.Fatal("powered off")
		}
	})
}

// Explicit shutdown refuses while requests are in flight, unless forced.
func TestExplicitShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t)
		end := e.tracker.Begin(e.host.Name)
		e.box.set(func(b *simBox) { b.gpu = "95\n" })
		out, err := Run(context.Background(), e.deps, e.host, Options{})
		if out.Action != ActRefused || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("in flight: %+v %v", out, err)
		}
		e.proxyErr.Store(true)
		out, err = Run(context.Background(), e.deps, e.host, Options{})
		if out.Action != ActRefused || !strings.Contains(err.Error(), "cannot be read") {
			t.Fatalf("unreadable proxy: %+v %v", out, err)
		}
		e.proxyErr.Store(false)
		out, err = Run(context.Background(), e.deps, e.host, Options{DryRun: true, Force: true})
		wantAction(t, out, err, ActWouldPower)
		if e.box.poweroffCount() != 0 {
			t.Fatal("dry run powered off")
		}
		out, err = Run(context.Background(), e.deps, e.host, Options{Force: true})
		wantAction(t, out, err, ActPoweredOff)
		end()
		// Explicit without requests: no idle wait needed.
		e.box.boot()
		out, err = Run(context.Background(), e.deps, e.host, Options{})
		wantAction(t, out, err, ActPoweredOff)
	})
}

// A request that arrives while models are being unloaded stops the
// poweroff. With --if-idle that is routine (busy, no error, nothing logged
// above Info: cron mails nothing); an explicit shutdown is refused and says
// why.
func TestRequestWhileDraining(t *testing.T) {
	for _, ifIdle := range []bool{true, false} {
		t.Run(fmt.Sprintf("if-idle=%v", ifIdle), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idleEnv(t)
				if err := e.ollama.Load("tiny", time.Hour); err != nil {
					t.Fatal(err)
				}
				unload := e.deps.Unload
				var end func()
				e.deps.Unload = func(ctx context.Context, h *inventory.Host, names []string) error {
					end = e.tracker.Begin(h.Name)
					return unload(ctx, h, names)
				}
				out, err := Run(context.Background(), e.deps, e.host, Options{IfIdle: ifIdle})
				defer end()
				if e.box.poweroffCount() != 0 {
					t.Fatalf("%d poweroffs", e.box.poweroffCount())
				}
				const why = "1 request(s) arrived through the routing proxy while draining"
				if ifIdle {
					wantAction(t, out, err, ActBusy)
					if err != nil || !strings.Contains(out.Reason, why) {
						t.Fatalf("reason %q, err %v", out.Reason, err)
					}
					if strings.Contains(e.logs.String(), "level=WARN") || strings.Contains(e.logs.String(), "level=ERROR") {
						t.Errorf("a routine abort logged above Info:\n%s", e.logs)
					}
				} else {
					wantAction(t, out, err, ActRefused)
					if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), "--force") {
						t.Fatalf("error %v", err)
					}
				}
				st := e.state()
				if st.Phase != PhaseReady || st.IdleSince != nil || len(st.BusyReasons) != 1 || !strings.Contains(st.BusyReasons[0], why) {
					t.Errorf("state %+v", st)
				}
				if _, draining, _ := statedir.Draining(e.deps.StateDir, e.host.Name); draining {
					t.Error("the aborted shutdown left its draining marker")
				}
			})
		})
	}
}

// --dry-run shows every signal and writes nothing.
func TestDryRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idleEnv(t)
		before, _ := os.ReadFile(statedir.IdleFile(e.deps.StateDir, e.host.Name))
		out, err := Run(context.Background(), e.deps, e.host, Options{IfIdle: true, DryRun: true})
		wantAction(t, out, err, ActWouldPower)
		after, _ := os.ReadFile(statedir.IdleFile(e.deps.StateDir, e.host.Name))
		if string(before) != string(after) {
			t.Error("dry run wrote the state")
		}
		var names []string
		for _, s := range out.Report.Signals {
			names = append(names, s.Name)
			if s.Value == "" {
				t.Errorf("signal %s has no value", s.Name)
			}
		}
		if strings.Join(names, ",") != strings.Join(signalOrder, ",") {
			t.Errorf("signals %v, want %v", names, signalOrder)
		}
		if !out.Report.WOL.Armed || out.Report.WOL.Interface != "enp40s0" {
			t.Errorf("wol %+v", out.Report.WOL)
		}
		if e.box.poweroffCount() != 0 {
			t.Fatal("dry run powered off")
		}
		// Evaluate is the same view, for gpuctl status.
		rep, err := Evaluate(context.Background(), e.deps, e.host)
		if err != nil || !rep.PowerOff() {
			t.Fatalf("evaluate: %+v %v", rep, err)
		}
	})
}

// A rejected host key or login never clears up by itself, so a cron run
// says so (exit 1, cron mails) instead of leaving the box up in silence; a
// passing SSH problem (a timeout) stays a routine, quiet outcome.
func TestCronReportsPermanentSSHFailures(t *testing.T) {
	key, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		err     error
		refused bool
	}{
		{"host-key", &sshexec.HostKeyError{Kind: sshexec.HostKeyMismatch, Host: "gaming-pc", Addr: "192.0.2.20:22", Key: key.PublicKey()}, true},
		{"auth", &sshexec.AuthError{}, true},
		{"timeout", context.DeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idleEnv(t)
				e.deps.Connect = func(ctx context.Context, h *inventory.Host, conn net.Conn) (sshexec.Runner, io.Closer, error) {
					conn.Close()
					return nil, nil, tc.err
				}
				out, err := e.cron()
				if out.Action != ActNotReady {
					t.Fatalf("action %q, want %q", out.Action, ActNotReady)
				}
				if got := errors.Is(err, ErrRefused); got != tc.refused {
					t.Fatalf("cron error %v: refused=%v, want %v", err, got, tc.refused)
				}
				if e.box.poweroffCount() != 0 {
					t.Fatal("powered off without SSH")
				}
			})
		})
	}
}
