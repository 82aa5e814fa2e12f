package sshtest

import (
	"slices"
	"testing"
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
