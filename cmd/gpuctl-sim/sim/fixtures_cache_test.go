package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
)

// dockerInspectRegexp is how dockerInspect adjusted the capture before it
// was cut into a template: the reference the template must reproduce.
func dockerInspectRegexp(container, modelsDir string, started time.Time) string {
	s := string(Fixture(fxDockerInspect))
	s = reEnv.ReplaceAllLiteralString(s, ollamaImageEnv)
	s = reName.ReplaceAllLiteralString(s, `        "Name": "/`+container+`"`)
	s = reMounts.ReplaceAllLiteralString(s, `"Mounts": [
            {
                "Type": "bind",
                "Source": "`+modelsDir+`",
                "Destination": "/root/.ollama",
                "Mode": "",
                "RW": true,
                "Propagation": "rprivate"
            }
        ],`)
	done := false
	return reStartedAt.ReplaceAllStringFunc(s, func(m string) string {
		if done {
			return m
		}
		done = true
		return `"StartedAt": "` + started.UTC().Format(time.RFC3339Nano) + `"`
	})
}

func TestDockerInspectTemplate(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 891011121, time.FixedZone("x", 3600))
	for _, name := range []string{"ollama", "my-ollama_2", ""} {
		got, want := dockerInspect(name, "/mnt/models/ollama", started), dockerInspectRegexp(name, "/mnt/models/ollama", started)
		if got != want {
			t.Errorf("dockerInspect(%q) differs from the capture adjusted by regexp:\n%s", name, firstDiff(got, want))
		}
	}
	got := dockerInspect("ollama", "/mnt/models/ollama", started)
	if !strings.Contains(got, `"StartedAt": "2026-03-04T04:06:07.891011121Z"`) || !strings.Contains(got, `"Name": "/ollama"`) {
		t.Errorf("dockerInspect lacks the adjusted values:\n%.600s", got)
	}
	// Read as gpuctl reads it: the models are in <models_dir>/models.
	st, err := hostcmd.StoreFromInspect([]byte(got), "ollama", "/mnt/models/ollama")
	if err != nil || st.Dir != "/mnt/models/ollama/models" || st.Problem != "" {
		t.Errorf("where the simulated container keeps its models: %+v, %v", st, err)
	}
}

func firstDiff(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo := max(0, i-80)
	return "got  …" + a[lo:min(len(a), i+80)] + "\nwant …" + b[lo:min(len(b), i+80)]
}

func TestNVIDIASMIQueryCached(t *testing.T) {
	fields := []string{"index", "name", "memory.total", "memory.used"}
	first, bad, err := nvidiaSMIQuery(fields, true, false)
	if err != nil || bad != "" {
		t.Fatalf("query: %v %q", err, bad)
	}
	if !strings.HasPrefix(first, "index, name, memory.total [MiB], memory.used [MiB]\n0, NVIDIA GeForce RTX 4080 SUPER, ") {
		t.Errorf("query output:\n%s", first)
	}
	again, _, _ := nvidiaSMIQuery(fields, true, false)
	units, _, _ := nvidiaSMIQuery(fields, true, true)
	if again != first || units == first || !strings.Contains(units, " MiB") {
		t.Errorf("cached answers mix up queries:\nnounits %q\nagain %q\nunits %q", first, again, units)
	}
	for range 2 {
		out, bad, err := nvidiaSMIQuery([]string{"index", "nope"}, false, false)
		if err != nil || out != "" || bad != "Field \"nope\" is not a valid field to query.\n" {
			t.Errorf("unknown field: out %q bad %q err %v", out, bad, err)
		}
	}
	if a, b := findmntJSON("/srv/models", false), findmntJSON("/srv/models", true); a == b || !strings.Contains(a, `"target": "/srv/models"`) {
		t.Errorf("findmnt rw and ro answers:\n%s\n%s", a, b)
	}
}
