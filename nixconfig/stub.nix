# Offline stub evaluation for `gpuctl nixos check` (no nixpkgs, no network).
#
# what = "config": import configuration.nix and its imports with stub `lib`,
# `pkgs` and `config`, merge their definitions the way the module system
# does (attribute sets merge, lists concatenate, mkIf/mkMerge/mkOverride
# resolve, equal values may repeat, unequal ones conflict) and return the
# result with packages as store-path strings, for `--eval --strict --json`.
#
# what = "flake": import flake.nix, call its outputs with a fake nixpkgs and
# return a projection of what it exposes.
{ dir, what ? "config", namesJSON ? "[]", skipJSON ? "[]" }:
let
  inherit (builtins) isAttrs isList isFunction isString isPath attrNames concatMap filter
    foldl' elem head tail length mapAttrs listToAttrs typeOf toString concatStringsSep;
  root = /. + dir;
  names = builtins.fromJSON namesJSON;
  skip = builtins.fromJSON skipJSON;

  # pkgs: every dotted name found in the sources, as a callable stub package.
  splitDots = s: filter isString (builtins.split "\\." s);
  mkPkg = path:
    let n = concatStringsSep "." path; in
    { __functor = self: _: self; outPath = "/nix/store/00000000000000000000000000000000-${n}"; name = n; pname = n; };
  tree = prefix: paths:
    mapAttrs (f: ps: mkPkg (prefix ++ [ f ]) // tree (prefix ++ [ f ]) (map tail (filter (p: length p > 1) ps)))
      (builtins.groupBy head (filter (p: p != [ ]) paths));
  pkgs = tree [ ] (map splitDots names) // { inherit lib; system = "x86_64-linux"; };

  lib = rec {
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkForce = mkOverride 50;
    mkVMOverride = mkOverride 10;
    mkImageMediaOverride = mkOverride 60;
    mkDefault = mkOverride 1000;
    mkOptionDefault = mkOverride 1500;
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOrder = priority: content: { _type = "order"; inherit priority content; };
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    concatStringsSep = builtins.concatStringsSep;
    concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
    concatMap = builtins.concatMap;
    concatLists = builtins.concatLists;
    flatten = x: if isList x then concatMap flatten x else [ x ];
    mapAttrs = builtins.mapAttrs;
    mapAttrs' = f: set: listToAttrs (map (n: f n set.${n}) (attrNames set));
    mapAttrsToList = f: set: map (n: f n set.${n}) (attrNames set);
    filterAttrs = pred: set: listToAttrs (concatMap (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (attrNames set));
    genAttrs = ns: f: listToAttrs (map (n: { name = n; value = f n; }) ns);
    nameValuePair = name: value: { inherit name value; };
    listToAttrs = builtins.listToAttrs;
    attrNames = builtins.attrNames;
    attrValues = builtins.attrValues;
    attrByPath = path: default: set: if path == [ ] then set else if set ? ${head path} then attrByPath (tail path) default set.${head path} else default;
    hasAttr = builtins.hasAttr;
    elem = builtins.elem;
    filter = builtins.filter;
    foldl' = builtins.foldl';
    head = builtins.head;
    tail = builtins.tail;
    length = builtins.length;
    range = first: last: if first > last then [ ] else builtins.genList (n: first + n) (last - first + 1);
    replaceStrings = builtins.replaceStrings;
    splitString = sep: s: filter isString (builtins.split (builtins.replaceStrings [ "." "*" "+" "?" "|" "(" ")" "[" "]" "{" "}" "^" "$" "\\" ] [ "\\." "\\*" "\\+" "\\?" "\\|" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\^" "\\$" "\\\\" ] sep) s);
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    hasSuffix = p: s: let ls = builtins.stringLength s; lp = builtins.stringLength p; in lp <= ls && builtins.substring (ls - lp) lp s == p;
    removePrefix = p: s: if hasPrefix p s then builtins.substring (builtins.stringLength p) (-1) s else s;
    toUpper = builtins.replaceStrings (lowerChars) (upperChars);
    toLower = builtins.replaceStrings (upperChars) (lowerChars);
    lowerChars = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
    upperChars = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
    fileContents = f: builtins.readFile f;
    getExe = p: "${p}/bin/${p.pname or p.name or "stub"}";
    getExe' = p: n: "${p}/bin/${n}";
    getBin = p: p;
    makeBinPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/bin") ps);
    id = x: x;
    const = x: _: x;
    recursiveUpdate = a: b: a // b;
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    versionOlder = a: b: builtins.compareVersions a b < 0;
    trivial.release = "stub";
    version = "stub";
  };

  args = { inherit lib pkgs config; modulesPath = "/stub/nixos/modules"; options = { }; name = "appliance"; };

  external = m: (isString m || isPath m) && lib.hasPrefix "/stub/" (toString m);
  skipped = m: (isString m || isPath m) && elem (baseNameOf (toString m)) skip;

  # A module and its imports, flattened to definition sets.
  load = m:
    let
      raw = if isPath m || isString m then import m else m;
      called = if isFunction raw then raw (builtins.intersectAttrs (builtins.functionArgs raw) args // (if (builtins.functionArgs raw) == { } then args else { })) else raw;
      imps = called.imports or [ ];
      body = if called ? config || called ? options then (called.config or { })
             else removeAttrs called [ "imports" "_file" "key" "disabledModules" "meta" ];
    in [ body ] ++ concatMap load (filter (i: !(external i) && !(skipped i)) imps);

  flattenDef = d:
    if isAttrs d && d ? _type then
      if d._type == "merge" then concatMap flattenDef d.contents
      else if d._type == "if" then (if d.condition then flattenDef d.content else [ ])
      else if d._type == "override" then map (x: if x.explicit then x else x // { prio = d.priority; explicit = true; }) (flattenDef d.content)
      else if d._type == "order" then flattenDef d.content
      else [ { prio = 100; explicit = false; value = d; } ]
    else [ { prio = 100; explicit = false; value = d; } ];

  plain = v: isAttrs v && !(v ? outPath) && !(v ? _type) && !(v ? __functor);

  mergeDefs = path: defs:
    let
      flat = concatMap flattenDef defs;
      best = foldl' (m: d: if d.prio < m then d.prio else m) 100000 flat;
      kept = map (d: d.value) (filter (d: d.prio == best) flat);
      where = concatStringsSep "." path;
    in
      if kept == [ ] then null
      else if builtins.all plain kept then mergeSets path kept
      else if builtins.all isList kept then concatMap (x: x) kept
      else if builtins.all (v: !isFunction v && v == head kept) kept then head kept
      else if length kept == 1 then head kept
      else throw "conflicting definitions for `${where}' (two different values at the same priority)";

  mergeSets = path: sets:
    let all = attrNames (foldl' (a: b: a // b) { } sets); in
    listToAttrs (map (n: { name = n; value = mergeDefs (path ++ [ n ]) (concatMap (s: if s ? ${n} then [ s.${n} ] else [ ]) sets); }) all);

  stubModule = { boot.kernelPackages = lib.mkOptionDefault (pkgs.linuxPackages or (mkPkg [ "linuxPackages" ])); };

  modules = load (root + "/configuration.nix");
  config = mergeDefs [ ] (modules ++ [ stubModule ]);

  # what = "defs": every option path each module sets, where (file, line)
  # and what kind of value, for the option-table check. mkIf, mkMerge and
  # the priority wrappers are looked through; plain attribute sets in lists
  # (list of submodules) are walked under the component "*".
  kindOf = v:
    if isAttrs v then (if v ? outPath then "package" else if v ? __functor then "lambda" else if v ? _type then "other" else "set")
    else typeOf v;
  posOf = n: set: fallback: let p = builtins.unsafeGetAttrPos n set; in if p == null then fallback else p;
  leaf = path: pos: v: {
    p = path;
    f = if pos == null then null else pos.file;
    l = if pos == null then 0 else pos.line;
    k = kindOf v;
  } // (if isList v then { e = map kindOf v; } else { })
    // (if isString v && builtins.stringLength v < 200 then { s = v; } else { });
  walkDefs = path: pos: v:
    if isAttrs v && v ? _type then
      (if v._type == "merge" then concatMap (walkDefs path pos) v.contents
       else if v._type == "if" || v._type == "override" || v._type == "order" then walkDefs path pos v.content
       else [ (leaf path pos v) ])
    else if plain v then
      (if attrNames v == [ ] then [ (leaf path pos v) ]
       else concatMap (n: walkDefs (path ++ [ n ]) (posOf n v pos) v.${n}) (attrNames v))
    else if isList v then
      [ (leaf path pos v) ] ++ concatMap (x: if plain x then walkDefs (path ++ [ "*" ]) pos x else [ ]) v
    else [ (leaf path pos v) ];
  defs = concatMap (walkDefs [ ] null) modules;

  sanitize = v:
    if isFunction v then "<lambda>"
    else if isPath v then toString v
    else if isAttrs v then (if v ? outPath then toString v.outPath else mapAttrs (_: sanitize) v)
    else if isList v then map sanitize v
    else v;

  # The flake, called with a fake nixpkgs.
  flake = import (root + "/flake.nix");
  fakeNixpkgs = {
    outPath = "/stub/nixpkgs";
    lib.nixosSystem = a: {
      args = a;
      config.system.build = { images = { raw-efi = "RAW"; iso = "ISO"; }; toplevel = "TOP"; };
    };
  };
  self = outputs // { outPath = dir; inputs = { nixpkgs = fakeNixpkgs; }; };
  outputs = flake.outputs { inherit self; nixpkgs = fakeNixpkgs; };
  show = v: if isString v then v else "<${typeOf v}>";
  flakeView = {
    description = flake.description or null;
    inputs = mapAttrs (n: i: i.url or null) (flake.inputs or { });
    outputs = attrNames outputs;
    packages = mapAttrs (sys: ps: mapAttrs (n: show) ps) (outputs.packages or { });
    checks = mapAttrs (sys: cs: mapAttrs (n: show) cs) (outputs.checks or { });
    nixosConfigurations = mapAttrs (n: c: {
      system = c.args.system or null;
      modules = map (m: if isPath m then { path = toString m; } else { type = typeOf m; }) (c.args.modules or [ ]);
    }) (outputs.nixosConfigurations or { });
  };
in
if what == "flake" then flakeView else if what == "defs" then defs else sanitize config
