# gpuctl, built from this source tree.
#
# Called from ../../flake.nix as
#   pkgs.callPackage ./contrib/nix/package.nix { version = self.shortRev or self.dirtyShortRev or "dev"; }
# and usable without flakes the same way (`version` then defaults to "dev").
{
  lib,
  buildGoModule,
  go,
  go_1_26 ? null,
  version ? "dev",
}:

let
  # go.mod's `go` line is the oldest toolchain that may build gpuctl. Nix
  # builds with GOTOOLCHAIN=local (no toolchain download in the sandbox), so an
  # older Go from nixpkgs fails deep inside the build with "go.mod requires go
  # >= ..."; say it up front instead.
  goModGo =
    let
      m = builtins.match ".*\ngo ([0-9.]+)\n.*" ("\n" + builtins.readFile ../../go.mod);
    in
    if m == null then "0" else builtins.head m;
  newEnough = g: g != null && builtins.compareVersions g.version goModGo >= 0;
  # The default `go` when it is new enough, else go_1_26 (nixpkgs releases
  # whose default Go is still 1.25 carry it too).
  goUsed = lib.findFirst newEnough go [
    go
    go_1_26
  ];
in
assert lib.assertMsg (newEnough goUsed) ''
  gpuctl's go.mod needs Go >= ${goModGo}, but this nixpkgs has Go ${go.version}${
    lib.optionalString (go_1_26 != null) " and ${go_1_26.version}"
  }.
  Update the flake's nixpkgs input (`nix flake update nixpkgs`), or pass a newer Go:
    pkgs.callPackage ./contrib/nix/package.nix { go = pkgs.go_1_27; }'';

(buildGoModule.override { go = goUsed; }) {
  pname = "gpuctl";
  inherit version;

  # Only what the Go build reads: editing the docs, the Nix files or the
  # flake.lock does not rebuild gpuctl.
  src = lib.fileset.toSource {
    root = ../../.;
    fileset = lib.fileset.difference ../../. (
      lib.fileset.unions (
        map lib.fileset.maybeMissing [
          ../../contrib/nix
          ../../flake.nix
          ../../flake.lock
          ../../docs
          ../../README.md
          ../../.ci
          ../../.github
        ]
      )
    );
  };

  # proxyVendor: the fixed-output "go-modules" derivation holds the module
  # download cache for go.mod/go.sum (`go mod download`), not a vendor/ tree
  # of the packages gpuctl imports. The hash then changes only when go.mod or
  # go.sum change, not whenever someone imports another package of a module
  # that is already required.
  proxyVendor = true;

  # vendorHash: the NAR hash (SRI) of that module cache. When go.mod or go.sum
  # change it goes stale; to update it, either
  #   - run `go test ./contrib/nix/` (TestVendorHash recomputes it offline from the
  #     local module cache, falling back to $GOPROXY, and prints the value), or
  #   - set it to lib.fakeHash, run `nix build .#gpuctl`, and copy the
  #     "got: sha256-..." value from the hash-mismatch error.
  vendorHash = "sha256-oQPClQ1ZyXusNFjgyEd5v2zPUNeOvBo31IR2HGfLR/Y=";

  subPackages = [ "cmd/gpuctl" ];

  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}"
  ];

  # The Go tests run in CI (`make test`): their privileged tiers need root,
  # network namespaces and sshd, none of which the build sandbox has.
  doCheck = false;

  meta = {
    description = "Wake, check, feed and power off an on-demand GPU box for Ollama";
    homepage = "https://github.com/ollamalive/gpuctl";
    mainProgram = "gpuctl";
    platforms = lib.platforms.linux;
  };
}
