package controller

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/ollamalive/gpuctl/controller/idle"
	"github.com/ollamalive/gpuctl/controller/statedir"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestClassifyDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, refused := net.Dial("tcp", closed)
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_, deadline := (&net.Dialer{}).DialContext(ctx, "tcp", closed)
	for _, tc := range []struct {
		err  error
		want sshexec.ProbeKind
	}{
		{nil, sshexec.ProbeOK},
		{refused, sshexec.ProbeRefused},
		{deadline, sshexec.ProbeTimeout},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}, sshexec.ProbeUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}, sshexec.ProbeUnreachable},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ETIMEDOUT)}, sshexec.ProbeTimeout},
		{&sshexec.OpError{Op: "dial", Err: context.DeadlineExceeded}, sshexec.ProbeTimeout},
		{errors.New("something else"), sshexec.ProbeOther},
	} {
		if got := sshexec.ClassifyDialError(tc.err); got != tc.want {
			t.Errorf("ClassifyDialError(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestStateExitCodes(t *testing.T) {
	want := map[State]int{StateReady: 0, StateDegraded: 4, StateOff: 5, StateOtherOS: 5, StateBooting: 3, StateUnknown: 3}
	for s, c := range want {
		if s.ExitCode() != c {
			t.Errorf("%s exit %d, want %d", s, s.ExitCode(), c)
		}
	}
	if Worse(StateReady, StateDegraded) != StateDegraded || Worse(StateOff, StateDegraded) != StateOff || Worse(StateUnknown, StateOff) != StateUnknown {
		t.Error("Worse ordering")
	}
}

func TestStatusReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
		dir := t.TempDir()
		c := pc.controller(dir)
		st := c.Status(t.Context(), pc.host())
		if st.State != StateReady {
			t.Fatalf("state %s (%s), checks %+v", st.State, st.Reason, st.Checks)
		}
		if len(st.Checks) != 8 {
			t.Errorf("%d checks, want 8", len(st.Checks))
		}
		if len(st.GPU) != 1 || st.GPU[0].Name != "NVIDIA GeForce RTX 4080 SUPER" || st.Container == nil || len(st.Container.GPUs) != 1 ||
			st.Mount == nil || st.Mount.FSType != "fuseblk" || st.Mount.FreeBytes == nil || st.Mount.Writable == nil || !*st.Mount.Writable ||
			st.Ollama == nil || st.Ollama.Version != "0.5.1" || len(st.Ollama.Missing) != 0 {
			t.Errorf("status sections: %+v", st)
		}
		if pc.conns != 1 {
			t.Errorf("%d SSH connections, want 1", pc.conns)
		}
		// The remote commands are exactly the fixed templates.
		want := []string{
			"nvidia-smi '--query-gpu=index,name,uuid,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,pstate' '--format=csv,noheader,nounits'",
			"sudo -n /run/current-system/sw/bin/docker inspect --type container ollama",
			"sudo -n /run/current-system/sw/bin/docker exec ollama nvidia-smi -L",
			"findmnt --json --target /mnt/models/ollama",
			"df -B1 '--output=source,fstype,size,used,avail,target' -- /mnt/models/ollama",
			`sh -c 'f="$1/.gpuctl-probe.$$"; touch "$f" || exit 1; sync "$f"; s=$?; rm -f "$f" || s=1; exit $s' sh /mnt/models/ollama`,
		}
		got := strings.Join(pc.commands, "\n")
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("command %q not run; ran:\n%s", w, got)
			}
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		for _, k := range []string{"name", "state", "since", "checks", "gpu", "container", "mount", "ollama", "boot_eta"} {
			if _, ok := m[k]; !ok {
				t.Errorf("JSON lacks %q: %s", k, b)
			}
		}
		// Since stays put while the state does not change.
		time.Sleep(time.Minute)
		st2 := c.Status(t.Context(), pc.host())
		if !st2.Since.Equal(st.Since) {
			t.Errorf("since moved from %v to %v", st.Since, st2.Since)
		}
	})
}

func TestStatusOffAnswersWithinTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		c := pc.controller(t.TempDir())
		start := time.Now()
		st := c.Status(t.Context(), pc.host())
		if el := time.Since(start); el != DefaultProbeTimeout {
			t.Errorf("status of an off host took %v, want exactly %v", el, DefaultProbeTimeout)
		}
		if st.State != StateOff || !strings.Contains(st.Reason, "did not answer in time") || st.Probe.SSH.Kind != sshexec.ProbeTimeout {
			t.Errorf("got %s: %s", st.State, st.Reason)
		}
		if pc.wakeCount() != 0 {
			t.Error("status sent a magic packet")
		}
	})
}

func TestStatusProbeClasses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		set   func(*fakePC)
		state State
		probe sshexec.ProbeKind
	}{
		{"refused", func(pc *fakePC) { pc.power = true }, StateBooting, sshexec.ProbeRefused},
		{"unreachable", func(pc *fakePC) { pc.unreach = true }, StateOff, sshexec.ProbeUnreachable},
		{"other-os", func(pc *fakePC) { pc.power, pc.otherOS = true, true }, StateOtherOS, sshexec.ProbeRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pc := newFakePC(t)
				pc.set(tc.set)
				h := pc.host()
				h.OtherOSProbe = 3389
				st := pc.controller(t.TempDir()).Status(t.Context(), h)
				if st.State != tc.state || st.Probe.SSH.Kind != tc.probe {
					t.Errorf("got %s (%s) probe %s, want %s probe %s", st.State, st.Reason, st.Probe.SSH.Kind, tc.state, tc.probe)
				}
			})
		})
	}
}

func TestStatusDegraded(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replies map[string]func(*testing.T) []byte
		exit    int
		failing string
		detail  string
	}{
		{"driver-not-loaded", map[string]func(*testing.T) []byte{CheckGPU: func(t *testing.T) []byte { return fx("nvidia-smi_error_driver-not-loaded.txt") }},
			9, "gpu", "driver not loaded"},
		{"read-only-drive", map[string]func(*testing.T) []byte{
			CheckMount:      func(t *testing.T) []byte { return fx("findmnt_json_ntfs-3g_readonly_LOCAL.json") },
			CheckWriteProbe: func(t *testing.T) []byte { return fx("touch_on_readonly_ntfs-3g_LOCAL.txt") },
		}, 1, "mount,write_probe", "Fast Startup"},
		{"docker-down", map[string]func(*testing.T) []byte{
			CheckContainer:    func(t *testing.T) []byte { return fx("docker_ps_daemon-down_26.1.4.txt") },
			CheckContainerGPU: func(t *testing.T) []byte { return fx("docker_ps_daemon-down_26.1.4.txt") },
		}, 1, "container,container_gpu", "Docker daemon is not running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pc := newFakePC(t)
				pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
				for name, f := range tc.replies {
					out := f(t)
					exit := tc.exit
					if name == CheckMount {
						pc.replies[name] = func(int) sshexec.Result { return sshexec.Result{Stdout: out} }
						continue
					}
					pc.replies[name] = func(int) sshexec.Result { return sshexec.Result{Stderr: out, ExitStatus: exit} }
				}
				st := pc.controller(t.TempDir()).Status(t.Context(), pc.host())
				if st.State != StateDegraded || failingNames(st) != tc.failing || !strings.Contains(st.Reason, tc.detail) {
					t.Errorf("got %s failing %q: %s", st.State, failingNames(st), st.Reason)
				}
			})
		})
	}
}

func TestStatusCheckTimeoutIsUnknown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
		pc.replies[CheckContainerGPU] = func(int) sshexec.Result { return sshexec.Result{Signal: "STALL"} }
		c := pc.controller(t.TempDir())
		c.CheckTimeout = 3 * time.Second
		start := time.Now()
		st := c.Status(t.Context(), pc.host())
		if st.State != StateUnknown || failingNames(st) != CheckContainerGPU || time.Since(start) != 3*time.Second {
			t.Errorf("got %s failing %q after %v: %s", st.State, failingNames(st), time.Since(start), st.Reason)
		}
	})
}

func TestWakeAlreadyReadySendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), WakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != StateReady || res.ExitCode() != 0 || res.Record.Woke || pc.wakeCount() != 0 {
			t.Errorf("state %s woke=%v packets=%d", res.Status.State, res.Record.Woke, pc.wakeCount())
		}
	})
}

func TestWakeBootsAndNoticesSSHFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		dir := t.TempDir()
		c := pc.controller(dir)
		var mu sync.Mutex
		var phases []Phase
		start := time.Now()
		res, err := c.Wake(t.Context(), pc.host(), WakeOptions{Progress: func(p Progress) {
			mu.Lock()
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
			mu.Unlock()
		}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != StateReady || res.ExitCode() != 0 {
			t.Fatalf("state %s: %s", res.Status.State, res.Status.Reason)
		}
		if pc.wakeCount() != 1 || !res.Record.Woke {
			t.Errorf("waker called %d times", pc.wakeCount())
		}
		if d := pc.wokeAt.Sub(start); d != wakeProbeTimeout {
			t.Errorf("first packets after %v, want %v", d, wakeProbeTimeout)
		}
		sshUp := pc.wokeAt.Add(pc.bootIn + pc.sshIn)
		lag := start.Add(time.Duration(res.Record.SSHAfterMS) * time.Millisecond).Sub(sshUp)
		if lag < 0 || lag > DefaultMaxBackoff {
			t.Errorf("SSH noticed %v after it came up, want ≤ %v", lag, DefaultMaxBackoff)
		}
		if el := time.Since(sshUp); el > DefaultMaxBackoff {
			t.Errorf("ready %v after SSH came up", el)
		}
		if got := strings.Join(func() []string {
			var s []string
			for _, p := range phases {
				s = append(s, string(p))
			}
			return s
		}(), ","); got != "probe,boot,checks,done" {
			t.Errorf("phases %s", got)
		}
		// The history gives status its boot ETA.
		recs, err := c.WakeHistory("gaming-pc")
		if err != nil || len(recs) != 1 || recs[0].ReadyAfterMS == 0 || len(recs[0].Phases) != 3 {
			t.Fatalf("history %+v, %v", recs, err)
		}
		st := c.Status(t.Context(), pc.host())
		if st.BootETA == nil || st.BootETA.Samples != 1 || st.BootETA.MedianMS != recs[0].ReadyAfterMS {
			t.Errorf("boot_eta %+v", st.BootETA)
		}
	})
}

func TestWakeNeverBoots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.never = true
		start := time.Now()
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), WakeOptions{Timeout: 45 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el != 45*time.Second {
			t.Errorf("gave up after %v, want 45s", el)
		}
		if res.ExitCode() != 3 || res.Status.State != StateOff || !strings.Contains(res.Status.Reason, "no SSH") {
			t.Errorf("got %s exit %d: %s", res.Status.State, res.ExitCode(), res.Status.Reason)
		}
	})
}

func TestWakeRetriesTransientChecks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		restarting := []byte(`[{"Name":"/ollama","RestartCount":2,"State":{"Status":"restarting","Running":true,"Restarting":true,"ExitCode":1,"StartedAt":"2026-01-01T00:00:00Z"}}]`)
		pc.replies[CheckContainer] = func(n int) sshexec.Result {
			if n < 4 {
				return sshexec.Result{Stdout: restarting}
			}
			return sshexec.Result{Stdout: ollamaInspect(t, "/mnt/models/ollama")}
		}
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), WakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != StateReady {
			t.Fatalf("state %s: %s", res.Status.State, res.Status.Reason)
		}
		if pc.calls[CheckContainer] != 4 || pc.calls[CheckGPU] != 1 {
			t.Errorf("container checked %d times, gpu %d; want 4 and 1", pc.calls[CheckContainer], pc.calls[CheckGPU])
		}
	})
}

func TestWakePermanentFailureStopsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.replies[CheckGPU] = func(int) sshexec.Result {
			return sshexec.Result{Stdout: fx("nvidia-smi_error_driver-library-mismatch_exit18.txt"), ExitStatus: 18}
		}
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), WakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode() != 4 || failingNames(res.Status) != "gpu" || !strings.Contains(res.Status.Reason, "mismatch") {
			t.Errorf("exit %d failing %q: %s", res.ExitCode(), failingNames(res.Status), res.Status.Reason)
		}
		if el := time.Since(pc.wokeAt); el > pc.bootIn+pc.sshIn+time.Second {
			t.Errorf("took %v: waited on a permanent failure", el)
		}
	})
}

func TestWakeHostKeyRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		signer, err := sshtest.NewEd25519Signer()
		if err != nil {
			t.Fatal(err)
		}
		pc.connErr = &sshexec.OpError{Op: "handshake", Addr: sshAddr, Err: &sshexec.HostKeyError{Kind: sshexec.HostKeyMismatch,
			Host: "gaming-pc", Addr: sshAddr, Key: signer.PublicKey(), Known: []sshexec.KnownKey{{Key: signer.PublicKey(), File: "known_hosts", Line: 3}}}}
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), pc.host(), WakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// Stopped at once, exit 1: waiting (exit 3's "not reachable in
		// time") cannot fix a changed key.
		if res.Status.State != StateUnknown || res.ExitCode() != 1 || res.Stopped != StopHostKey || time.Since(pc.wokeAt) > pc.bootIn+pc.sshIn+time.Second {
			t.Errorf("got %s (exit %d, stopped %q) after %v: %s", res.Status.State, res.ExitCode(), res.Stopped, time.Since(pc.wokeAt), res.Status.Reason)
		}
		var hk *sshexec.HostKeyError
		if !errors.As(res.Err, &hk) || hk.Kind != sshexec.HostKeyMismatch {
			t.Errorf("result error %v, want the host key mismatch", res.Err)
		}
		if pc.conns != 1 {
			t.Errorf("%d handshakes after a host key mismatch, want 1", pc.conns)
		}
	})
}

func TestWakeOtherOSNeverWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.otherOS = true, true })
		h := pc.host()
		h.OtherOSProbe = 3389
		res, err := pc.controller(t.TempDir()).Wake(t.Context(), h, WakeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status.State != StateOtherOS || res.ExitCode() != 5 || pc.wakeCount() != 0 {
			t.Errorf("got %s, %d wakes", res.Status.State, pc.wakeCount())
		}
	})
}

type fakePuller struct {
	pc    *fakePC
	calls [][]inventory.ModelName
}

func (p *fakePuller) Pull(ctx context.Context, h *inventory.Host, r sshexec.Runner, names []inventory.ModelName, progress func(string)) error {
	p.calls = append(p.calls, names)
	for _, n := range names {
		progress(string(n) + ": success")
		p.pc.set(func(pc *fakePC) { pc.tags = append(pc.tags, string(n.Normalize())) })
	}
	return nil
}

func TestWakePullsMissingModels(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
		h := pc.host()
		h.Models = toModels("llama3.2", "qwen2.5:32b")
		c := pc.controller(t.TempDir())
		res, err := c.Wake(t.Context(), h, WakeOptions{NoPull: true})
		if err != nil || res.ExitCode() != 4 || failingNames(res.Status) != CheckModels || !strings.Contains(res.Status.Reason, "qwen2.5:32b") {
			t.Fatalf("--no-pull: %v, %+v", err, res.Status)
		}
		p := &fakePuller{pc: pc}
		c.Puller = p
		res, err = c.Wake(t.Context(), h, WakeOptions{})
		if err != nil || res.Status.State != StateReady || len(p.calls) != 1 || len(p.calls[0]) != 1 || p.calls[0][0] != "qwen2.5:32b" {
			t.Fatalf("pull: %v, %+v, calls %v", err, res.Status, p.calls)
		}
		if strings.Join(res.Pulled, ",") != "qwen2.5:32b" {
			t.Errorf("pulled %v", res.Pulled)
		}
		if res, err = c.Wake(t.Context(), h, WakeOptions{}); err != nil || res.Status.State != StateReady || len(p.calls) != 1 {
			t.Errorf("wake with nothing missing: %v %s, %d pulls", err, res.Status.State, len(p.calls))
		}
	})
}

// TestWakeCoalescesInProcess: many concurrent callers, one wake.
func TestWakeCoalescesInProcess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		c := pc.controller(t.TempDir())
		var wg sync.WaitGroup
		results := make([]*WakeResult, 50)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := c.Wake(t.Context(), pc.host(), WakeOptions{})
				if err != nil {
					t.Error(err)
				}
				results[i] = r
			}()
		}
		wg.Wait()
		coalesced := 0
		for _, r := range results {
			if r == nil || r.Status.State != StateReady {
				t.Fatalf("result %+v", r)
			}
			if r.Coalesced {
				coalesced++
			}
		}
		if pc.wakeCount() != 1 || coalesced != 49 {
			t.Errorf("%d wakes, %d coalesced; want 1 and 49", pc.wakeCount(), coalesced)
		}
	})
}

// TestWakeCoalescesAcrossProcesses: two controllers (as two gpuctl
// processes) share a state_dir; the second waits on the lock and reports
// the first one's result.
func TestWakeCoalescesAcrossProcesses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		dir := t.TempDir()
		a, b := pc.controller(dir), pc.controller(dir)
		var ra *WakeResult
		done := make(chan struct{})
		go func() {
			defer close(done)
			var err error
			ra, err = a.Wake(t.Context(), pc.host(), WakeOptions{})
			if err != nil {
				t.Error(err)
			}
		}()
		time.Sleep(5 * time.Second) // a is waiting for the boot
		if !statedir.WakeInProgress(dir, "gaming-pc") {
			t.Error("status cannot see the wake in progress")
		}
		if st := b.Status(t.Context(), pc.host()); st.State != StateBooting {
			t.Errorf("status during a wake: %s (%s)", st.State, st.Reason)
		}
		rb, err := b.Wake(t.Context(), pc.host(), WakeOptions{})
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if !rb.Coalesced || rb.Status.State != StateReady || pc.wakeCount() != 1 || !rb.Record.Finished.Equal(ra.Record.Finished) {
			t.Errorf("second wake: coalesced=%v state=%s wakes=%d", rb.Coalesced, rb.Status.State, pc.wakeCount())
		}
	})
}

func TestWakeCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := pc.controller(t.TempDir()).Wake(ctx, pc.host(), WakeOptions{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLockHost(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	l, err := statedir.LockHost(ctx, dir, "pc", statedir.LockTry)
	if err != nil {
		t.Fatal(err)
	}
	_, err = statedir.LockHost(ctx, dir, "pc", statedir.LockTry)
	if !errors.Is(err, statedir.ErrLocked) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second try: %v", err)
	}
	other, err := statedir.LockHost(ctx, dir, "other-pc", statedir.LockTry)
	if err != nil {
		t.Fatalf("another host's lock: %v", err)
	}
	other.Unlock()
	synctest.Test(t, func(t *testing.T) {
		wctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := statedir.LockHost(wctx, dir, "pc", statedir.LockWait); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("wait on a held lock: %v", err)
		}
	})
	got := make(chan error)
	go func() {
		l2, err := statedir.LockHost(ctx, dir, "pc", statedir.LockWait)
		if err == nil {
			l2.Unlock()
		}
		got <- err
	}()
	l.Unlock()
	l.Unlock()
	if err := <-got; err != nil {
		t.Fatalf("wait after unlock: %v", err)
	}
	if _, err := statedir.LockHost(ctx, "", "pc", statedir.LockTry); err == nil {
		t.Error("empty state dir accepted")
	}
}

func TestBootETA(t *testing.T) {
	recs := []WakeRecord{
		{Woke: true, State: StateReady, ReadyAfterMS: 90000},
		{Woke: true, State: StateReady, ReadyAfterMS: 70000},
		{Woke: false, State: StateReady, ReadyAfterMS: 100},
		{Woke: true, State: StateOff},
		{Woke: true, State: StateReady, ReadyAfterMS: 110000},
	}
	e := BootETAOf(recs)
	if e == nil || e.MedianMS != 90000 || e.Samples != 3 || e.Median != "1m30s" {
		t.Fatalf("%+v", e)
	}
	if BootETAOf(nil) != nil {
		t.Error("ETA without history")
	}
}

func TestHistoryBounded(t *testing.T) {
	c := &Controller{StateDir: t.TempDir(), History: 3}
	for i := range 5 {
		if err := c.appendHistory(WakeRecord{Host: "pc", ReadyAfterMS: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := c.WakeHistory("pc")
	if err != nil || len(recs) != 3 || recs[0].ReadyAfterMS != 2 {
		t.Fatalf("%+v %v", recs, err)
	}
}

// Where the container keeps its models is read from docker inspect: the
// stick's layout puts them in <models_dir>/models; a container whose models
// are on no mount is degraded for status and wake alike, naming the fix.
func TestModelsLocationFromInspect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pc := newFakePC(t)
		pc.set(func(pc *fakePC) { pc.power, pc.sshUp = true, true })
		c := pc.controller(t.TempDir())
		st := c.Status(t.Context(), pc.host())
		if st.State != StateReady || st.Container == nil || st.Container.Models == nil ||
			st.Container.Models.Dir != "/mnt/models/ollama/models" || st.Container.Models.ContainerDir != "/root/.ollama/models" {
			t.Fatalf("stick layout: %s %s, container %+v", st.State, st.Reason, st.Container)
		}
		pc.replies[CheckContainer] = func(int) sshexec.Result {
			return sshexec.Result{Stdout: fx("docker_inspect_running_nginx_20.10.5.json")} // no mounts
		}
		st = c.Status(t.Context(), pc.host())
		if st.State != StateDegraded || !strings.Contains(st.Reason, "keeps its models in /root/.ollama/models, which is on no mount") {
			t.Fatalf("status, models on no mount: %s: %s", st.State, st.Reason)
		}
		res, err := c.Wake(t.Context(), pc.host(), WakeOptions{})
		if err != nil || res.Status.State != StateDegraded || res.Status.Reason != st.Reason {
			t.Fatalf("wake, models on no mount: %v %s: %s (status said %s)", err, res.Status.State, res.Status.Reason, st.Reason)
		}
	})
}

func TestMissingModels(t *testing.T) {
	present := []string{"llama3.2:latest", "deepseek-r1:latest", "127.0.0.1:15000/library/tiny:latest", "qwen2.5:14b"}
	declared := toModels("llama3.2", "registry.ollama.ai/library/deepseek-r1:latest", "127.0.0.1:15000/library/tiny",
		"qwen2.5:32b", "Llama3.2:latest")
	got := MissingModels(declared, present)
	if strings.Join(got, ",") != "qwen2.5:32b" {
		t.Fatalf("missing = %q", got)
	}
}

// TestIdleBoxWords: idle shutdown reports a box running its other OS with
// the state word status uses (idle cannot import this package).
func TestIdleBoxWords(t *testing.T) {
	if idle.BoxOtherOS != string(StateOtherOS) {
		t.Errorf("idle.BoxOtherOS = %q, status says %q", idle.BoxOtherOS, StateOtherOS)
	}
}
