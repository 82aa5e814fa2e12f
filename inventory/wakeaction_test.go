package inventory

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestWakeActionsParse(t *testing.T) {
	for _, tc := range []struct {
		toml string
		want WakeActions
	}{
		{``, WakeActions{{WOL: true}}},
		{`wake = ["wol"]`, WakeActions{{WOL: true}}},
		{`wake = ["curl", "-fsS", "-X", "POST", "http://plug.lan/on"]`, WakeActions{{Argv: []string{"curl", "-fsS", "-X", "POST", "http://plug.lan/on"}}}},
		{`wake = ["wol", ["ipmitool", "-H", "bmc.lan", "-P", "${file:/run/secrets/bmc}", "power", "on"]]`,
			WakeActions{{WOL: true}, {Argv: []string{"ipmitool", "-H", "bmc.lan", "-P", "${file:/run/secrets/bmc}", "power", "on"}}}},
		{`wake = [["/usr/local/bin/plug-on"], "wol"]`, WakeActions{{Argv: []string{"/usr/local/bin/plug-on"}}, {WOL: true}}},
	} {
		src := "[[host]]\nname = \"pc\"\non_demand = true\nmac = \"02:00:00:00:00:01\"\naddress = \"127.0.0.1\"\n" + tc.toml + "\n"
		inv, err := Parse("gpuctl.toml", []byte(src), Env{Getenv: func(string) string { return "" }, Home: t.TempDir()})
		if err != nil {
			t.Errorf("%s: %v", tc.toml, err)
			continue
		}
		if got := inv.Hosts[0].Wake; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.toml, got, tc.want)
		}
		if inv.Hosts[0].WakeTimeout != DefaultWakeTimeout {
			t.Errorf("wake_timeout default: %v", inv.Hosts[0].WakeTimeout)
		}
	}
}

// A host woken by a command alone needs no MAC.
func TestWakeCommandNeedsNoMAC(t *testing.T) {
	src := "[[host]]\nname = \"pc\"\non_demand = true\naddress = \"127.0.0.1\"\nwake = [\"plug-on\"]\n"
	if _, err := Parse("gpuctl.toml", []byte(src), Env{Getenv: func(string) string { return "" }, Home: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
}

func TestWakeActionExpand(t *testing.T) {
	a := WakeAction{Argv: []string{"curl", "-H", "Authorization: Bearer ${env:HA_TOKEN}", "-u", "admin:${file:/run/secrets/plug}", "http://plug/${env:HA_TOKEN}x"}}
	getenv := func(k string) string { return map[string]string{"HA_TOKEN": "s3cret"}[k] }
	read := func(p string) ([]byte, error) {
		if p == "/run/secrets/plug" {
			return []byte("pw\n"), nil
		}
		return nil, errors.New("no such file")
	}
	got, values, err := a.Expand(getenv, read)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"curl", "-H", "Authorization: Bearer s3cret", "-u", "admin:pw", "http://plug/s3cretx"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if !reflect.DeepEqual(values, []string{"s3cret", "pw", "s3cret"}) {
		t.Errorf("values %q", values)
	}
	if s := a.String(); strings.Contains(s, "s3cret") || strings.Contains(s, "pw") {
		t.Errorf("String leaks the secret: %s", s)
	}
	if _, _, err := (WakeAction{Argv: []string{"x", "${env:MISSING}"}}).Expand(getenv, read); err == nil || !strings.Contains(err.Error(), "MISSING") {
		t.Errorf("missing variable: %v", err)
	}
	if _, _, err := (WakeAction{Argv: []string{"x", "${file:/nope}"}}).Expand(getenv, read); err == nil || !strings.Contains(err.Error(), "/nope") {
		t.Errorf("missing file: %v", err)
	}
}
