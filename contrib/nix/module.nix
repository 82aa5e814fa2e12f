# NixOS module: services.gpuctl.
#
# Renders the inventory (services.gpuctl.settings, a Nix attrset with the keys
# of gpuctl.toml) to /etc/gpuctl/gpuctl.toml, creates the dedicated `gpuctl`
# system user that owns the state directory and the SSH key gpuctl logs in to
# the GPU boxes with, runs `gpuctl serve` as a hardened service, and runs
# `gpuctl shutdown --if-idle HOST` every five minutes for each on-demand host.
#
# From the flake, nixosModules.default also sets services.gpuctl.package to
# the flake's build; this file alone defaults to building ./package.nix with
# the system's nixpkgs.
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

  gpuctl = "${cfg.package}/bin/gpuctl";

  # Where the copy of services.gpuctl.sshKeyFile lives, readable only by the
  # gpuctl user: the identity gpuctl offers by default.
  keyCopy = "${cfg.stateDir}/id_ed25519";
  keyUnit = lib.optional (cfg.sshKeyFile != null) "gpuctl-ssh-key.service";

  hosts = cfg.settings.host or [ ];
  onDemandHosts = map (h: h.name) (builtins.filter (h: h.on_demand or false) hosts);

  # settings.serve.listen, split into host and port ("[::1]:11435" too).
  listen = cfg.settings.serve.listen or "127.0.0.1:11435";
  listenMatch = builtins.match "\\[?([^]]*)]?:([0-9]+)" listen;
  listenHost = if listenMatch == null then "" else builtins.elemAt listenMatch 0;
  listenPort = if listenMatch == null then 0 else lib.toInt (builtins.elemAt listenMatch 1);
  listenIsLoopback =
    listenHost == "localhost" || lib.hasPrefix "127." listenHost || listenHost == "::1";

  stateDirName = lib.removePrefix "/var/lib/" cfg.stateDir;

  # Shared by gpuctl-serve and the idle-shutdown oneshots: gpuctl needs
  # TCP/UDP (SSH, Ollama, UDP magic packets), netlink (interface addresses
  # for directed broadcasts), its state directory, and nothing else.
  # wol.raw adds AF_PACKET and CAP_NET_RAW for raw Ethernet magic packets.
  hardening = {
    User = cfg.user;
    Group = cfg.group;
    StateDirectory = stateDirName;
    StateDirectoryMode = "0700";
    WorkingDirectory = cfg.stateDir;
    UMask = "0077";

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
    # A user namespace would make CAP_NET_RAW useless on the host's network.
    PrivateUsers = !cfg.wol.raw;
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
    CapabilityBoundingSet = if cfg.wol.raw then [ "CAP_NET_RAW" ] else [ "" ];
    AmbientCapabilities = lib.optional cfg.wol.raw "CAP_NET_RAW";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  serviceDeps = {
    wants = [ "network-online.target" ] ++ keyUnit;
    after = [ "network-online.target" ] ++ keyUnit;
    requires = keyUnit;
    environment.GPUCTL_CONFIG = configPath;
    restartTriggers = [ configFile ];
  };

  idleUnit = host: "gpuctl-idle-shutdown-${host}";
in
{
  options.services.gpuctl = {
    enable = mkEnableOption "gpuctl, which wakes an on-demand GPU box for Ollama and powers it off when idle";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { } (the flake's nixosModules.default sets its own build)";
      description = "The gpuctl package to run.";
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      description = ''
        The gpuctl inventory, written to `/etc/gpuctl/gpuctl.toml` (TOML).
        Keys as in gpuctl.toml: `state_dir`, `ssh`, `serve`, `host` (a list:
        `[[host]]`, each optionally with a `nixos` table) and `route` (a list:
        `[[route]]`). `state_dir` defaults to {option}`services.gpuctl.stateDir`,
        and `ssh.identity_files` to the copy of {option}`services.gpuctl.sshKeyFile`.

        The file ends up in the world-readable Nix store: put no secrets here
        (`wol_password` is refused).
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
        is {option}`services.gpuctl.stateDir`. Run the CLI as this user too
        (`sudo -u gpuctl gpuctl status`), so the state it writes stays its own.
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
        into the world-readable store). At boot, root copies it to
        `''${stateDir}/id_ed25519` (mode 0600, owned by the gpuctl user;
        the name gpuctl looks for first, whatever the key type),
        and `ssh.identity_files` defaults to that copy. After replacing the
        key, run `systemctl restart gpuctl-ssh-key`.
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
          oneshot service `gpuctl-idle-shutdown-HOST` (a host that does not
          answer does not hold up the others).
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
          assertion = cfg.sshKeyFile == null || (lib.hasPrefix "/" cfg.sshKeyFile && !lib.hasPrefix "/nix/store" cfg.sshKeyFile);
          message = "services.gpuctl.sshKeyFile must be an absolute path outside the Nix store, as a string (\"/run/secrets/gpuctl-ssh-key\"): a key in the store is readable by every user.";
        }
        {
          assertion = builtins.all (h: !(h ? wol_password)) hosts;
          message = "services.gpuctl.settings: wol_password is a secret, and settings end up in the world-readable Nix store; remove it (gpuctl refuses it in a file others can read).";
        }
        {
          assertion = builtins.all (h: builtins.match "[a-z0-9][a-z0-9._-]{0,62}" h != null) cfg.idleShutdown.hosts;
          message = "services.gpuctl.idleShutdown.hosts: every entry must be a gpuctl host name (lowercase letters, digits, '.', '_', '-').";
        }
        {
          assertion = builtins.all (n: builtins.elem n (map (h: h.name or "") hosts)) cfg.idleShutdown.hosts;
          message = "services.gpuctl.idleShutdown.hosts names a host that services.gpuctl.settings.host does not declare.";
        }
        {
          assertion = !(cfg.serve.enable && cfg.openFirewall) || (listenMatch != null && !listenIsLoopback);
          message = "services.gpuctl.openFirewall is set, but serve listens on ${listen}; set services.gpuctl.settings.serve.listen to \"0.0.0.0:${toString listenPort}\" (or a LAN address) to accept other machines.";
        }
      ];

      warnings = lib.optional (!cfg.wol.raw && builtins.any (h: h ? wol_interface) hosts)
        "services.gpuctl: a host sets wol_interface (raw Ethernet magic packets), but services.gpuctl.wol.raw is false, so the services lack CAP_NET_RAW.";

      services.gpuctl.settings = {
        state_dir = mkDefault cfg.stateDir;
        ssh.identity_files = mkIf (cfg.sshKeyFile != null) (mkDefault [ keyCopy ]);
      };

      environment.etc."gpuctl/gpuctl.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

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
    }

    (mkIf (cfg.sshKeyFile != null) {
      systemd.services.gpuctl-ssh-key = {
        description = "Copy gpuctl's SSH key into its state directory";
        wantedBy = [ "multi-user.target" ];
        unitConfig.ConditionPathExists = cfg.sshKeyFile;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          UMask = "0077";
          ExecStart = [
            "${pkgs.coreutils}/bin/install -d -m 0700 -o ${cfg.user} -g ${cfg.group} ${cfg.stateDir}"
            "${pkgs.coreutils}/bin/install -m 0600 -o ${cfg.user} -g ${cfg.group} ${cfg.sshKeyFile} ${keyCopy}"
          ];
        };
      };
    })

    (mkIf cfg.serve.enable {
      systemd.services.gpuctl-serve = serviceDeps // {
        description = "gpuctl routing proxy for Ollama";
        wantedBy = [ "multi-user.target" ];
        serviceConfig = hardening // {
          ExecStart = "${gpuctl} --config ${configPath} serve";
          Restart = "on-failure";
          RestartSec = "5s";
        };
      };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ listenPort ];
    })

    (mkIf (cfg.idleShutdown.enable && cfg.idleShutdown.hosts != [ ]) {
      systemd.services = lib.listToAttrs (
        map (
          host:
          lib.nameValuePair (idleUnit host) (
            serviceDeps
            // {
              description = "Power off ${host} when it is idle (gpuctl)";
              serviceConfig = hardening // {
                Type = "oneshot";
                # Exit 0 also when the host is busy, already off or locked by
                # a wake; 1 (refused or failed) and 3 mark the unit failed.
                ExecStart = "${gpuctl} --config ${configPath} shutdown --if-idle ${host}";
              };
            }
          )
        ) cfg.idleShutdown.hosts
      );

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
