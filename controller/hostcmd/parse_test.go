package hostcmd

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollamalive/gpuctl/controller/fixtures"
)

// fx returns a fixture; safe in SSH and HTTP handler goroutines.
func fx(name string) []byte { return fixtures.Must(name) }

func i64(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// TestGPUQueryFixtures parses every nvidia-smi --query-gpu CSV fixture,
// selecting columns by the header when there is one and by the documented
// field list when there is none.
func TestGPUQueryFixtures(t *testing.T) {
	fan7 := []string{"memory.total", "memory.free", "memory.used", "temperature.gpu", "fan.speed", "utilization.gpu", "utilization.memory"}
	tests := []struct {
		file   string
		fields []string // nil: header line
		want   GPU      // checked fields; -1 means nil
		fan    int64
	}{
		{"nvidia-smi_query-gpu_all-fields_csv_rtx4080super_linux_595.71.05.csv", nil,
			GPU{Name: "NVIDIA GeForce RTX 4080 SUPER", DriverVersion: "595.71.05", PState: "P8", UUID: "GPU-00000000-0000-0000-0000-000000000000"}, 0},
		{"nvidia-smi_query-gpu_all-fields_csv_rtx2080super_windows_610.62.csv", nil,
			GPU{Name: "NVIDIA GeForce RTX 2080 SUPER", DriverVersion: "610.62", PState: "P8", UUID: "GPU-00000000-0000-0000-0000-000000000000"}, 38},
		{"nvidia-smi_query-gpu_all-fields_csv_h100-80gb_linux_590.48.01.csv", nil,
			GPU{Name: "NVIDIA H100 80GB HBM3", DriverVersion: "590.48.01", PState: "P0", UUID: "GPU-00000000-0000-0000-0000-000000000000"}, -1},
		{"nvidia-smi_query-gpu_csv_rtx2080super_linux_465.27.csv", nil,
			GPU{Name: "NVIDIA GeForce RTX 2080 SUPER", DriverVersion: "465.27", PState: "P8", UUID: "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa"}, 38},
		{"nvidia-smi_query-gpu_csv-nounits_tesla-p100.csv", nil,
			GPU{Name: "Tesla P100-PCIE-16GB", PState: "P0", UUID: "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6"}, -1},
		{"nvidia-smi_query-gpu_csv-noheader-nounits_na-fan.csv", fan7, GPU{}, -1},
		{"nvidia-smi_query-gpu_csv-noheader-nounits_not-supported-fan_olddriver.csv", fan7, GPU{}, -1},
		{"nvidia-smi_query-gpu_csv_not-supported_gtx650_410.78.csv", nil, GPU{}, -1},
		{"nvidia-smi_query-gpu_fan-speed_noheader-nounits_not-supported.txt", []string{"fan.speed"}, GPU{}, -1},
	}
	wantMem := map[string][3]int64{ // total, used, util
		"nvidia-smi_query-gpu_all-fields_csv_rtx4080super_linux_595.71.05.csv":      {16376, 596, 0},
		"nvidia-smi_query-gpu_all-fields_csv_rtx2080super_windows_610.62.csv":       {8192, 797, 0},
		"nvidia-smi_query-gpu_all-fields_csv_h100-80gb_linux_590.48.01.csv":         {81559, 0, 0},
		"nvidia-smi_query-gpu_csv_rtx2080super_linux_465.27.csv":                    {7979, 344, 0},
		"nvidia-smi_query-gpu_csv-nounits_tesla-p100.csv":                           {-1, 0, 0},
		"nvidia-smi_query-gpu_csv-noheader-nounits_na-fan.csv":                      {2004, 0, 0},
		"nvidia-smi_query-gpu_csv-noheader-nounits_not-supported-fan_olddriver.csv": {2004, 0, 0},
		"nvidia-smi_query-gpu_csv_not-supported_gtx650_410.78.csv":                  {-1, -1, -1},
		"nvidia-smi_query-gpu_fan-speed_noheader-nounits_not-supported.txt":         {-1, -1, -1},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			gpus, err := ParseGPUs(fx(tc.file), tc.fields)
			if err != nil {
				t.Fatalf("ParseGPUs: %v", err)
			}
			if len(gpus) != 1 {
				t.Fatalf("got %d GPUs, want 1", len(gpus))
			}
			g := gpus[0]
			if g.Name != tc.want.Name || g.DriverVersion != tc.want.DriverVersion || g.PState != tc.want.PState || g.UUID != tc.want.UUID {
				t.Errorf("got name=%q driver=%q pstate=%q uuid=%q, want %q %q %q %q", g.Name, g.DriverVersion, g.PState, g.UUID,
					tc.want.Name, tc.want.DriverVersion, tc.want.PState, tc.want.UUID)
			}
			m := wantMem[tc.file]
			if got := [3]int64{i64(g.MemoryTotalMiB), i64(g.MemoryUsedMiB), i64(g.UtilizationPct)}; got != m {
				t.Errorf("memory total/used, util = %v, want %v", got, m)
			}
			if got := i64(g.FanSpeedPct); got != tc.fan {
				t.Errorf("fan = %d, want %d", got, tc.fan)
			}
		})
	}
}

// TestGPUQueryNoheaderOwnFormat feeds the gpu check's own field list in the
// shapes nvidia-smi prints it: spaces after commas, [N/A], [Not Supported],
// several GPUs.
func TestGPUQueryNoheaderOwnFormat(t *testing.T) {
	out := "0, NVIDIA GeForce RTX 3090, GPU-aaaa, 535.98, 24576, 1, 0, 35, P8\n" +
		"1, NVIDIA GeForce RTX 3090, GPU-bbbb, 535.98, 24576, [N/A], [Not Supported], [N/A], P0\n"
	gpus, prob := ClassifyNvidiaSMI([]byte(out), nil, 0, "535.54")
	if prob != nil {
		t.Fatalf("problem: %v", prob)
	}
	if len(gpus) != 2 || i64(gpus[1].Index) != 1 || gpus[1].MemoryUsedMiB != nil || gpus[1].UtilizationPct != nil || i64(gpus[0].TemperatureC) != 35 {
		t.Fatalf("parsed %+v", gpus)
	}
	if _, prob := ClassifyNvidiaSMI([]byte(out), nil, 0, "550.54"); prob == nil || prob.Kind != "old-driver" {
		t.Fatalf("min_driver 550.54 vs 535.98: got %v, want old-driver", prob)
	}
	if _, prob := ClassifyNvidiaSMI([]byte("0, x, y, 535.98, lots, 1, 0, 35, P8\n"), nil, 0, ""); prob == nil || prob.Kind != "unparsable" {
		t.Fatalf("non-numeric memory: got %v, want unparsable", prob)
	}
}

// TestNvidiaSMIFixtureClassification runs every other nvidia-smi fixture
// through the gpu check's classifier, as if the check had printed it.
func TestNvidiaSMIFixtureClassification(t *testing.T) {
	tests := []struct {
		file string
		exit int
		kind string
		msg  string
	}{
		{"nvidia-smi_error_driver-not-loaded.txt", 9, "driver-not-loaded", "driver not loaded"},
		{"nvidia-smi_error_driver-library-mismatch_exit18.txt", 18, "driver-mismatch", "NVML library 535.161"},
		// Outputs of other nvidia-smi invocations are not what the check
		// asked for: they must be rejected, not misread.
		{"nvidia-smi_table_rtx4080super_idle_595.71.05.txt", 0, "unparsable", ""},
		{"nvidia-smi_table_rtx4080super_load_595.71.05.txt", 0, "unparsable", ""},
		{"nvidia-smi_table_5x-rtx3090_535.98.txt", 0, "unparsable", ""},
		{"nvidia-smi_q_x_rtx4090_535.86.05_trimmed.xml", 0, "unparsable", ""},
		{"nvidia-smi_L_rtx4080super.txt", 0, "unparsable", ""},
		{"nvidia-smi_version_595.71.05.txt", 0, "unparsable", ""},
		{"nvidia-smi_query-compute-apps_csv_rtx4080super_load.csv", 0, "unparsable", ""},
		{"nvidia-smi_query-gpu_all-fields_csv_rtx4080super_linux_595.71.05.csv", 0, "unparsable", ""},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			data := fx(tc.file)
			// Errors go to stdout or stderr depending on the version; try both.
			for _, where := range []string{"stdout", "stderr"} {
				var so, se []byte
				if where == "stdout" {
					so = data
				} else {
					se = data
					if tc.exit == 0 {
						continue
					}
				}
				_, prob := ClassifyNvidiaSMI(so, se, tc.exit, "")
				if prob == nil || prob.Kind != tc.kind || !strings.Contains(prob.Msg, tc.msg) {
					t.Errorf("%s: got %+v, want kind %q containing %q", where, prob, tc.kind, tc.msg)
				}
			}
		})
	}
	if _, prob := ClassifyNvidiaSMI(nil, []byte("sh: nvidia-smi: command not found\n"), 127, ""); prob == nil || prob.Kind != "not-installed" {
		t.Errorf("exit 127: got %v", prob)
	}
	if _, prob := ClassifyNvidiaSMI(nil, nil, 0, ""); prob == nil || prob.Kind != "no-gpu" {
		t.Errorf("empty output: got %v", prob)
	}
}

func TestComputeAppsFixtureByHeader(t *testing.T) {
	rows, err := ParseQueryCSV(fx("nvidia-smi_query-compute-apps_csv_rtx4080super_load.csv"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[1]["process_name"] != "ffmpeg" || rows[0]["gpu_serial"] != "[N/A]" {
		t.Fatalf("rows = %v", rows)
	}
	if v, err := NumValue(rows[1]["used_gpu_memory"]); err != nil || v == nil || *v != 503 {
		t.Fatalf("used_gpu_memory = %v, %v", v, err)
	}
}

func TestNvidiaSMIListFixture(t *testing.T) {
	gpus, err := ParseNvidiaSMIList(fx("nvidia-smi_L_rtx4080super.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) != 1 || gpus[0].Name != "NVIDIA GeForce RTX 4080 SUPER" || gpus[0].UUID != "GPU-00000000-0000-0000-0000-000000000000" {
		t.Fatalf("got %+v", gpus)
	}
	mig := "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n  MIG 1g.5gb      Device  0: (UUID: MIG-2)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-3)\n"
	if gpus, err := ParseNvidiaSMIList([]byte(mig)); err != nil || len(gpus) != 2 || gpus[1].Index != 1 {
		t.Fatalf("MIG listing: %+v, %v", gpus, err)
	}
	for _, f := range []string{"nvidia-smi_error_driver-not-loaded.txt", "nvidia-smi_table_rtx4080super_idle_595.71.05.txt"} {
		if _, err := ParseNvidiaSMIList(fx(f)); err == nil {
			t.Errorf("%s parsed as a GPU list", f)
		}
	}
	msg, transient := ContainerGPUProblem("ollama", nil, fx("nvidia-smi_error_driver-not-loaded.txt"), 9)
	if !strings.Contains(msg, "driver") || transient {
		t.Errorf("driver not loaded in container: %q transient=%v", msg, transient)
	}
	msg, _ = ContainerGPUProblem("ollama", nil, []byte(`OCI runtime exec failed: exec failed: unable to start container process: exec: "nvidia-smi": executable file not found in $PATH: unknown`), 126)
	if !strings.Contains(msg, "not passed through") {
		t.Errorf("missing nvidia-smi in container: %q", msg)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		c    int
		ok   bool
	}{
		{"535.161.07", "535.161", 1, true}, {"550.54", "550.54.14", -1, true}, {"595.71.05", "595.71.05", 0, true},
		{"610.62", "595.71.05", 1, true}, {"", "1", 0, false}, {"5x", "1", 0, false},
	} {
		c, ok := CompareVersions(tc.a, tc.b)
		if c != tc.c || ok != tc.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", tc.a, tc.b, c, ok, tc.c, tc.ok)
		}
	}
}

func TestDockerFixtures(t *testing.T) {
	c, err := ParseDockerInspect(fx("docker_inspect_running_nginx_20.10.5.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "nginx-test" || !c.Running || c.Status != "running" || c.RestartCount != 0 || c.Health != "" ||
		c.StartedAt.Format("2006-01-02T15:04:05") != "2021-11-11T10:14:55" {
		t.Fatalf("nginx: %+v", c)
	}
	if msg, _ := ContainerProblem(c); msg != "" {
		t.Errorf("running container has a problem: %s", msg)
	}

	// The lone .State and .State.Health captures, read as the State of a
	// full inspect entry, the one form gpuctl parses.
	state := fx("docker_inspect_State_running-healthy_postgres.json")
	pc, err := ParseDockerInspect([]byte(`[{"Name":"/postgres","State":` + string(state) + `}]`))
	if err != nil {
		t.Fatal(err)
	}
	if !pc.Running || pc.Health != "healthy" || pc.StartedAt.Year() != 2018 {
		t.Fatalf("postgres state: %+v", pc)
	}
	var hl Health
	if err := json.Unmarshal(fx("docker_inspect_format-json-State.Health_healthy_19.03.5.json"), &hl); err != nil || hl.Status != "healthy" || len(hl.Log) != 1 {
		t.Fatalf("health: %+v, %v", hl, err)
	}

	for _, f := range []string{"docker_ps_daemon-down_26.1.4.txt", "docker_info_daemon-down_26.1.4.txt"} {
		for _, asStdout := range []bool{false, true} {
			so, se := []byte(nil), fx(f)
			if asStdout {
				so, se = se, nil
			}
			p := ClassifyDockerError("ollama", so, se, 1)
			if p == nil || p.Kind != "daemon-down" || !p.Transient || !strings.Contains(p.Msg, "unix:///var/run/docker.sock") {
				t.Errorf("%s: got %+v", f, p)
			}
		}
	}
	// `docker ps --format json` is not `docker inspect`: rejected, not misread.
	if _, err := ParseDockerInspect(fx("docker_ps_format-json_docs-example.jsonl")); err == nil {
		t.Error("docker ps JSON lines parsed as docker inspect")
	}
	for _, text := range []string{"Error: No such object: ollama", "Error: No such container: ollama",
		"Error response from daemon: No such container: ollama"} {
		if p := ClassifyDockerError("ollama", []byte("[]\n"), []byte(text+"\n"), 1); p == nil || p.Kind != "no-container" {
			t.Errorf("%q: got %+v", text, p)
		}
	}
	if _, err := ParseDockerInspect([]byte("[]\n")); err == nil {
		t.Error("empty array accepted")
	}
}

func TestContainerProblems(t *testing.T) {
	for _, tc := range []struct {
		c         Container
		want      string
		transient bool
	}{
		{Container{Status: "restarting", Restarting: true, RestartCount: 4, ExitCode: 1}, "restarting (restart count 4", true},
		{Container{Status: "exited", ExitCode: 128, Error: `could not select device driver "" with capabilities: [[gpu]]`}, "NVIDIA container toolkit", false},
		{Container{Status: "created"}, "created", true},
		{Container{Status: "running", Running: true, Health: "starting"}, "starting", true},
		{Container{Status: "running", Running: true, Health: "unhealthy"}, "unhealthy", true},
	} {
		msg, tr := ContainerProblem(tc.c)
		if !strings.Contains(msg, tc.want) || tr != tc.transient {
			t.Errorf("%+v: got %q transient=%v, want %q transient=%v", tc.c, msg, tr, tc.want, tc.transient)
		}
	}
}

func TestMountFixtures(t *testing.T) {
	m, err := ParseFindmnt(fx("findmnt_json_ntfs-3g_fuseblk_LOCAL.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Target != "/tmp/ntfsmnt" || m.Source != "/dev/loop0" || m.FSType != "fuseblk" || m.ReadOnly {
		t.Fatalf("rw mount: %+v", m)
	}
	if msg, _ := MountProblem(m); msg != "" {
		t.Errorf("rw mount has a problem: %s", msg)
	}
	ro, err := ParseFindmnt(fx("findmnt_json_ntfs-3g_readonly_LOCAL.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !ro.ReadOnly {
		t.Fatalf("ro mount not read-only: %+v", ro)
	}
	if msg, tr := MountProblem(ro); !strings.Contains(msg, "read-only") || !strings.Contains(msg, "Fast Startup") || tr {
		t.Errorf("ro mount: %q transient=%v", msg, tr)
	}
	root := Mount{Dir: "/mnt/models/ollama", Target: "/", FSType: "ext4"}
	if msg, tr := MountProblem(root); !strings.Contains(msg, "not mounted") || !tr {
		t.Errorf("root fs: %q", msg)
	}
	nested := `{"filesystems":[{"target":"/","source":"/dev/sda1","fstype":"ext4","options":"rw","children":[{"target":"/mnt/models","source":"/dev/nvme0n1p3","fstype":"ntfs3","options":"rw,relatime,uid=1000"}]}]}`
	if m, err := ParseFindmnt([]byte(nested)); err != nil || m.FSType != "ntfs3" || m.Target != "/mnt/models" {
		t.Errorf("nested: %+v, %v", m, err)
	}

	// The findmnt-style row fixture is findmnt's table output, not JSON.
	if _, err := ParseFindmnt(fx("findmnt-style_row_ntfs-3g_fuseblk_udisks.txt")); err == nil {
		t.Error("table row parsed as findmnt --json")
	}

	df, err := ParseDF(fx("df_B1_output_ntfs-3g_LOCAL.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if df != (DFRow{Source: "/dev/loop0", FSType: "fuseblk", Size: 268431360, Used: 1855488, Avail: 266575872, Target: "/tmp/ntfsmnt"}) {
		t.Fatalf("df: %+v", df)
	}
	sp := "Filesystem     Type    1B-blocks    Used     Avail Mounted on\n/dev/sdb1      ntfs3   1000 10 990 /mnt/Model Drive\n"
	if df, err := ParseDF([]byte(sp)); err != nil || df.Target != "/mnt/Model Drive" || df.Avail != 990 {
		t.Errorf("df with a space in the target: %+v, %v", df, err)
	}
}

func TestNTFSFixtures(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"touch_on_readonly_ntfs-3g_LOCAL.txt", "Fast Startup"},
		{"ntfs-3g_mount_hibernated_fallback-readonly.txt", "hibernat"},
		{"ntfs-3g_mount_unclean_refused_exit14.txt", "Fast Startup"},
		{"ntfs3_dmesg_volume-dirty_kernel6.9.2.txt", "chkdsk"},
		{"ntfs3_dmesg_volume-dirty_newer-format.txt", "chkdsk"},
		{"ntfs3_mount_dirty_mount-error_kernel6.9.2.txt", "dmesg"},
	} {
		if got := NTFSHint(string(fx(tc.file))); !strings.Contains(got, tc.want) {
			t.Errorf("%s: hint %q lacks %q", tc.file, got, tc.want)
		}
	}
	msg := WriteProbeProblem("/mnt/models/ollama", nil, fx("touch_on_readonly_ntfs-3g_LOCAL.txt"), 1)
	if !strings.Contains(msg, "read-only") || !strings.Contains(msg, "Fast Startup") || !strings.Contains(msg, "hibernation") {
		t.Errorf("write probe on ro: %q", msg)
	}
	if got := WriteProbeProblem("/x", nil, []byte("touch: cannot touch '/x/.gpuctl-probe.1': Permission denied\n"), 1); !strings.Contains(got, "permission denied") {
		t.Errorf("permission: %q", got)
	}
}

// TestWriteProbeScript runs the write probe's script with a local sh, on a
// writable directory, a missing one, and a hostile directory name.
func TestWriteProbeScript(t *testing.T) {
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := filepath.Join(t.TempDir(), `we'ird $(touch pwned) dir`)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := WriteProbeArgs(dir)
	if args[0] != "sh" || args[len(args)-1] != dir {
		t.Fatalf("argv = %q", args)
	}
	if out, err := runLocal(args); err != nil {
		t.Fatalf("write probe failed: %v: %s", err, out)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("probe left %d files behind", len(entries))
	}
	if _, err := os.Stat("pwned"); err == nil {
		t.Fatal("directory name was interpreted by the shell")
	}
	if out, err := runLocal(WriteProbeArgs(filepath.Join(dir, "missing"))); err == nil {
		t.Fatalf("write probe in a missing dir succeeded: %s", out)
	} else if !strings.Contains(WriteProbeProblem("x", nil, out, 1), "does not exist") {
		t.Errorf("missing dir message from %q", out)
	}
}

func runLocal(args []string) ([]byte, error) {
	return exec.Command(args[0], args[1:]...).CombinedOutput()
}
