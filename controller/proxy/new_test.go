package proxy

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/inventory"
)

// TestNewRefusesBadInventory: New names what is wrong with the inventory
// and where, in the order it checks (hosts first, then serve.default_host).
func TestNewRefusesBadInventory(t *testing.T) {
	for _, c := range []struct {
		name  string
		tweak func(*inventory.Inventory)
		want  string
	}{
		{"nil", nil, "proxy: no inventory"},
		{"no ollama_url", func(inv *inventory.Inventory) {
			inv.Hosts[1].OllamaURL = inventory.URL{}
			inv.Serve.DefaultHost = ""
		}, `host "pc" has no ollama_url: set it (or address) in test.toml`},
		{"no default host", func(inv *inventory.Inventory) { inv.Serve.DefaultHost = "" },
			"test.toml: serve.default_host is not set and there is not exactly one always-on host: name the host light models go to"},
		{"unknown default host", func(inv *inventory.Inventory) { inv.Serve.DefaultHost = "nas" },
			`test.toml: serve.default_host "nas" is not a host in the inventory`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var o Options
			if c.tweak != nil {
				o.Inventory = testInventory(t, "http://server:11434", "http://pc:11434")
				c.tweak(o.Inventory)
			}
			p, err := New(o)
			if err == nil {
				p.Close()
				t.Fatalf("New succeeded; want %q", c.want)
			}
			if err.Error() != c.want {
				t.Errorf("err = %q\nwant  %q", err, c.want)
			}
		})
	}
}

// TestNewDefaults: Options left zero get the documented defaults, and the
// default host comes first in the host order.
func TestNewDefaults(t *testing.T) {
	inv := testInventory(t, "http://server:11434", "http://pc:11434")
	inv.Serve.DefaultHost = "pc"
	inv.Serve.MaxInFlight, inv.Serve.MaxBody = 0, 0
	p := newProxy(t, Options{Inventory: inv, StateTTL: 7})
	for name, c := range map[string][2]any{
		"ResponseHeaderTimeout": {p.o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout},
		"StateTTL":              {p.o.StateTTL, time.Duration(7)},
		"RefreshInterval":       {p.o.RefreshInterval, DefaultRefreshInterval},
		"DrainTimeout":          {p.o.DrainTimeout, DefaultDrainTimeout},
		"WakeBackoff":           {p.o.WakeBackoff, DefaultWakeBackoff},
		"ReplayDelay":           {p.o.ReplayDelay, DefaultReplayDelay},
		"DrainPoll":             {p.o.DrainPoll, DefaultDrainPoll},
		"WriteStall":            {p.o.WriteStall, DefaultWriteStall},
		"TrimInterval":          {p.o.TrimInterval, DefaultTrimInterval},
		"max_in_flight":         {cap(p.sem), inventory.DefaultMaxInFlight},
		"max_body":              {p.maxBody, int64(inventory.DefaultMaxBody)},
	} {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if p.o.Now == nil || p.tracker == nil || p.o.Registry == nil || p.reg != p.o.Registry {
		t.Error("Now, Tracker or Registry left unset")
	}
	if len(p.order) != 2 || p.order[0] != "pc" || p.order[1] != "server" {
		t.Errorf("order = %v, want [pc server]", p.order)
	}
}

// TestBackendTransportHonoursProxyEnvironment: serve reaches backends
// through the proxy its environment names, as every gpuctl HTTP client does
// (hosthttp): HTTP_PROXY applies to the PC, NO_PROXY exempts it.
func TestBackendTransportHonoursProxyEnvironment(t *testing.T) {
	inv := testInventory(t, "http://server:11434", "http://pc:11434")
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HTTP_PROXY": "http://proxy.invalid:3128"}, "http://proxy.invalid:3128"},
		{map[string]string{"HTTP_PROXY": "http://proxy.invalid:3128", "NO_PROXY": "pc"}, ""},
		{nil, ""},
	} {
		p := newProxy(t, Options{Inventory: inv, Getenv: func(k string) string { return c.env[k] }})
		req, _ := http.NewRequest(http.MethodGet, "http://pc:11434/api/tags", nil)
		u, err := p.tr.(*http.Transport).Proxy(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(u); c.want == "" && u != nil || c.want != "" && got != c.want {
			t.Errorf("env %v: proxy %v, want %q", c.env, u, c.want)
		}
	}
}
