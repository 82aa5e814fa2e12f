// Package hostcmd is what gpuctl runs on a host over SSH, and what it reads
// back: each tool's fixed argv template next to the parser of its output.
//
//	nvidia-smi --query-gpu=… / -L     GPUQueryArgs, ParseGPUs, ClassifyNvidiaSMI, ParseNvidiaSMIList
//	sudo -n docker inspect / exec     InspectArgs, ContainerGPUArgs, ParseDockerInspect, StoreFromInspect
//	findmnt --json --target DIR       FindmntArgs, ParseFindmnt
//	df -B1 --output=… -- DIR          DFArgs, DFCmd, ParseDF
//	sh -c (touch, sync, rm) DIR       WriteProbeArgs, WriteProbeProblem
//	stat -c '%s %n' / cat             StatCmd, CatCmd, ParseStat
//	sudo -n poweroff                  PoweroffArgs, PoweroffCmd
//	the idle script                   IdleScriptCmd, ParseSections, and the parsers of its sections
//	                                  (ParseWho, ParseSS, ParseEthtool, ParseUptime, ParseRouteDev, …)
//
// Values travel as argv (sshexec quotes them), never inside a template. The
// parsers return facts (a GPU, a container, a mount, free bytes), not host
// states: the controller decides what the facts mean. The readiness checks,
// idle shutdown, the models manager, nixconfig's sudo rules and the
// simulated PC all use these same templates, so what the box allows and what
// the simulator answers cannot drift from what gpuctl runs.
package hostcmd
