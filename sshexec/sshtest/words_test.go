package sshtest

import (
	"io"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "a b  c", want: []string{"a", "b", "c"}},
		{in: `'a b' "c d" e\ f`, want: []string{"a b", "c d", "e f"}},
		{in: `'it'\''s'`, want: []string{"it's"}},
		{in: `''`, want: []string{""}},
		{in: `"a\"b\\c\d"`, want: []string{`a"b\c\d`}},
		{in: "x\\\ny", want: []string{"xy"}},
		{in: "a=b c#d", want: []string{"a=b", "c#d"}},
		{in: "", want: nil},
		{in: "a; b", bad: true},
		{in: "$(id)", bad: true},
		{in: "`id`", bad: true},
		{in: `"$HOME"`, bad: true},
		{in: "a | b", bad: true},
		{in: "*", bad: true},
		{in: "~/x", bad: true},
		{in: "#c", bad: true},
		{in: "'open", bad: true},
		{in: `"open`, bad: true},
		{in: `x\`, bad: true},
	} {
		got, err := SplitWords(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("SplitWords(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("SplitWords(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzSplitWords(f *testing.F) {
	f.Add(`a 'b c' "d\"e" f\ g`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = SplitWords(s) // must not panic
	})
}

func TestMaxRecordedKeepsTheLatest(t *testing.T) {
	srv := New(t, Options{MaxRecorded: 2, Handler: func(string, io.Reader, io.Writer, io.Writer) int { return 0 }})
	c, err := ssh.Dial("tcp", srv.Addr(), &ssh.ClientConfig{
		User:            "gpuctl",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(srv.ClientSigner())},
		HostKeyCallback: ssh.FixedHostKey(srv.HostKey()),
		Timeout:         5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cmd := range []string{"one", "two", "three"} {
		sess, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := sess.Run(cmd); err != nil {
			t.Fatal(err)
		}
	}
	got := srv.Commands()
	if len(got) != 2 || got[0].Raw != "two" || got[1].Raw != "three" {
		t.Fatalf("recorded %+v, want the latest two", got)
	}
}
