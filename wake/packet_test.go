package wake

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/inventory"
)

func mustMAC(t testing.TB, s string) inventory.MAC {
	t.Helper()
	m, err := inventory.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Golden packets, written out byte by byte (not built with the code under
// test). The first is the example in the README of parojocom/magic-packet
// (MAC 12:44:56:C8:12:A8).
var goldens = []struct {
	name     string
	mac      string
	password string // hex, "" for none
	wire     string // hex
}{
	{
		name: "readme-example",
		mac:  "12:44:56:c8:12:a8",
		wire: "FFFFFFFFFFFF124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8124456C812A8",
	},
	{
		name: "no-secureon",
		mac:  "00:11:22:33:44:55",
		wire: `ffffffffffff
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455`,
	},
	{
		name:     "secureon-4",
		mac:      "d8:bb:c1:0a:0b:0c",
		password: "c0a80001",
		wire: `ffffffffffff
			d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c
			d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c
			d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c
			d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c d8bbc10a0b0c
			c0a80001`,
	},
	{
		name:     "secureon-6",
		mac:      "00:11:22:33:44:55",
		password: "010203040506",
		wire: `ffffffffffff
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455
			001122334455 001122334455 001122334455 001122334455
			010203040506`,
	},
}

func TestMagicPacketGolden(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			want := unhex(t, g.wire)
			p := MagicPacket{Target: mustMAC(t, g.mac), Password: unhex(t, g.password)}
			if len(want) != 102+len(p.Password) {
				t.Fatalf("golden is %d bytes", len(want))
			}
			got, err := p.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("MarshalBinary:\n got %x\nwant %x", got, want)
			}
			if p.Len() != len(want) {
				t.Errorf("Len = %d, want %d", p.Len(), len(want))
			}
			back, err := ParseMagicPacket(want)
			if err != nil {
				t.Fatal(err)
			}
			if back.Target != p.Target || !back.Password.Equal(p.Password) {
				t.Fatalf("ParseMagicPacket = %v / %x, want %v / %x", back.Target, []byte(back.Password), p.Target, []byte(p.Password))
			}
		})
	}
}

func TestMagicPacketSizes(t *testing.T) {
	mac := mustMAC(t, "00:11:22:33:44:55")
	for _, tc := range []struct {
		pw      []byte
		size    int
		wantErr bool
	}{
		{nil, 102, false},
		{[]byte{1, 2, 3, 4}, 106, false},
		{[]byte{1, 2, 3, 4, 5, 6}, 108, false},
		{[]byte{1}, 0, true},
		{[]byte{1, 2, 3, 4, 5}, 0, true},
		{[]byte{1, 2, 3, 4, 5, 6, 7, 8}, 0, true},
	} {
		b, err := MagicPacket{Target: mac, Password: tc.pw}.MarshalBinary()
		if (err != nil) != tc.wantErr {
			t.Errorf("password of %d bytes: err = %v, want error %v", len(tc.pw), err, tc.wantErr)
			continue
		}
		if err == nil && len(b) != tc.size {
			t.Errorf("password of %d bytes: %d bytes, want %d", len(tc.pw), len(b), tc.size)
		}
	}
	for _, bad := range []inventory.MAC{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0x00, 0x5e, 0, 0, 1}} {
		if _, err := (MagicPacket{Target: bad}).MarshalBinary(); err == nil {
			t.Errorf("target %s: no error", bad)
		}
	}
}

func TestMagicPacketNeverPrintsPassword(t *testing.T) {
	p := MagicPacket{Target: mustMAC(t, "00:11:22:33:44:55"), Password: []byte("\xde\xad\xbe\xef\x42\x42")}
	for _, s := range []string{p.String(), fmt.Sprintf("%v", p), fmt.Sprintf("%+v", p), fmt.Sprint(p.Password)} {
		if strings.Contains(s, "deadbeef") || strings.Contains(s, "de:ad") || strings.Contains(s, "222 173") || strings.Contains(s, "\xde\xad") {
			t.Errorf("password printed: %q", s)
		}
	}
}

func TestParseMagicPacket(t *testing.T) {
	mac := mustMAC(t, "00:11:22:33:44:55")
	plain, _ := MagicPacket{Target: mac}.MarshalBinary()
	with6, _ := MagicPacket{Target: mac, Password: []byte{1, 2, 3, 4, 5, 6}}.MarshalBinary()
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ff := func(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }
	reps := func(m []byte, n int) []byte { return bytes.Repeat(m, n) }
	m := mac[:]

	for _, tc := range []struct {
		name    string
		in      []byte
		wantPW  []byte
		wantErr string // substring; "" means success
	}{
		{"exact", plain, nil, ""},
		{"with 6-byte password", with6, []byte{1, 2, 3, 4, 5, 6}, ""},
		{"with 4-byte password", cat(plain, []byte{9, 8, 7, 6}), []byte{9, 8, 7, 6}, ""},
		{"after a header", cat([]byte("GPUCTL\x00\x01"), plain), nil, ""},
		{"after zero bytes", cat(make([]byte, 40), with6), []byte{1, 2, 3, 4, 5, 6}, ""},
		{"longer sync run", cat(ff(9), reps(m, 16)), nil, ""},
		{"after a broken attempt", cat(ff(6), reps(m, 15), []byte{0}, plain), nil, ""},
		{"empty", nil, nil, "no magic packet"},
		{"sync only", ff(6), nil, "no magic packet"},
		{"all ff", ff(200), nil, "not a NIC's MAC"},
		{"15 repeats", cat(ff(6), reps(m, 15)), nil, "no magic packet"},
		{"15 repeats then other mac", cat(ff(6), reps(m, 15), []byte{0, 0x11, 0x22, 0x33, 0x44, 0x56}), nil, "no magic packet"},
		{"5 ff", cat(ff(5), reps(m, 16)), nil, "no magic packet"},
		{"1-byte trailer", cat(plain, []byte{1}), nil, "followed by 1 bytes"},
		{"5-byte trailer", cat(plain, []byte{1, 2, 3, 4, 5}), nil, "followed by 5 bytes"},
		{"7-byte trailer", cat(plain, []byte{1, 2, 3, 4, 5, 6, 7}), nil, "followed by 7 bytes"},
		{"two packets", cat(plain, plain), nil, "followed by 102 bytes"},
		{"zero mac", cat(ff(6), make([]byte, 96)), nil, "not a NIC's MAC"},
		{"multicast mac", cat(ff(6), reps([]byte{0x01, 0x00, 0x5e, 0, 0, 1}, 16)), nil, "not a NIC's MAC"},
		{"random text", []byte("hello, this is not a wake-up call"), nil, "no magic packet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseMagicPacket(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if tc.wantErr == "no magic packet" && !errors.Is(err, ErrNoMagic) {
					t.Errorf("err = %v, want ErrNoMagic", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Target != mac {
				t.Errorf("target %s, want %s", p.Target, mac)
			}
			if !bytes.Equal(p.Password, tc.wantPW) {
				t.Errorf("password %x, want %x", []byte(p.Password), tc.wantPW)
			}
			var u MagicPacket
			if err := u.UnmarshalBinary(tc.in); err != nil || u.Target != mac {
				t.Errorf("UnmarshalBinary = %v, %v", u.Target, err)
			}
		})
	}
}

func FuzzParseMagicPacket(f *testing.F) {
	for _, g := range goldens {
		f.Add(unhex(f, g.wire))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 120))
	f.Add(append([]byte("xx"), unhex(f, goldens[1].wire)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseMagicPacket(b)
		if err != nil {
			if p.Target != (inventory.MAC{}) || p.Password != nil {
				t.Fatalf("error %v with a non-zero packet", err)
			}
			return
		}
		wire, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed %v does not marshal: %v", p, err)
		}
		if !bytes.HasSuffix(b, wire) {
			t.Fatalf("parsed packet %x is not the end of the payload %x", wire, b)
		}
		if n := len(p.Password); n != 0 && n != 4 && n != 6 {
			t.Fatalf("password of %d bytes", n)
		}
		again, err := ParseMagicPacket(wire)
		if err != nil || again.Target != p.Target || !again.Password.Equal(p.Password) {
			t.Fatalf("round trip: %v, %v", again, err)
		}
	})
}
