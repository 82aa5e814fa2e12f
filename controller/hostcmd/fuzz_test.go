package hostcmd

import (
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

// seed adds every fixture whose name has one of the prefixes.
func seed(f *testing.F, prefixes ...string) {
	for _, name := range fixtures.Names() {
		for _, p := range prefixes {
			if strings.HasPrefix(name, p) {
				f.Add(fixtures.Must(name))
			}
		}
	}
}

func FuzzParseGPUs(f *testing.F) {
	seed(f, "nvidia-smi_")
	f.Add([]byte("0, NVIDIA GeForce RTX 3090, GPU-a, 535.98, 24576, [N/A], [Not Supported], 35, P8\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fields := range [][]string{nil, GPUFields} {
			rows, err := ParseQueryCSV(data, fields)
			if err != nil {
				continue
			}
			for _, r := range rows {
				if fields != nil && len(r) > len(fields) {
					t.Fatalf("row has %d keys for %d fields", len(r), len(fields))
				}
			}
			_, _ = ParseGPUs(data, fields)
		}
		gpus, prob := ClassifyNvidiaSMI(data, data, 0, "550.54")
		if prob == nil && len(gpus) == 0 {
			t.Fatal("no GPU and no problem")
		}
	})
}

func FuzzParseNvidiaSMIList(f *testing.F) {
	seed(f, "nvidia-smi_L", "nvidia-smi_error")
	f.Fuzz(func(t *testing.T, data []byte) {
		gpus, err := ParseNvidiaSMIList(data)
		if err == nil {
			for _, g := range gpus {
				if g.Index < 0 {
					t.Fatalf("negative index %d", g.Index)
				}
			}
		}
	})
}

func FuzzParseDockerInspect(f *testing.F) {
	seed(f, "docker_")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseDockerInspect(data)
		if err == nil {
			_, _ = ContainerProblem(c)
		}
		_ = ClassifyDockerError("ollama", data, data, 1)
		_, _ = ContainerGPUProblem("ollama", data, data, 1)
	})
}

func FuzzParseFindmnt(f *testing.F) {
	seed(f, "findmnt")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseFindmnt(data)
		if err == nil {
			if m.Target == "" {
				t.Fatal("mount without target")
			}
			_, _ = MountProblem(m)
		}
	})
}

func FuzzParseDF(f *testing.F) {
	seed(f, "df_")
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseDF(data)
		if err == nil && (r.Size < 0 || r.Avail < 0 || r.Used < 0) {
			t.Fatalf("negative sizes: %+v", r)
		}
	})
}

func FuzzNTFSHint(f *testing.F) {
	seed(f, "ntfs", "touch_")
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = NTFSHint(string(data))
		_ = WriteProbeProblem("/m", data, data, 1)
	})
}
