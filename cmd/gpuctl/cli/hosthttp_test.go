package cli

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/ollamalive/gpuctl/controller/models"
	"github.com/ollamalive/gpuctl/inventory"
)

// TestHTTPClientsHonourProxyEnvironment: every HTTP client the commands
// build (status and wake's controller, the pull inside a wake, gpuctl pull
// and its registry lookups, serve's up checks) comes from hosthttp with the
// command's environment, so HTTP_PROXY and NO_PROXY apply the same way on
// every path. (Serve's forwarding transport: proxy's
// TestBackendTransportHonoursProxyEnvironment.)
func TestHTTPClientsHonourProxyEnvironment(t *testing.T) {
	inv, err := inventory.Load(writeInventory(t, `
[[host]]
name = "gaming-pc"
address = "gaming-pc.invalid"
mac = "aa:bb:cc:dd:ee:ff"
on_demand = true
`), inventory.Env{Home: t.TempDir(), Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := inv.Host("gaming-pc")
	vars := map[string]string{"HTTP_PROXY": "http://proxy.invalid:3128"}
	env := &Env{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}, Getenv: func(k string) string { return vars[k] }}
	env.fill()
	li := &loadedInventory{Inventory: inv}

	m, release, err := modelsManager(env, li, h, false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	clients := map[string]*http.Client{
		"controller (status, wake)":    newController(env, li).HTTP,
		"serve's up checks":            newControllerBackends(env, li).http,
		"gpuctl pull's registry":       m.Manifests.(*models.Registry).HTTP,
		"hostHTTP (status page, pull)": hostHTTP(env, 0),
	}
	req, _ := http.NewRequest(http.MethodGet, "http://gaming-pc.invalid:11434/api/tags", nil)
	for name, c := range clients {
		tr, ok := c.Transport.(*http.Transport)
		if !ok {
			t.Errorf("%s: transport %T, not hosthttp's", name, c.Transport)
			continue
		}
		u, err := tr.Proxy(req)
		if err != nil || u == nil || u.Host != "proxy.invalid:3128" {
			t.Errorf("%s: proxy for the PC = %v, %v; want HTTP_PROXY's proxy.invalid:3128", name, u, err)
		}
	}
}
