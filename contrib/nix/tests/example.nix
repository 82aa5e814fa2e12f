# A typical server configuration for services.gpuctl: an always-on box that
# runs Ollama itself, and two on-demand PCs. contrib/nix/nix_test.go evaluates it with
# stubs (and loads the TOML it renders with gpuctl's own inventory parser);
# the flake's checks.module-eval evaluates it with real NixOS and runs
# `gpuctl config check` on the rendered file.
{
  services.gpuctl = {
    enable = true;
    sshKeyFile = "/run/secrets/gpuctl-ssh-key";
    serve.enable = true;
    openFirewall = true;
    settings = {
      ssh = {
        user = "gpuctl";
        connect_timeout = "5s";
      };
      serve = {
        listen = "0.0.0.0:11435";
        default_host = "server";
        max_body = "64MiB";
      };
      host = [
        {
          name = "server";
          address = "127.0.0.1";
          ollama_url = "http://127.0.0.1:11434";
          models = [ "llama3.2:3b" ];
        }
        {
          name = "gaming-pc";
          on_demand = true;
          mac = "a8:a1:59:12:34:56";
          address = "192.168.1.50";
          wol_to = [ "192.168.1.255:9" ];
          host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmNTu27HefYzPOfPIBJuFQJpsc3zCBB/qKmAHOsH2qF gaming-pc";
          models = [ "llama3.3:70b" ];
          vram = "24GiB";
          boot_timeout = "180s";
          idle_after = "30m";
          other_os_probe = 3389;
          nixos = {
            nixpkgs = "25.11";
            nvidia_open = true;
            models_device = "01D9A1B2C3D4E5F6";
            models_fstype = "ntfs3";
            timezone = "Europe/Berlin";
          };
        }
        {
          name = "workstation";
          on_demand = true;
          mac = "a8:a1:59:65:43:21";
          address = "192.168.1.51";
          host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGXZJWVUMia6cED6l771vl0f03/dK5jiP0/BOt8C4ZtU workstation";
          models = [ "qwen2.5-coder:32b" ];
          idle_after = "15m";
        }
      ];
      route = [
        {
          models = [
            "llama3.3:70b"
            "*:70b"
          ];
          host = "gaming-pc";
          fallback = "server";
        }
        {
          models = [ "qwen2.5-coder:*" ];
          host = "workstation";
          fallback = "server";
        }
      ];
    };
  };
}
