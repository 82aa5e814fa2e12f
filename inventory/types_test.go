package inventory

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseMAC(t *testing.T) {
	want := MAC{0xa8, 0xa1, 0x59, 0x12, 0x34, 0x56}
	for _, s := range []string{"a8:a1:59:12:34:56", "A8:A1:59:12:34:56", "a8-a1-59-12-34-56", "a8a1.5912.3456", "a8a159123456"} {
		got, err := ParseMAC(s)
		if err != nil || got != want {
			t.Errorf("ParseMAC(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "a8:a1:59:12:34", "a8:a1:59:12:34:56:78", "a8:a1-59:12:34:56", "g8:a1:59:12:34:56",
		"00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "a8a1.5912.345", " a8:a1:59:12:34:56", "a8:a1:59:12:34:5"} {
		if _, err := ParseMAC(s); err == nil {
			t.Errorf("ParseMAC(%q) accepted", s)
		}
	}
	if got := want.String(); got != "a8:a1:59:12:34:56" {
		t.Errorf("String = %q", got)
	}
}

func TestParseHostPort(t *testing.T) {
	for s, want := range map[string]HostPort{
		"192.168.1.255:9":  {"192.168.1.255", 9},
		"[fe80::1]:7":      {"fe80::1", 7},
		"gaming-pc.lan:22": {"gaming-pc.lan", 22},
		"127.0.0.1:11435":  {"127.0.0.1", 11435},
	} {
		got, err := ParseHostPort(s)
		if err != nil || got != want {
			t.Errorf("ParseHostPort(%q) = %v, %v", s, got, err)
		}
		if got.String() != s {
			t.Errorf("round trip %q -> %q", s, got.String())
		}
	}
	for _, s := range []string{"", "127.0.0.1", ":9", "h:0", "h:65536", "h:-1", "h:x", "a b:9", "$(id):9", "fe80::1:9"} {
		if _, err := ParseHostPort(s); err == nil {
			t.Errorf("ParseHostPort(%q) accepted", s)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{"90s": 90 * time.Second, "5m": 5 * time.Minute, "1h30m": 90 * time.Minute, "250ms": 250 * time.Millisecond} {
		got, err := ParseDuration(s)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "300", "3 minutes", "-5m", "5", "1.5", "m"} {
		if _, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) accepted", s)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	for s, want := range map[string]ByteSize{"24GiB": 24 << 30, "500MB": 500e6, "1.5TiB": 1.5 * (1 << 40), "0B": 0, "16 GiB": 16 << 30, "512KiB": 512 << 10, "3TB": 3e12} {
		got, err := ParseByteSize(s)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %d", s, uint64(got), err, uint64(want))
		}
	}
	for _, s := range []string{"", "24", "24 gigs", "GiB", "-1GiB", "1e3GB", "NaNGB", "InfGB", "24gib", "0x10MB", "99999999999TiB"} {
		if _, err := ParseByteSize(s); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", s)
		}
	}
	if got := ByteSize(24 << 30).String(); got != "24.0 GiB" {
		t.Errorf("String = %q", got)
	}
}

func TestParseModelName(t *testing.T) {
	for _, s := range []string{"llama3", "llama3.3:70b", "qwen2.5-coder:32b-instruct-q4_K_M", "library/llama3:latest",
		"registry.local:5000/team/model:v1", "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"} {
		if _, err := ParseModelName(s); err != nil {
			t.Errorf("ParseModelName(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "llama 3", "a;b", "$(id)", "`id`", "../x", "a/../b", "x:y:z", "model:", ":tag", "/abs",
		"-rf", "a\nb", "a'b", "a\"b", "a|b", "a&b", "a>b", "a//b", "a/", "é", strings.Repeat("a", 400)} {
		if _, err := ParseModelName(s); err == nil {
			t.Errorf("ParseModelName(%q) accepted", s)
		}
	}
	if got := ModelName("llama3").Normalize(); got != "llama3:latest" {
		t.Errorf("Normalize = %q", got)
	}
	if got := ModelName("registry.local:5000/m").Normalize(); got != "registry.local:5000/m:latest" {
		t.Errorf("Normalize with registry port = %q", got)
	}
}

func TestParseURL(t *testing.T) {
	if _, err := ParseURL("http://192.0.2.10:11434"); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"", "192.0.2.10:11434", "ftp://h", "http://", "http://user:pw@h:1"} {
		if _, err := ParseURL(s); err == nil {
			t.Errorf("ParseURL(%q) accepted", s)
		}
	}
}

func TestSecureOnNeverPrints(t *testing.T) {
	s, err := ParseSecureOn("01:02:03:04:05:06")
	if err != nil || len(s) != 6 {
		t.Fatalf("ParseSecureOn = %v, %v", s, err)
	}
	if strings.Contains(s.String(), "01") {
		t.Fatalf("secret printed: %s", s)
	}
	h := Host{Name: "pc", WOLPassword: s}
	j, _ := json.Marshal(h)
	if bytes.Contains(j, []byte(base64.StdEncoding.EncodeToString(s))) || !bytes.Contains(j, []byte("(redacted)")) {
		t.Fatalf("JSON leaks the secret: %s", j)
	}
	if g := fmt.Sprintf("%#v", h); strings.Contains(g, "0x1, 0x2") {
		t.Fatalf("%%#v leaks the secret: %s", g)
	}
	for _, bad := range []string{"01:02:03", "zz:02:03:04", "01020304050607"} {
		if _, err := ParseSecureOn(bad); err == nil {
			t.Errorf("ParseSecureOn(%q) accepted", bad)
		}
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"a8:a1:59:12:34:56", "a8-a1-59-12-34-56", "a8a1.5912.3456", "a8a159123456", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMAC(s)
		if err != nil {
			return
		}
		again, err := ParseMAC(m.String())
		if err != nil || again != m {
			t.Fatalf("round trip of %q via %q failed: %v", s, m, err)
		}
	})
}

func FuzzParseHostPort(f *testing.F) {
	for _, s := range []string{"192.168.1.255:9", "[fe80::1]:7", "h:22", ":9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hp, err := ParseHostPort(s)
		if err != nil {
			return
		}
		if hp.Port == 0 || hp.Host == "" {
			t.Fatalf("accepted %q as %+v", s, hp)
		}
		again, err := ParseHostPort(hp.String())
		if err != nil || again != hp {
			t.Fatalf("round trip of %q failed: %+v %v", s, again, err)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"90s", "5m", "1h30m", "300", "-1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d < 0 {
			t.Fatalf("negative duration accepted: %q", s)
		}
	})
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"24GiB", "500MB", "1.5TiB", "0B", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ParseByteSize(s)
	})
}

func FuzzParseModelName(f *testing.F) {
	for _, s := range []string{"llama3.3:70b", "a;b", "../x", "registry.local:5000/team/model:v1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseModelName(s)
		if err != nil {
			return
		}
		if strings.ContainsAny(string(m), " ;$`'\"\\|&<>\n\x00") || strings.Contains(string(m), "..") {
			t.Fatalf("dangerous model name accepted: %q", m)
		}
	})
}
