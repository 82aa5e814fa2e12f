package hosthttp

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The gaming PC's name in these tests. No test resolves or dials it: a
// proxied request only names it to the (loopback) proxy, and the direct
// case's Dial records the address and refuses.
const pc = "gaming-pc.invalid:11434"

func TestProxyEnvironment(t *testing.T) {
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Method+" "+r.RequestURI)
		io.WriteString(w, `{"version":"0.17.4"}`)
	}))
	defer proxy.Close()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "direct")
	}))
	defer backend.Close()

	for _, tc := range []struct {
		name    string
		env     map[string]string
		url     string
		proxied bool
	}{
		{"HTTP_PROXY", map[string]string{"HTTP_PROXY": proxy.URL}, "http://" + pc + "/api/version", true},
		{"lower-case http_proxy", map[string]string{"http_proxy": proxy.URL}, "http://" + pc + "/api/version", true},
		{"NO_PROXY names the PC", map[string]string{"HTTP_PROXY": proxy.URL, "NO_PROXY": "gaming-pc.invalid"}, "http://" + pc + "/api/version", false},
		{"HTTPS_PROXY only for https", map[string]string{"HTTPS_PROXY": proxy.URL}, "http://" + pc + "/api/version", false},
		{"loopback is never proxied", map[string]string{"HTTP_PROXY": proxy.URL}, backend.URL + "/", false},
		{"no environment", nil, "http://" + pc + "/api/version", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			var dialed []string
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				dialed = append(dialed, addr)
				if addr == pc {
					return nil, errors.New("refused by the test")
				}
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			c := NewClient(Options{Dial: dial, Getenv: func(k string) string { return tc.env[k] }})
			defer c.CloseIdleConnections()
			resp, err := c.Get(tc.url)
			if tc.proxied {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if len(seen) != 1 || seen[0] != "GET http://"+pc+"/api/version" {
					t.Errorf("proxy saw %q", seen)
				}
				return
			}
			if len(seen) != 0 {
				t.Errorf("proxied %q, want a direct dial", seen)
			}
			if strings.Contains(tc.url, pc) {
				var de *DialError
				if !errors.As(err, &de) || de.Addr != pc {
					t.Errorf("err = %v, want a DialError for %s (dialed %q)", err, pc, dialed)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "direct" {
				t.Errorf("body %q", b)
			}
		})
	}
}
