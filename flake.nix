{
  description = "gpuctl: wake, check, feed and power off an on-demand GPU box for Ollama";

  # nixos-26.05, not 25.11: go.mod asks for Go 1.26.8, newer than the last Go
  # that 25.11 got before its end of life (June 2026). contrib/nix/package.nix stops
  # with a clear message when the pinned nixpkgs' Go is older than go.mod's.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      # Commit the flake was built from: "dev" outside git, "<rev>-dirty"
      # for a tree with uncommitted changes.
      version = self.shortRev or self.dirtyShortRev or "dev";

      gpuctlFor = pkgs: pkgs.callPackage ./contrib/nix/package.nix { inherit version; };
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
