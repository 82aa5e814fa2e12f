package ollamatest

import (
	"encoding/json"
	"fmt"
)

// ContainerInspect turns a real `docker inspect` capture (any container's
// JSON array) into the stick's Ollama container: the ollama/ollama image's
// environment (no OLLAMA_MODELS: Ollama keeps its models in
// $HOME/.ollama/models) and models_dir bind-mounted at /root/.ollama, as
// the generated NixOS configuration runs it. Every other field stays as
// captured.
func ContainerInspect(capture []byte, modelsDir string) ([]byte, error) {
	var arr []map[string]any
	if err := json.Unmarshal(capture, &arr); err != nil || len(arr) == 0 {
		return nil, fmt.Errorf("docker inspect capture: not a JSON array of containers: %v", err)
	}
	cfg, _ := arr[0]["Config"].(map[string]any)
	if cfg == nil {
		cfg = map[string]any{}
		arr[0]["Config"] = cfg
	}
	cfg["Env"] = []string{
		"PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
		"NVIDIA_DRIVER_CAPABILITIES=compute,utility", "NVIDIA_VISIBLE_DEVICES=all", "OLLAMA_HOST=0.0.0.0:11434",
	}
	arr[0]["Mounts"] = []map[string]any{{"Type": "bind", "Source": modelsDir, "Destination": "/root/.ollama",
		"Mode": "", "RW": true, "Propagation": "rprivate"}}
	return json.MarshalIndent(arr, "", "    ")
}
