{
  description = "gpuctl: wake, check, feed and power off an on-demand GPU box for Ollama";

  # The newest stable channel (26.05 reaches its end of life on 2026-12-31).
  # go.mod's `go` line is the oldest Go that builds gpuctl (1.26.0, which its
  # dependencies need); contrib/nix/package.nix stops with a clear message
  # when a nixpkgs that `follows` another channel has an older Go.
  # flake.lock pins the revision; contrib/nix/nix_test.go checks that it
  # locks this branch.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.11";

  outputs =
    { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # nixpkgs' convention for a package without releases:
      # 0-unstable-<date of the last commit>, which builtins.parseDrvName
      # always reads as a version (a bare short revision like "abc1234"
      # is not one). The revision goes into `gpuctl version` alongside.
      date = self.lastModifiedDate or "19700101000000";
      version = "0-unstable-${lib.substring 0 4 date}-${lib.substring 4 2 date}-${lib.substring 6 2 date}";
      rev = self.shortRev or self.dirtyShortRev or null;

      gpuctlFor = pkgs: pkgs.callPackage ./contrib/nix/package.nix { inherit version rev; };
    in
    {
      packages = forAllSystems (
        system: pkgs: rec {
          gpuctl = gpuctlFor pkgs;
          default = gpuctl;
        }
      );

      apps = forAllSystems (
        system: pkgs: {
          default = {
            type = "app";
            program = "${self.packages.${system}.default}/bin/gpuctl";
            meta.description = "Run gpuctl";
          };
        }
      );

      # The module from contrib/nix/module.nix, with services.gpuctl.package defaulting
      # to this flake's build (built against this flake's nixpkgs, so the Go
      # version matches go.mod whatever release the server runs).
      nixosModules.default =
        { pkgs, ... }:
        {
          imports = [ ./contrib/nix/module.nix ];
          services.gpuctl.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.gpuctl = self.nixosModules.default;

      overlays.default = final: prev: { gpuctl = gpuctlFor final; };

      # `nix flake check`: evaluate a NixOS system that uses the module with
      # nix/tests/example.nix, validate the TOML it renders with the built
      # gpuctl (`gpuctl config check`), and look at the generated units.
      checks = forAllSystems (
        system: pkgs: {
          package = self.packages.${system}.default;
          module-eval = import ./contrib/nix/tests/module-eval-check.nix {
            inherit pkgs;
            nixosSystem = nixpkgs.lib.nixosSystem;
            module = self.nixosModules.default;
            gpuctl = self.packages.${system}.default;
          };
        }
      );

      devShells = forAllSystems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              # The Go the package builds with (go.mod's version or newer).
              (self.packages.${system}.default.go or pkgs.go)
              pkgs.openssh
              pkgs.iproute2
              pkgs.nix
            ];
          };
        }
      );
    };
}
