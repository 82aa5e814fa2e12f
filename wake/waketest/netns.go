package waketest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NSPrefix starts the name of every network namespace the tests create, so a
// leftover one is easy to spot (`ip netns list | grep gpuctl-test-`).
const NSPrefix = "gpuctl-test-"

// ipTimeout bounds each `ip` invocation.
const ipTimeout = 30 * time.Second

// NS is a network namespace created by a test and deleted by its cleanup.
// Links in it vanish with it, veth peers included.
type NS struct {
	Name string
	tb   testing.TB
}

// NewNS creates a uniquely named network namespace (gpuctl-test-<random>)
// with its loopback up, and deletes it when the test ends. It calls
// Require(tb, "ip") first: the test skips without root or ip, and fails
// when CI=true.
func NewNS(tb testing.TB) *NS {
	tb.Helper()
	Require(tb, "ip")
	ns := &NS{Name: NSPrefix + randomHex(4), tb: tb}
	if out, err := runIP("netns", "add", ns.Name); err != nil {
		tb.Fatalf("creating network namespace %s: %v\n%s", ns.Name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := runIP("netns", "delete", ns.Name); err != nil {
			tb.Errorf("deleting network namespace %s: %v\n%s", ns.Name, err, out)
		}
	})
	ns.IP("link", "set", "lo", "up")
	return ns
}

// Path is the namespace's file under /run/netns.
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// IP runs `ip -n NAME args...` and returns its output; a failure fails the
// test. Call it from the test goroutine.
func (ns *NS) IP(args ...string) string {
	ns.tb.Helper()
	full := append([]string{"-n", ns.Name}, args...)
	out, err := runIP(full...)
	if err != nil {
		ns.tb.Fatalf("ip %s: %v\n%s", strings.Join(full, " "), err, out)
	}
	return out
}

// AddAddr assigns an address with its prefix ("10.77.0.5/23") to dev, with
// the broadcast address derived from the prefix (`brd +`), as DHCP clients
// and network managers do.
func (ns *NS) AddAddr(dev, prefix string) {
	ns.tb.Helper()
	ns.IP("addr", "add", prefix, "brd", "+", "dev", dev)
}

// Up brings dev up.
func (ns *NS) Up(dev string) {
	ns.tb.Helper()
	ns.IP("link", "set", dev, "up")
}

// HardwareAddr returns dev's MAC address.
func (ns *NS) HardwareAddr(dev string) net.HardwareAddr {
	ns.tb.Helper()
	var mac net.HardwareAddr
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		ns.tb.Fatalf("netns %s: %v", ns.Name, err)
	}
	return mac
}

// Command returns `ip netns exec NAME name args...`, to run a program (sshd,
// say) inside the namespace.
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace, then switches the
// thread back. Sockets fn creates belong to the namespace for good (they may
// be used from any goroutine afterwards); goroutines fn starts do NOT run in
// it. fn runs on another goroutine, so it must return errors rather than
// call t.Fatal. If the thread cannot be switched back it is never unlocked,
// so the Go runtime terminates it instead of reusing it in the wrong
// namespace.
func (ns *NS) Do(fn func() error) error {
	type result struct{ err error }
	done := make(chan result, 1)
	go func() {
		// Send a result whatever happens, runtime.Goexit included.
		res := result{err: errors.New("netns function exited without returning (runtime.Goexit or t.FailNow inside Do?)")}
		defer func() { done <- res }()
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("opening network namespace %s: %w", ns.Name, err)
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("entering network namespace %s: %w", ns.Name, err)
			return
		}
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the thread dies with this goroutine.
				res.err = errors.Join(res.err, fmt.Errorf("leaving network namespace %s (the thread is discarded): %w", ns.Name, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if r := recover(); r != nil {
				res.err = fmt.Errorf("panic in network namespace %s: %v\n%s", ns.Name, r, debug.Stack())
			}
		}()
		res.err = fn()
	}()
	return (<-done).err
}

// Veth is a veth pair between two namespaces.
type Veth struct {
	A, B *NS // nil means the root namespace
	ADev string
	BDev string
	AMAC net.HardwareAddr
	BMAC net.HardwareAddr
}

var vethSeq atomic.Uint32

// NewVeth creates a veth pair with end aDev in a and bDev in b, and brings
// both ends up. Prefer two test namespaces; a nil a puts that end in the root
// namespace (its name then gets a random suffix, since names there are
// shared, and it is deleted by the cleanup). Empty names become "veth0",
// "veth1"….
func NewVeth(tb testing.TB, a *NS, aDev string, b *NS, bDev string) *Veth {
	tb.Helper()
	if b == nil {
		tb.Fatal("waketest.NewVeth: the b end must be in a test namespace")
	}
	if aDev == "" {
		aDev = fmt.Sprintf("veth%d", vethSeq.Add(1))
	}
	if bDev == "" {
		bDev = fmt.Sprintf("veth%d", vethSeq.Add(1))
	}
	v := &Veth{A: a, B: b, ADev: aDev, BDev: bDev}
	args := []string{}
	if a != nil {
		args = append(args, "-n", a.Name)
	} else {
		Require(tb, "ip")
		v.ADev = "gt" + randomHex(5)
	}
	args = append(args, "link", "add", v.ADev, "type", "veth", "peer", "name", bDev, "netns", b.Name)
	if out, err := runIP(args...); err != nil {
		tb.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if a == nil {
		dev := v.ADev
		tb.Cleanup(func() {
			// Usually gone already with b's namespace.
			_, _ = runIP("link", "delete", dev)
		})
		if out, err := runIP("link", "set", v.ADev, "up"); err != nil {
			tb.Fatalf("ip link set %s up: %v\n%s", v.ADev, err, out)
		}
		ifi, err := net.InterfaceByName(v.ADev)
		if err != nil {
			tb.Fatal(err)
		}
		v.AMAC = ifi.HardwareAddr
	} else {
		a.Up(v.ADev)
		v.AMAC = a.HardwareAddr(v.ADev)
	}
	b.Up(bDev)
	v.BMAC = b.HardwareAddr(bDev)
	return v
}

// Pair is the usual two-namespace setup: a "server" and a "pc" namespace
// joined by a veth pair (dev "srv0" in server, "pc0" in pc) with the given
// addresses and prefixes ("10.77.0.5/23", "10.77.1.20/23"), all up.
type Pair struct {
	Server, PC       *NS
	ServerDev, PCDev string
	Veth             *Veth
}

// NewPair creates two namespaces and a veth pair between them.
func NewPair(tb testing.TB, serverAddr, pcAddr string) *Pair {
	tb.Helper()
	p := &Pair{Server: NewNS(tb), PC: NewNS(tb), ServerDev: "srv0", PCDev: "pc0"}
	p.Veth = NewVeth(tb, p.Server, p.ServerDev, p.PC, p.PCDev)
	if serverAddr != "" {
		p.Server.AddAddr(p.ServerDev, serverAddr)
	}
	if pcAddr != "" {
		p.PC.AddAddr(p.PCDev, pcAddr)
	}
	return p
}

func runIP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
