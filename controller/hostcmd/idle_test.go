package hostcmd

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	return fixtures.Read(t, name)
}

func TestParseEthtoolFixtures(t *testing.T) {
	for _, tc := range []struct {
		file      string
		mode      string
		supports  string
		armed     bool
		wantError bool
	}{
		{"ethtool_grep-Wake_magic_g.txt", "g", "pumbg", true, false},
		{"ethtool_grep-Wake_disabled_d.txt", "d", "pumbg", false, false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			w, err := ParseEthtool(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if w.Mode != tc.mode || w.Supports != tc.supports || w.Armed() != tc.armed {
				t.Errorf("got %+v armed=%v; want mode %q supports %q armed %v", w, w.Armed(), tc.mode, tc.supports, tc.armed)
			}
		})
	}
	// Lines ethtool prints without the right to read WoL settings, or for
	// a NIC without WoL: no Wake-on line at all.
	for _, in := range []string{"Settings for lo:\n\tLink detected: yes\n", "", "\tWake-on: g\n\tWake-on: d\n", "\tWake-on: xyz\n", "\tWake-on:\n"} {
		if w, err := ParseEthtool([]byte(in)); err == nil {
			t.Errorf("ParseEthtool(%q) = %+v, want an error", in, w)
		}
	}
}

func TestParseWhoLocalCaptures(t *testing.T) {
	want := []Login{
		{User: "alice", Line: "pts/0", From: "192.168.1.5"},
		{User: "gpuctl", Line: "pts/1", From: "192.168.1.10"},
		{User: "bob", Line: "tty1"},
		{User: "carol", Line: "pts/2", From: ":0"},
	}
	for file, times := range map[string][]string{
		"who_utmp-4-sessions_C-locale_LOCAL.txt":      {"Jun  4 21:58", "Jun  4 21:59", "Jun  4 22:00", "Jun  4 22:01"},
		"who_utmp-4-sessions_C.utf8-locale_LOCAL.txt": {"2024-06-04 21:58", "2024-06-04 21:59", "2024-06-04 22:00", "2024-06-04 22:01"},
	} {
		ls, err := ParseWho(readTestdata(t, file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(ls) != len(want) {
			t.Fatalf("%s: %d logins, want %d: %+v", file, len(ls), len(want), ls)
		}
		for i, l := range ls {
			w := want[i]
			w.Time = times[i]
			if l != w {
				t.Errorf("%s line %d: %+v, want %+v", file, i+1, l, w)
			}
		}
	}
	// Strictness: what is not "user tty date time (host)" is an error.
	for _, in := range []string{
		"alice pts/0\n",
		"alice    pts/0        Jun  4 21:58   ?             1 (192.168.1.5)\n", // who -u
		"alice    pts/0        yesterday (x)\n",
		"Last login: Tue Jun  4 21:58:00 2024\n",
	} {
		if ls, err := ParseWho([]byte(in)); err == nil {
			t.Errorf("ParseWho(%q) = %+v, want an error", in, ls)
		}
	}
	if ls, err := ParseWho(nil); err != nil || len(ls) != 0 {
		t.Errorf("empty who: %v %v", ls, err)
	}
	// tmux's comment holds parentheses.
	ls, err := ParseWho([]byte("dave     pts/3        2024-06-04 22:05 (tmux(1234).%0)\n"))
	if err != nil || len(ls) != 1 || ls[0].From != "tmux(1234).%0" {
		t.Errorf("tmux line: %+v %v", ls, err)
	}
}

func TestParseSSLocalCaptures(t *testing.T) {
	cs, err := ParseSS(readTestdata(t, "ss_Htn_state-established_sport-11434_v4-v6_LOCAL.txt"), 11434)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Peer.Addr() != netip.MustParseAddr("127.0.0.1") || cs[1].Peer.Addr() != netip.MustParseAddr("::1") ||
		cs[0].Peer.Port() != 43268 || cs[1].Local.Port() != 11434 {
		t.Errorf("v4-v6: %+v", cs)
	}
	cs, err = ParseSS(readTestdata(t, "ss_Htn_state-established_sport-11434_v4mapped_LOCAL.txt"), 11434)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Peer.Addr() != netip.MustParseAddr("192.0.2.2") || cs[1].Peer.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("v4-mapped peers must be unmapped: %+v", cs)
	}
	cs, err = ParseSS(readTestdata(t, "ss_Htn_state-established_sport-11434_none_LOCAL.txt"), 11434)
	if err != nil || len(cs) != 0 {
		t.Errorf("none: %+v %v", cs, err)
	}
	// ESTAB column (more than one state selected) and scoped addresses.
	cs, err = ParseSS([]byte("ESTAB 0      0      [fe80::1%eth0]:11434 [fe80::2]%eth0:5000\n"), 11434)
	if err != nil || len(cs) != 1 || cs[0].Peer.Addr() != netip.MustParseAddr("fe80::2") {
		t.Errorf("scoped: %+v %v", cs, err)
	}
	for _, in := range []string{
		"Recv-Q Send-Q Local Address:Port  Peer Address:Port Process\n", // header: -H missing
		"0 0 127.0.0.1:11434\n",
		"0 0 127.0.0.1:22 127.0.0.1:5000\n", // not the filtered port
		"x 0 127.0.0.1:11434 127.0.0.1:5000\n",
		"0 0 127.0.0.1:11434 host.example:5000\n",
		"LISTEN 0 0 127.0.0.1:11434 0.0.0.0:*\n",
		"0 0 127.0.0.1:11434 127.0.0.1:5000 users:((\"ollama\",pid=1,fd=3))\n",
	} {
		if cs, err := ParseSS([]byte(in), 11434); err == nil {
			t.Errorf("ParseSS(%q) = %+v, want an error", in, cs)
		}
	}
}

func TestParseRouteLocalCaptures(t *testing.T) {
	for file, want := range map[string]string{
		"ip_o_route_get_onlink_LOCAL.txt":      "eth0",
		"ip_o_route_get_via-gateway_LOCAL.txt": "eth0",
		"ip_o_route_get_local_LOCAL.txt":       "lo",
	} {
		got, err := ParseRouteDev(readTestdata(t, file))
		if err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", file, got, err, want)
		}
	}
	for _, in := range []string{"", "RTNETLINK answers: Network is unreachable\n", "1.2.3.4 dev\n", "1.2.3.4 dev $(reboot)\n"} {
		if got, err := ParseRouteDev([]byte(in)); err == nil {
			t.Errorf("ParseRouteDev(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseUptime(t *testing.T) {
	d, err := ParseUptime(readTestdata(t, "proc_uptime_LOCAL.txt"))
	if err != nil || d != 600040*time.Millisecond {
		t.Errorf("LOCAL capture: %v %v", d, err)
	}
	for _, in := range []string{"", "12\n", "a b\n", "-1 2\n", "NaN 1\n", "1 2 3\n"} {
		if d, err := ParseUptime([]byte(in)); err == nil {
			t.Errorf("ParseUptime(%q) = %v, want an error", in, d)
		}
	}
}

func TestParseGPUUtilFixtures(t *testing.T) {
	pct := func(us []GPUUtil) []string {
		var out []string
		for _, u := range us {
			if u.Percent == nil {
				out = append(out, "n/a")
			} else {
				out = append(out, strconv.FormatInt(*u.Percent, 10))
			}
		}
		return out
	}
	for _, tc := range []struct {
		file   string
		fields []string
		want   string
	}{
		// --format=csv,nounits with a header: the column is found by name.
		{"nvidia-smi_query-gpu_csv-nounits_tesla-p100.csv", nil, "0"},
		{"nvidia-smi_query-gpu_csv_not-supported_gtx650_410.78.csv", nil, "n/a"},
		// --format=csv,noheader,nounits: the columns are the query's.
		{"nvidia-smi_query-gpu_csv-noheader-nounits_na-fan.csv",
			[]string{"memory.total", "memory.free", "memory.used", "temperature.gpu", "fan.speed", "utilization.gpu", "utilization.memory"}, "0"},
		{"nvidia-smi_query-gpu_csv-noheader-nounits_not-supported-fan_olddriver.csv",
			[]string{"memory.total", "memory.free", "memory.used", "temperature.gpu", "fan.speed", "utilization.gpu", "utilization.memory"}, "0"},
		// The single-column noheader shape gpuctl asks for, as printed for a
		// value the GPU cannot give.
		{"nvidia-smi_query-gpu_fan-speed_noheader-nounits_not-supported.txt", []string{"utilization.gpu"}, "n/a"},
	} {
		us, err := ParseGPUUtil(readTestdata(t, tc.file), tc.fields)
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if got := strings.Join(pct(us), " "); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.file, got, tc.want)
		}
	}
	us, err := ParseGPUUtil([]byte("90\n3\n"), []string{"utilization.gpu"})
	if err != nil || len(us) != 2 || *us[0].Percent != 90 || *us[1].Percent != 3 {
		t.Errorf("two GPUs: %+v %v", us, err)
	}
	for _, file := range []string{"nvidia-smi_error_driver-not-loaded.txt", "nvidia-smi_error_driver-library-mismatch_exit18.txt"} {
		if us, err := ParseGPUUtil(readTestdata(t, file), []string{"utilization.gpu"}); err == nil {
			t.Errorf("%s parsed as %+v, want an error", file, us)
		}
	}
	for _, in := range []string{"", "150\n", "-3\n", "90, 1\n"} {
		if us, err := ParseGPUUtil([]byte(in), []string{"utilization.gpu"}); err == nil {
			t.Errorf("ParseGPUUtil(%q) = %+v, want an error", in, us)
		}
	}
}

func TestParsePartials(t *testing.T) {
	in := "4294967296 1048576 1717538311.1234567890 /mnt/models/ollama/blobs/sha256-aa-partial\n" +
		"312 8 1717538312.5 /mnt/models/ollama/blobs/sha256-aa-partial-0\n" +
		"0 0 1717538313 /mnt/models/with space/blobs/sha256-bb-partial\n"
	ps, err := ParsePartials([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 || ps[0].Blocks != 1048576 || ps[0].MTime.UnixNano() != 1717538311123456789 ||
		ps[1].MTime.UnixNano() != 1717538312500000000 || ps[2].Path != "/mnt/models/with space/blobs/sha256-bb-partial" {
		t.Errorf("%+v", ps)
	}
	for _, in := range []string{"x 1 2 /a-partial\n", "1 2 3\n", "1 2 3 relative-partial\n", "1 2 3 /not-a-blob\n", "find: '/x': Permission denied\n"} {
		if ps, err := ParsePartials([]byte(in)); err == nil {
			t.Errorf("ParsePartials(%q) = %+v, want an error", in, ps)
		}
	}
}

func TestParseSections(t *testing.T) {
	m := "@@gpuctl-0123456789abcdef"
	out := "banner from .bashrc\n" +
		m + " begin now\n1717538311\n\n" + m + " end now 0\n" +
		m + " begin who\n\n" + m + " end who 0\n" +
		m + " begin gpu\nNVIDIA-SMI has failed\n\n" + m + " end gpu 9\n" +
		m + " begin partials\nno trailing newline\n" + m + " end partials 0\n"
	secs, err := ParseSections([]byte(out), m)
	if err != nil {
		t.Fatal(err)
	}
	if string(secs["now"].Out) != "1717538311\n" || secs["now"].Exit != 0 {
		t.Errorf("now: %+v", secs["now"])
	}
	if len(secs["who"].Out) != 0 {
		t.Errorf("who: %q", secs["who"].Out)
	}
	if secs["gpu"].Exit != 9 || string(secs["gpu"].Out) != "NVIDIA-SMI has failed\n" {
		t.Errorf("gpu: %+v", secs["gpu"])
	}
	if string(secs["partials"].Out) != "no trailing newline" {
		t.Errorf("partials: %q", secs["partials"].Out)
	}
	// A forged marker with another nonce is just output.
	secs, err = ParseSections([]byte(m+" begin who\n@@gpuctl-ffffffffffffffff end who 0\nalice pts/0 2024-06-04 21:58\n\n"+m+" end who 0\n"), m)
	if err != nil || !strings.Contains(string(secs["who"].Out), "alice") {
		t.Errorf("forged marker: %+v %v", secs, err)
	}
	// Cut short.
	if _, err := ParseSections([]byte(m+" begin who\nalice\n"), m); err == nil {
		t.Error("a Section without its end must be an error")
	}
}

func FuzzParsers(f *testing.F) {
	for _, name := range []string{"who_utmp-4-sessions_C-locale_LOCAL.txt", "ss_Htn_state-established_sport-11434_v4-v6_LOCAL.txt",
		"ip_o_route_get_via-gateway_LOCAL.txt", "ethtool_grep-Wake_magic_g.txt", "proc_uptime_LOCAL.txt",
		"nvidia-smi_query-gpu_fan-speed_noheader-nounits_not-supported.txt"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseWho(b)
		_, _ = ParseSS(b, 11434)
		_, _ = ParseRouteDev(b)
		if w, err := ParseEthtool(b); err == nil && w.Mode == "" {
			t.Fatal("ethtool: no error and no mode")
		}
		_, _ = ParseUptime(b)
		_, _ = ParsePartials(b)
		_, _ = ParseGPUUtil(b, []string{"utilization.gpu"})
		_, _ = ParseEpoch(b)
		_, _ = ParseSSHConnection(b)
		_, _ = ParseSections(b, "@@gpuctl-0123456789abcdef")
	})
}
