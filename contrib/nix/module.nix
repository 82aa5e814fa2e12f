# NixOS module: services.gpuctl.
#
# Renders the inventory (services.gpuctl.settings, a Nix attrset with the keys
# of gpuctl.toml) to /etc/gpuctl/gpuctl.toml, creates the dedicated `gpuctl`
# system user that owns the state directory, runs `gpuctl serve` as a
# hardened service (gpuctl-serve.service), and runs `gpuctl shutdown
# --if-idle HOST` every five minutes for each on-demand host
# (gpuctl-idle@HOST.timer starting gpuctl-idle@HOST.service: the names
# contrib/'s units use). The SSH key and secrets reach the units through
# LoadCredential= and EnvironmentFile=, read on every start. `gpuctl` on the
# PATH is a wrapper that runs the CLI as the service user when root starts
# it, so that the CLI and the services share the state directory.
#
# From the flake, nixosModules.default also sets services.gpuctl.package to
# the flake's build; this file alone defaults to pkgs.gpuctl (an overlay) or
# builds ./package.nix with the system's nixpkgs.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkDefault
    types
    ;

  cfg = config.services.gpuctl;

  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "gpuctl.toml" cfg.settings;
  configPath = "/etc/gpuctl/gpuctl.toml";

  gpuctl = lib.getExe cfg.package;

  # The SSH key: systemd loads services.gpuctl.sshKeyFile as the credential
  # "ssh-key" on every start of every gpuctl unit (a rotated key is picked up
  # by the next start; a missing one fails the unit with "Failed to set up
  # credentials"), and ExecStartPre puts a copy in the state directory,
  # readable only by the gpuctl user, where the CLI (run as that user, see
  # the wrapper below) finds it too. Written under a per-unit name and
  # renamed, so two units starting at once never see half a key.
  keyCopy = "${cfg.stateDir}/id_ed25519";
  keyCredential = lib.optionalAttrs (cfg.sshKeyFile != null) {
    LoadCredential = [ "ssh-key:${cfg.sshKeyFile}" ];
    ExecStartPre = [
      "${pkgs.coreutils}/bin/install -m 0600 -T %d/ssh-key ${keyCopy}.%n"
      "${pkgs.coreutils}/bin/mv -f -T ${keyCopy}.%n ${keyCopy}"
    ];
  };

  hosts = cfg.settings.host;
  onDemandHosts = map (h: h.name) (builtins.filter (h: h.on_demand or false) hosts);

  # settings.serve.listen, split into host and port ("[::1]:11435" too).
  listen = cfg.settings.serve.listen;
  listenMatch = builtins.match "\\[?([^]]*)]?:([0-9]+)" listen;
  listenHost = if listenMatch == null then "" else builtins.elemAt listenMatch 0;
  listenPort = if listenMatch == null then 0 else lib.toInt (builtins.elemAt listenMatch 1);
  listenIsLoopback =
    listenHost == "localhost" || lib.hasPrefix "127." listenHost || listenHost == "::1";
  # A port below 1024 needs CAP_NET_BIND_SERVICE (serve only).
  privilegedPort = cfg.serve.enable && listenMatch != null && listenPort < 1024;

  stateDirName = lib.removePrefix "/var/lib/" cfg.stateDir;

  # Shared by gpuctl-serve and the idle-shutdown oneshots: gpuctl needs
  # TCP/UDP (SSH, Ollama, UDP magic packets), netlink (interface addresses
  # for directed broadcasts), its state directory, and nothing else.
  # wol.raw adds AF_PACKET and CAP_NET_RAW for raw Ethernet magic packets;
  # caps are capabilities a unit needs (CAP_NET_BIND_SERVICE for serve on a
  # port below 1024).
  hardening =
    caps:
    let
      allCaps = lib.optional cfg.wol.raw "CAP_NET_RAW" ++ caps;
    in
    {
      User = cfg.user;
      Group = cfg.group;
      StateDirectory = stateDirName;
      StateDirectoryMode = "0700";
      WorkingDirectory = cfg.stateDir;
      UMask = "0077";
      EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;

      NoNewPrivileges = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      PrivateDevices = true;
      DevicePolicy = "closed";
      ProtectKernelTunables = true;
      ProtectKernelModules = true;
      ProtectKernelLogs = true;
      ProtectControlGroups = true;
      ProtectClock = true;
      ProtectHostname = true;
      ProtectProc = "invisible";
      ProcSubset = "pid";
      # A user namespace would make the capabilities useless on the host's
      # network.
      PrivateUsers = allCaps == [ ];
      RestrictNamespaces = true;
      RestrictRealtime = true;
      RestrictSUIDSGID = true;
      LockPersonality = true;
      MemoryDenyWriteExecute = true;
      RemoveIPC = true;
      RestrictAddressFamilies = [
        "AF_INET"
        "AF_INET6"
        "AF_UNIX"
        "AF_NETLINK"
      ]
      ++ lib.optional cfg.wol.raw "AF_PACKET";
      CapabilityBoundingSet = if allCaps == [ ] then [ "" ] else allCaps;
      AmbientCapabilities = allCaps;
      SystemCallArchitectures = "native";
      SystemCallFilter = [
        "@system-service"
        "~@privileged"
      ];
      SystemCallErrorNumber = "EPERM";
    }
    // keyCredential;

  serviceDeps = {
    wants = [ "network-online.target" ];
    after = [ "network-online.target" ];
    environment.GPUCTL_CONFIG = configPath;
    restartTriggers = [ configFile ];
  };

  # One unit naming scheme for the module and contrib/: gpuctl-serve.service,
  # and gpuctl-idle@HOST.service started by gpuctl-idle@HOST.timer.
  idleUnit = host: "gpuctl-idle@${host}";

  # `gpuctl` on the admin's PATH: the CLI as the service user, so that what
  # it writes into the state directory (locks, wake history, idle clocks,
  # known_hosts) stays that user's and the services are never locked out.
  # Started as root (`sudo gpuctl shutdown gaming-pc`) it reads the
  # environmentFile (secrets such as SecureOn passwords) and drops to the
  # service user, keeping CAP_NET_RAW with wol.raw; as any other user it
  # runs gpuctl unchanged (which refuses to write into a state directory
  # another user owns, and says `sudo -u gpuctl gpuctl …`).
  cliWrapper = pkgs.writeShellScriptBin "gpuctl" ''
    if [ "$(${pkgs.coreutils}/bin/id -u)" = 0 ]; then
      ${lib.optionalString (cfg.environmentFile != null) ''
        if [ -r ${lib.escapeShellArg cfg.environmentFile} ]; then
          set -a
          . ${lib.escapeShellArg cfg.environmentFile}
          set +a
        fi
      ''}exec ${pkgs.util-linux}/bin/setpriv --reuid=${cfg.user} --regid=${cfg.group} --init-groups ${
        lib.optionalString cfg.wol.raw "--inh-caps=+net_raw --ambient-caps=+net_raw "
      }-- ${pkgs.coreutils}/bin/env HOME=${lib.escapeShellArg cfg.stateDir} USER=${cfg.user} LOGNAME=${cfg.user} ${gpuctl} "$@"
    fi
    exec ${gpuctl} "$@"
  '';
in
{
  options.services.gpuctl = {
    enable = mkEnableOption "gpuctl, which wakes an on-demand GPU box for Ollama and powers it off when idle";

    package =
      lib.mkPackageOption pkgs "gpuctl" {
        extraDescription = "Without an overlay that adds `pkgs.gpuctl`, built from this checkout (./package.nix); the flake's nixosModules.default sets the flake's own build.";
      }
      // {
        default = pkgs.gpuctl or (pkgs.callPackage ./package.nix { });
      };

    settings = mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          state_dir = mkOption {
            type = types.str;
            default = cfg.stateDir;
            defaultText = lib.literalExpression "config.services.gpuctl.stateDir";
            description = ''
              gpuctl's state directory. The services can write only to
              {option}`services.gpuctl.stateDir`; set that instead.
            '';
          };
          serve.listen = mkOption {
            type = types.str;
            default = "127.0.0.1:11435";
            example = "0.0.0.0:11435";
            description = ''
              Where `gpuctl serve` listens (host:port). A port below 1024
              gives gpuctl-serve CAP_NET_BIND_SERVICE.
            '';
          };
          host = mkOption {
            type = types.listOf (
              types.submodule {
                freeformType = settingsFormat.type;
                options = {
                  name = mkOption {
                    type = types.strMatching "[a-z0-9][a-z0-9._-]{0,62}";
                    description = "The host's name (lowercase letters, digits, '.', '_', '-').";
                  };
                  on_demand = mkOption {
                    type = types.bool;
                    default = false;
                    description = "Whether gpuctl wakes this host on demand and powers it off when idle.";
                  };
                };
              }
            );
            default = [ ];
            description = "The hosts (`[[host]]` in gpuctl.toml); the other keys as in gpuctl.toml.";
          };
        };
      };
      default = { };
      description = ''
        The gpuctl inventory, written to `/etc/gpuctl/gpuctl.toml` (TOML).
        Keys as in gpuctl.toml: `state_dir`, `ssh`, `serve`, `host` (a list:
        `[[host]]`, each optionally with a `nixos` table) and `route` (a list:
        `[[route]]`). `state_dir` defaults to {option}`services.gpuctl.stateDir`,
        and `ssh.identity_files` to the copy of {option}`services.gpuctl.sshKeyFile`.

        The file ends up in the world-readable Nix store: put no secrets here
        (`wol_password` is refused; use {option}`services.gpuctl.environmentFile`).
      '';
      example = lib.literalExpression ''
        {
          serve.listen = "0.0.0.0:11435";
          serve.default_host = "server";
          host = [
            { name = "server"; address = "127.0.0.1"; ollama_url = "http://127.0.0.1:11434"; }
            {
              name = "gaming-pc";
              on_demand = true;
              mac = "a8:a1:59:12:34:56";
              address = "192.168.1.50";
              host_key = "ssh-ed25519 AAAA...";
              models = [ "llama3.3:70b" ];
              idle_after = "30m";
            }
          ];
          route = [ { models = [ "llama3.3:70b" "*:70b" ]; host = "gaming-pc"; fallback = "server"; } ];
        }
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/gpuctl.env";
      description = ''
        A file of `NAME=value` lines outside the Nix store (sops-nix,
        agenix), read by every gpuctl unit on start (systemd's
        `EnvironmentFile=`) and by the `gpuctl` wrapper when root runs it:
        the place for secrets, such as a host's SecureOn password as
        `GPUCTL_WOL_PASSWORD_GAMING_PC=01:02:03:04:05:06` (the host name in
        capitals, `-` and `.` as `_`).
      '';
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/gpuctl";
      description = ''
        gpuctl's state directory (known_hosts, locks, activity records, the
        SSH key) and the gpuctl user's home. Must lie under /var/lib, since the
        services get it through systemd's StateDirectory=.
      '';
    };

    user = mkOption {
      type = types.str;
      default = "gpuctl";
      description = ''
        The account gpuctl runs as. The default, `gpuctl`, is created as a
        system user (not in `wheel`, no password, no login shell) whose home
        is {option}`services.gpuctl.stateDir`. The `gpuctl` command the
        module installs runs the CLI as this user when root starts it
        (`sudo gpuctl status`), so the state it writes stays this user's.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "gpuctl";
      description = "The group gpuctl runs as; created when it is `gpuctl`.";
    };

    sshKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/gpuctl-ssh-key";
      description = ''
        Path to the SSH private key gpuctl logs in to the GPU boxes with, as a
        string outside the Nix store (a Nix path literal would copy the key
        into the world-readable store). Every gpuctl unit loads it with
        systemd's `LoadCredential=` on each start, so a key rotated by
        sops-nix or agenix is used from the next start on (restart
        gpuctl-serve to switch at once), and a missing key fails the unit
        instead of going unnoticed. Each start also copies it to
        `''${stateDir}/id_ed25519` (0600, the gpuctl user's), where gpuctl
        looks first and the CLI finds it; `ssh.identity_files` defaults to
        that copy.
        Leave null to manage the key yourself: put it at
        `''${stateDir}/id_ed25519`, or list it in `settings.ssh.identity_files`.
      '';
    };

    serve = {
      enable = mkEnableOption "`gpuctl serve`, the Ollama-compatible routing proxy, as a hardened systemd service (gpuctl-serve.service)";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open the TCP port of `settings.serve.listen` in the firewall, for
        clients on other machines. Only meaningful when serve listens on more
        than loopback (the default listen address is 127.0.0.1:11435).
      '';
    };

    wol.raw = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Let gpuctl send raw Ethernet magic packets (hosts with `wol_interface`):
        grants the services CAP_NET_RAW and the AF_PACKET address family. UDP
        magic packets (`wol_to`, or the directed broadcast gpuctl computes)
        need neither.
      '';
    };

    idleShutdown = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Run `gpuctl shutdown --if-idle HOST` on a timer for every host in
          {option}`services.gpuctl.idleShutdown.hosts`, each as its own
          oneshot service `gpuctl-idle@HOST.service` started by
          `gpuctl-idle@HOST.timer` (a host that does not answer does not hold
          up the others; the same names as contrib/'s units).
        '';
      };

      hosts = mkOption {
        type = types.listOf types.str;
        default = onDemandHosts;
        defaultText = lib.literalMD "the `name` of every `settings.host` entry with `on_demand = true`";
        description = "Hosts to power off when idle.";
      };

      onCalendar = mkOption {
        type = types.str;
        default = "*:0/5";
        description = "When to check (systemd.time(7) calendar event); every five minutes by default.";
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = lib.hasPrefix "/var/lib/" cfg.stateDir && stateDirName != "";
          message = "services.gpuctl.stateDir must lie under /var/lib/ (it is ${cfg.stateDir}): the services get it through systemd's StateDirectory=.";
        }
        {
          assertion = cfg.settings.state_dir == cfg.stateDir;
          message = "services.gpuctl.settings.state_dir is ${cfg.settings.state_dir}, but the services can write only to services.gpuctl.stateDir (${cfg.stateDir}): set services.gpuctl.stateDir = \"${cfg.settings.state_dir}\" instead (under /var/lib/), and leave settings.state_dir unset.";
        }
        {
          assertion = cfg.sshKeyFile == null || (lib.hasPrefix "/" cfg.sshKeyFile && !lib.hasPrefix "/nix/store" cfg.sshKeyFile);
          message = "services.gpuctl.sshKeyFile must be an absolute path outside the Nix store, as a string (\"/run/secrets/gpuctl-ssh-key\"): a key in the store is readable by every user.";
        }
        {
          assertion = cfg.environmentFile == null || (lib.hasPrefix "/" cfg.environmentFile && !lib.hasPrefix "/nix/store" cfg.environmentFile);
          message = "services.gpuctl.environmentFile must be an absolute path outside the Nix store, as a string (\"/run/secrets/gpuctl.env\"): it holds secrets.";
        }
        {
          assertion = builtins.all (h: !(h ? wol_password)) hosts;
          message = "services.gpuctl.settings: wol_password is a secret, and settings end up in the world-readable Nix store; put GPUCTL_WOL_PASSWORD_<HOST>=... in services.gpuctl.environmentFile instead.";
        }
        {
          assertion = hosts != [ ];
          message = "services.gpuctl.settings.host is empty: declare at least the hosts gpuctl serves and wakes.";
        }
        {
          assertion = builtins.all (h: builtins.match "[a-z0-9][a-z0-9._-]{0,62}" h != null) cfg.idleShutdown.hosts;
          message = "services.gpuctl.idleShutdown.hosts: every entry must be a gpuctl host name (lowercase letters, digits, '.', '_', '-').";
        }
        {
          assertion = builtins.all (n: builtins.elem n (map (h: h.name) hosts)) cfg.idleShutdown.hosts;
          message = "services.gpuctl.idleShutdown.hosts names a host that services.gpuctl.settings.host does not declare.";
        }
        {
          assertion = listenMatch != null;
          message = "services.gpuctl.settings.serve.listen is \"${listen}\"; want host:port, such as \"127.0.0.1:11435\" or \"[::]:11435\".";
        }
        {
          assertion = !(cfg.serve.enable && cfg.openFirewall) || (listenMatch != null && !listenIsLoopback);
          message = "services.gpuctl.openFirewall is set, but serve listens on ${listen}; set services.gpuctl.settings.serve.listen to \"0.0.0.0:${toString listenPort}\" (or a LAN address) to accept other machines.";
        }
      ];

      warnings = lib.optional (!cfg.wol.raw && builtins.any (h: h ? wol_interface) hosts)
        "services.gpuctl: a host sets wol_interface (raw Ethernet magic packets), but services.gpuctl.wol.raw is false, so the services lack CAP_NET_RAW.";

      services.gpuctl.settings.ssh.identity_files = mkIf (cfg.sshKeyFile != null) (mkDefault [ keyCopy ]);

      environment.etc."gpuctl/gpuctl.toml".source = configFile;
      environment.systemPackages = [ cliWrapper ];

      users.users = mkIf (cfg.user == "gpuctl") {
        gpuctl = {
          isSystemUser = true;
          group = cfg.group;
          description = "gpuctl service user";
          home = cfg.stateDir;
          createHome = true;
          homeMode = "700";
        };
      };
      users.groups = mkIf (cfg.group == "gpuctl") { gpuctl = { }; };

      # Hand back to the service user what an older gpuctl run as root left
      # in the state directory (at boot and on every switch); gpuctl itself
      # no longer writes into a state directory another user owns.
      systemd.tmpfiles.rules = [ "Z ${cfg.stateDir} - ${cfg.user} ${cfg.group} - -" ];
    }

    (mkIf cfg.serve.enable {
      systemd.services.gpuctl-serve = serviceDeps // {
        description = "gpuctl routing proxy for Ollama";
        documentation = [ "https://github.com/ollamalive/gpuctl/blob/main/docs/install.md" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig = hardening (lib.optional privilegedPort "CAP_NET_BIND_SERVICE") // {
          ExecStart = "${gpuctl} --config ${configPath} serve";
          Restart = "on-failure";
          RestartSec = "5s";
          # SIGTERM drains open streams for up to 30s.
          TimeoutStopSec = "45s";
        };
      };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ listenPort ];
    })

    (mkIf (cfg.idleShutdown.enable && cfg.idleShutdown.hosts != [ ]) {
      # One template; its instances are started by the per-host timers.
      systemd.services."gpuctl-idle@" = serviceDeps // {
        description = "gpuctl idle shutdown check of %i";
        documentation = [ "https://github.com/ollamalive/gpuctl/blob/main/docs/install.md" ];
        serviceConfig = hardening [ ] // {
          Type = "oneshot";
          # Exit 0 also when the host is busy, already off or locked by
          # a wake; 1 (refused or failed) and 3 mark the unit failed.
          ExecStart = "${gpuctl} --config ${configPath} shutdown --if-idle %i";
          # A run is bounded by its own timeouts (SSH script 45s, poweroff
          # confirmation 2m); this is the backstop.
          TimeoutStartSec = "5min";
        };
      };

      systemd.timers = lib.listToAttrs (
        map (
          host:
          lib.nameValuePair (idleUnit host) {
            description = "Check every few minutes whether ${host} is idle (gpuctl)";
            wantedBy = [ "timers.target" ];
            timerConfig = {
              OnCalendar = cfg.idleShutdown.onCalendar;
              Unit = "${idleUnit host}.service";
            };
          }
        ) cfg.idleShutdown.hosts
      );
    })
  ]);
}
