package hostcmd

import (
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

func TestParseDFAvail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: string(fixtures.Read(t, "df_B1_output_ntfs-3g_LOCAL.txt")), want: 266575872},
		{in: "    Avail\n266575872\n", want: 266575872},
		{in: "Avail\n0\n", want: 0},
		{in: "  Avail\n", err: "want a header and a row"},
		{in: "Used\n5\n", err: "no Avail column"},
		{in: "Avail\n1.5G\n", err: "not a byte count"},
		{in: "Avail\n-1\n", err: "not a byte count"},
		{in: "Filesystem Avail\n/dev/x\n", err: "has no column 2"},
	} {
		got, err := ParseDFAvail([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseDFAvail(f *testing.F) {
	f.Add(fixtures.Read(f, "df_B1_output_ntfs-3g_LOCAL.txt"))
	f.Add([]byte("Avail\n12\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseDFAvail(b)
		if err == nil && n < 0 {
			t.Fatalf("negative %d", n)
		}
	})
}

func TestParseStat(t *testing.T) {
	got := ParseStat([]byte("5 /mnt/m/blobs/a b\nstat: junk\n12 /x\n-3 /neg\n\n"))
	if len(got) != 2 || got["/mnt/m/blobs/a b"] != 5 || got["/x"] != 12 {
		t.Errorf("%v", got)
	}
}
