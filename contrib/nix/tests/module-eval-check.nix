# checks.<system>.module-eval: evaluate a NixOS system with the gpuctl module
# and ./example.nix, then check what it generates with the real tools:
# `gpuctl config check` on the rendered /etc/gpuctl/gpuctl.toml, and the
# serve unit, the idle-shutdown timers and their template as systemd gets
# them, and the gpuctl wrapper on the system's PATH.
{
  pkgs,
  nixosSystem,
  module,
  gpuctl,
}:
let
  system = nixosSystem {
    modules = [
      module
      ./example.nix
      {
        nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        boot.isContainer = true;
        system.stateVersion = "26.11";
      }
    ];
  };
  cfg = system.config;
  toml = cfg.environment.etc."gpuctl/gpuctl.toml".source;
  unit = name: "${cfg.systemd.units.${name}.unit}/${name}";
  serve = unit "gpuctl-serve.service";
in
pkgs.runCommand "gpuctl-module-eval" { } ''
  set -eu
  export HOME="$TMPDIR"
  ${gpuctl}/bin/gpuctl --config ${toml} config check

  grep -Fx 'ExecStart=${gpuctl}/bin/gpuctl --config /etc/gpuctl/gpuctl.toml serve' ${serve}
  # NixOS writes a list-valued setting as one line per element.
  for want in User=gpuctl StateDirectory=gpuctl NoNewPrivileges=true ProtectSystem=strict \
      ProtectHome=true PrivateTmp=true PrivateDevices=true CapabilityBoundingSet= \
      RestrictAddressFamilies=AF_INET RestrictAddressFamilies=AF_NETLINK \
      SystemCallFilter=@system-service Restart=on-failure; do
    grep -Fx "$want" ${serve}
  done
  grep -F 'GPUCTL_CONFIG=/etc/gpuctl/gpuctl.toml' ${serve}
  if grep -F AF_PACKET ${serve}; then
    echo "AF_PACKET granted although services.gpuctl.wol.raw is false" >&2
    exit 1
  fi

  grep -Fx 'OnCalendar=*:0/5' ${unit "gpuctl-idle@gaming-pc.timer"}
  grep -Fx 'OnCalendar=*:0/5' ${unit "gpuctl-idle@workstation.timer"}
  grep -Fx 'ExecStart=${gpuctl}/bin/gpuctl --config /etc/gpuctl/gpuctl.toml shutdown --if-idle %i' \
    ${unit "gpuctl-idle@.service"}
  grep -Fx 'TimeoutStartSec=5min' ${unit "gpuctl-idle@.service"}
  for u in ${serve} ${unit "gpuctl-idle@.service"}; do
    grep -Fx 'LoadCredential=ssh-key:/run/secrets/gpuctl-ssh-key' "$u"
  done

  # The admin's gpuctl runs as the service user.
  grep -F -- '--reuid=gpuctl' ${cfg.system.path}/bin/gpuctl

  touch "$out"
''
