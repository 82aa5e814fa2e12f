package hostcmd

import (
	"testing"
)

func TestParseStat(t *testing.T) {
	got := ParseStat([]byte("5 /mnt/m/blobs/a b\nstat: junk\n12 /x\n-3 /neg\n\n"))
	if len(got) != 2 || got["/mnt/m/blobs/a b"] != 5 || got["/x"] != 12 {
		t.Errorf("%v", got)
	}
}
