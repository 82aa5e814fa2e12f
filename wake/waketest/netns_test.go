package waketest

import (
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func threadNetNS(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNSDoAndCleanup(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		pair := NewPair(t, "10.77.0.5/23", "10.77.1.20/23")
		name = pair.Server.Name
		if !strings.HasPrefix(name, NSPrefix) || pair.Server.Name == pair.PC.Name {
			t.Fatalf("names %q %q", pair.Server.Name, pair.PC.Name)
		}
		var names []string
		var addrs []string
		err := pair.Server.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, ifi := range ifs {
				names = append(names, ifi.Name)
				if ifi.Name == "srv0" {
					as, _ := ifi.Addrs()
					for _, a := range as {
						addrs = append(addrs, a.String())
					}
					if ifi.Flags&net.FlagUp == 0 {
						return errors.New("srv0 is down")
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(names, ",") != "lo,srv0" {
			t.Errorf("interfaces in the server namespace: %v", names)
		}
		if len(addrs) == 0 || addrs[0] != "10.77.0.5/23" {
			t.Errorf("srv0 addresses %v", addrs)
		}
		if out := pair.Server.IP("-4", "addr", "show", "dev", "srv0"); !strings.Contains(out, "brd 10.77.1.255") {
			t.Errorf("no broadcast address set:\n%s", out)
		}
		// The two namespaces reach each other over the veth, by a command run inside.
		out, err := pair.Server.Command(t.Context(), "ip", "neigh", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns exec: %v\n%s", err, out)
		}
		if pair.Veth.AMAC.String() == pair.Veth.BMAC.String() || len(pair.Veth.BMAC) != 6 {
			t.Errorf("MACs %s %s", pair.Veth.AMAC, pair.Veth.BMAC)
		}
		// Errors and panics come back; Goexit is reported, not hung.
		if err := pair.PC.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
			t.Errorf("Do error = %v", err)
		}
		if err := pair.PC.Do(func() error { panic("kaboom") }); err == nil || !strings.Contains(err.Error(), "kaboom") {
			t.Errorf("Do panic = %v", err)
		}
		if err := pair.PC.Do(func() error { runtime.Goexit(); return nil }); err == nil {
			t.Error("Do with Goexit: no error")
		}
	})
	out, err := runIP("netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if name != "" && strings.Contains(out, name) {
		t.Errorf("namespace %s left behind:\n%s", name, out)
	}
}

// After many Do calls, no thread of the process is left in a test namespace.
func TestDoRestoresThreads(t *testing.T) {
	ns := NewNS(t)
	root := threadNetNS(t)
	for range 50 {
		if err := ns.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var inside string
	if err := ns.Do(func() error {
		s, err := os.Readlink("/proc/thread-self/ns/net")
		inside = s
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside == root {
		t.Fatalf("Do ran in the caller's namespace %s", root)
	}
	// Lock many goroutines to threads at once, so idle threads get used.
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	start := make(chan struct{})
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-start
			s, err := os.Readlink("/proc/thread-self/ns/net")
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			seen[s]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if len(seen) != 1 || seen[root] == 0 {
		t.Errorf("threads in namespaces %v, want only %s", seen, root)
	}
}
