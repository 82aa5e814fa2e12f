# gpuctl, built from this source tree.
#
# Called from ../../flake.nix as
#   pkgs.callPackage ./contrib/nix/package.nix { version = "0-unstable-YYYY-MM-DD"; rev = self.shortRev; }
# and usable without flakes the same way (`version` then defaults to
# "0-unstable", nixpkgs' convention for a package without releases: a
# version that starts with a digit, so that builtins.parseDrvName splits
# "gpuctl-0-unstable-..." into name and version whatever the revision).
{
  lib,
  buildGoModule,
  go,
  go_1_26 ? null,
  version ? "0-unstable",
  rev ? null,
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

  root = toString ../..;
  # path: an absolute path below root; type: "directory", "regular", ...
  sourceFilter =
    path: type:
    let
      rel = lib.removePrefix (root + "/") (toString path);
      base = baseNameOf (toString path);
      topLevel = builtins.elem rel [
        ".git"
        ".github"
        ".ci"
        "bin"
        "docs"
        "examples"
        "testdata"
        "contrib"
        "flake.nix"
        "flake.lock"
        "README.md"
        "Makefile"
      ];
      anywhere =
        builtins.elem base [
          ".git"
          "testdata"
          "node_modules"
        ]
        || lib.hasPrefix "result" base && type == "symlink"
        || type == "regular" && (lib.hasSuffix "_test.go" base || lib.hasSuffix ".test" base || lib.hasSuffix ".prof" base);
    in
    !topLevel && !anywhere;
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

  # Only what the Go build reads, filtered by path so that a checkout's
  # .git, bin/, test binaries, node_modules and test data never reach the
  # store (also when the module is imported without flakes, from a working
  # tree), and editing the docs, the Nix files or flake.lock does not rebuild
  # gpuctl. (Non-test files embed only from their own package directories:
  # nixconfig/templates, nixconfig/stub.nix, cmd/gpuctl-sim/sim/fixtures.)
  src = lib.cleanSourceWith {
    name = "gpuctl-source";
    src = ../..;
    filter = sourceFilter;
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
  vendorHash = "sha256-0ikEEadIb64VJyRtJl3K1mWjdD4f8DMnrMKLORHwAgI=";

  subPackages = [ "cmd/gpuctl" ];

  ldflags = [
    "-s"
    "-w"
    "-X main.version=${version}${lib.optionalString (rev != null) "+${rev}"}"
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
