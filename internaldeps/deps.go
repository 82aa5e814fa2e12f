package deps
import (
 _ "golang.org/x/crypto/ssh"
 _ "golang.org/x/crypto/ssh/knownhosts"
 _ "golang.org/x/crypto/ssh/agent"
 _ "github.com/ollama/ollama/api"
 _ "github.com/urfave/cli/v2"
 _ "github.com/BurntSushi/toml"
 _ "github.com/mdlayher/packet"
 _ "github.com/kevinburke/ssh_config"
 _ "github.com/rogpeppe/go-internal/testscript"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/prometheus/client_golang/prometheus/promhttp"
 _ "go.uber.org/goleak"
 _ "github.com/vbauerster/mpb/v8"
 _ "golang.org/x/sys/unix"
 _ "golang.org/x/term"
)
