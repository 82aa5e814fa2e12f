package cli

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

// The scripts ask gpuctl itself for candidates (--generate-bash-completion),
// as urfave/cli's autocomplete scripts do.
const bashCompletion = `# gpuctl bash completion; add to ~/.bashrc: source <(gpuctl completion bash)
_gpuctl_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  local opts
  if [[ "$cur" == "-"* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _gpuctl_complete gpuctl
`

const zshCompletion = `#compdef gpuctl
# gpuctl zsh completion; add to ~/.zshrc: source <(gpuctl completion zsh)
_gpuctl() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == "-"* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _gpuctl gpuctl
`

func completionCommand(env *Env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "Print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "SHELL",
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "SHELL")
			if err != nil {
				return err
			}
			switch a[0] {
			case "bash":
				fmt.Fprint(env.Stdout, bashCompletion)
			case "zsh":
				fmt.Fprint(env.Stdout, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				fmt.Fprint(env.Stdout, s)
			default:
				return usageError("unknown shell %q (want bash, zsh or fish)", a[0])
			}
			return nil
		},
	}
}
