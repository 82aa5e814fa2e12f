# Offline stand-ins for nixpkgs, for contrib/nix/nix_test.go: a small `lib` (the
# functions nix/*.nix and flake.nix use, with nixpkgs' semantics), a tiny
# module evaluator, stub packages, and a stub `nixpkgs` flake input. No
# nixpkgs is fetched; `nix-instantiate --eval --strict` runs in read-only mode.
#
# The evaluator follows the module system where these files rely on it:
# - mkIf / mkMerge / mkOverride (mkDefault, mkForce) are pushed down into
#   attribute sets without evaluating conditions, so `config` can be read by
#   the modules that define it (cfg = config.services.gpuctl);
# - at a leaf the definitions with the best priority win (option defaults
#   count as priority 1500); lists of equal priority are concatenated, other
#   differing values are a conflict;
# - declared options are type-checked, and a definition under a namespace
#   that declares options (services.gpuctl) must name a declared option.
# A leaf nobody defines evaluates to null.
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    elem
    filter
    foldl'
    functionArgs
    hasAttr
    head
    intersectAttrs
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    map
    match
    stringLength
    substring
    tail
    ;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  showPath = p: if p == [ ] then "<root>" else builtins.concatStringsSep "." p;

  mkType = name: check: extra: { inherit name check; } // extra;

  lib = rec {
    # --- options and properties ---
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = what: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${what}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    literalMD = text: {
      _type = "literalMD";
      inherit text;
    };

    types = rec {
      bool = mkType "bool" isBool { };
      str = mkType "str" isString { };
      int = mkType "int" isInt { };
      port = mkType "port" (v: isInt v && v >= 0 && v <= 65535) { };
      path = mkType "path" (v: isPath v || isString v && substring 0 1 v == "/") { };
      package = mkType "package" (v: isAttrs v && v ? outPath) { };
      attrs = mkType "attrs" isAttrs { subtree = true; };
      listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v) { };
      nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v) { };
      enum = vs: mkType "one of ${builtins.toJSON vs}" (v: elem v vs) { };
      strMatching = re: mkType "string matching ${re}" (v: isString v && match re v != null) { };
      # A submodule: its options are declared below the option that has
      # this type (the evaluator descends into them: defaults, type checks,
      # unknown keys refused unless freeformType is set); as the element
      # type of a list, a value is checked against them (no defaults).
      submodule =
        m:
        let
          decl = if isFunction m then m { inherit lib; } else m;
          options = decl.options or { };
          freeform = decl.freeformType or null;
          checkNode =
            node: v:
            isAttrs v
            && all (
              n:
              if !(node ? ${n}) then
                freeform != null
              else if (node.${n}._type or null) == "option" then
                node.${n}.type.check v.${n}
              else
                checkNode node.${n} v.${n}
            ) (attrNames v)
            && all (
              n: (node.${n}._type or null) != "option" || v ? ${n} || node.${n} ? default
            ) (attrNames node);
        in
        mkType "submodule" (checkNode options) {
          subtree = true;
          _submodule = {
            inherit options;
            freeform = freeform != null;
          };
        };
    };

    # mkPackageOption pkgs name { ... }: an option of type package whose
    # default is pkgs.<name> (an error only when that default is used).
    mkPackageOption =
      pkgs: name:
      {
        default ? [ name ],
        extraDescription ? "",
        ...
      }:
      let
        path = if isList default then default else [ default ];
      in
      mkOption {
        type = types.package;
        default = attrByPath path (throw "pkgs.${builtins.concatStringsSep "." path} does not exist") pkgs;
        defaultText = literalExpression "pkgs.${builtins.concatStringsSep "." path}";
        description = "The ${name} package to use. ${extraDescription}";
      };

    # --- the rest of nixpkgs' lib these files use ---
    inherit unique listToAttrs;
    inherit (builtins) substring;
    getExe =
      p:
      if p ? meta.mainProgram then
        "${p}/bin/${p.meta.mainProgram}"
      else
        throw "getExe: ${p.name or "package"} has no meta.mainProgram";
    escapeShellArg =
      s: if match "[A-Za-z0-9_./=+:,@%-]+" s != null then s else "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";
    # A source filtered by path: the stub keeps the filter, so that tests
    # can ask what it lets through.
    cleanSourceWith =
      {
        src,
        filter,
        name ? "source",
      }:
      {
        _stub = "cleanSourceWith";
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
        inherit src filter name;
      };
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: xs: if c then xs else [ ];
    optionalString = c: s: if c then s else "";
    optionalAttrs = c: a: if c then a else { };
    hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
    hasSuffix =
      suf: s:
      let
        n = stringLength s;
        m = stringLength suf;
      in
      n >= m && substring (n - m) m s == suf;
    removePrefix =
      pre: s: if hasPrefix pre s then substring (stringLength pre) (stringLength s - stringLength pre) s else s;
    toInt =
      s:
      if match "(0|[1-9][0-9]*)" s == null then
        throw "toInt: could not convert ${builtins.toJSON s} to int"
      else
        builtins.fromJSON s;
    nameValuePair = name: value: { inherit name value; };
    genAttrs = names: f: listToAttrs (map (n: nameValuePair n (f n)) names);
    findFirst =
      pred: default: xs:
      let
        hits = filter pred xs;
      in
      if hits == [ ] then default else head hits;
    assertMsg = ok: msg: ok || throw msg;
    attrByPath =
      path: default: set:
      if path == [ ] then
        set
      else if isAttrs set && set ? ${head path} then
        attrByPath (tail path) default set.${head path}
      else
        default;
    platforms.linux = [
      "x86_64-linux"
      "aarch64-linux"
    ];
    fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    fileset = {
      toSource = { root, fileset }: root;
      difference = a: b: a;
      unions = xs: xs;
      maybeMissing = p: p;
    };
  };

  # --- the module evaluator ---

  emptyAttrs = {
    _type = "emptyAttrs";
  };
  isWrapper = v: isAttrs v && elem (v._type or null) [ "if" "merge" "override" ];
  isTree = v: isAttrs v && !(v ? outPath) && !(v ? _type);

  # One definition at one node, as a list of trees (wrappers pushed into
  # the children) and leaves (wrappers kept).
  expand =
    d:
    if !isWrapper d then
      [ (if isTree d then { tree = d; } else { leaf = d; }) ]
    else if d._type == "merge" then
      concatMap expand d.contents
    else
      let
        rewrap = x: d // { content = x; };
      in
      map (
        e:
        if e ? tree && e.tree == { } then
          # An empty set under mkIf: a leaf, so that the condition still
          # decides whether it exists (users.groups.gpuctl = { }).
          { leaf = rewrap emptyAttrs; }
        else if e ? tree then
          { tree = builtins.mapAttrs (n: rewrap) e.tree; }
        else
          { leaf = rewrap e.leaf; }
      ) (expand d.content);

  isEmptyAttrsDef = d: if isWrapper d && d ? content then isEmptyAttrsDef d.content else d == emptyAttrs;

  # A leaf definition as a list of { priority, value } (empty when an mkIf
  # around it is false).
  discharge =
    prio: d:
    if !isWrapper d then
      [
        {
          priority = prio;
          value = d;
        }
      ]
    else if d._type == "if" then
      (if d.condition then discharge prio d.content else [ ])
    else if d._type == "merge" then
      concatMap (discharge prio) d.contents
    else
      discharge d.priority d.content;

  # The declaration at path: an option, a namespace of options, or null
  # (nothing declared, or a path inside an option's value).
  optAt =
    path: node:
    if path == [ ] then
      node
    else if (node._type or null) == "option" && node ? type._submodule then
      optAt path (subOptions node)
    else if !isAttrs node || (node._type or null) == "option" || !(node ? ${head path}) then
      null
    else
      optAt (tail path) node.${head path};

  # The options a submodule-typed option declares, with every namespace
  # among them marked freeform when the submodule has a freeformType.
  subOptions =
    opt:
    let
      mark =
        node:
        if (node._type or null) == "option" then
          node
        else
          builtins.mapAttrs (n: mark) node // { _freeform = opt.type._submodule.freeform; };
    in
    mark opt.type._submodule.options;

  mergeLeaf =
    opts: path: defs:
    let
      ds = concatMap (discharge 100) defs;
      best = foldl' (m: d: if d.priority < m then d.priority else m) 9999 ds;
      vals = map (d: d.value) (filter (d: d.priority == best) ds);
      value =
        if ds == [ ] then
          null
        else if all (v: v == emptyAttrs) vals then
          { }
        else if all isList vals then
          concatLists vals
        else if all (v: v == head vals) vals then
          head vals
        else
          throw "stub eval: conflicting definitions for ${showPath path}: ${builtins.toJSON vals}";
      opt = optAt path opts;
      typed = opt != null && (opt._type or null) == "option" && opt ? type;
    in
    if typed && value != null && !(opt.type.check value) then
      throw "stub eval: ${showPath path} is not of type ${opt.type.name}: ${builtins.toJSON value}"
    else
      value;

  mergeNode =
    opts: path: defs:
    let
      es = concatMap expand defs;
      trees = map (e: e.tree) (filter (e: e ? tree) es);
      # Next to sets with attributes, an empty set adds nothing.
      leaves0 = map (e: e.leaf) (filter (e: e ? leaf) es);
      leaves = if trees == [ ] then leaves0 else filter (l: !(isEmptyAttrsDef l)) leaves0;
      optNode = optAt path opts;
      subNode = if (optNode._type or null) == "option" && optNode ? type._submodule then subOptions optNode else optNode;
      declares =
        isAttrs subNode
        && !(subNode._freeform or false)
        && any (n: (subNode.${n}._type or null) == "option") (attrNames subNode);
      names = unique (concatMap attrNames trees);
      undeclared = filter (n: !(subNode ? ${n})) names;
    in
    if leaves != [ ] && trees != [ ] then
      throw "stub eval: ${showPath path} is defined both as an attribute set and as a value"
    else if leaves != [ ] || trees == [ ] then
      mergeLeaf opts path leaves
    else if declares && undeclared != [ ] then
      throw "stub eval: the option ${showPath (path ++ [ (head undeclared) ])} does not exist"
    else
      lib.genAttrs names (n: mergeNode opts (path ++ [ n ]) (map (t: t.${n}) (filter (t: t ? ${n}) trees)));

  # Option declarations -> definitions of their defaults at priority 1500.
  defaultsOf =
    opts:
    if (opts._type or null) == "option" && opts ? type._submodule then
      lib.mkMerge [
        (if opts ? default then lib.mkOverride 1500 opts.default else { })
        (defaultsOf (subOptions opts))
      ]
    else if (opts._type or null) == "option" then
      (if opts ? default then lib.mkOverride 1500 opts.default else { })
    else if isAttrs opts then
      builtins.mapAttrs (n: defaultsOf) (removeAttrs opts [ "_freeform" ])
    else
      { };

  mergeOptions =
    a: b:
    a
    // builtins.mapAttrs (
      n: v:
      if a ? ${n} && isAttrs v && (v._type or null) != "option" && (a.${n}._type or null) != "option" then
        mergeOptions a.${n} v
      else if a ? ${n} then
        throw "stub eval: option ${n} declared twice"
      else
        v
    ) b;

  evalModules =
    {
      modules,
      pkgs,
      specialArgs ? { },
    }:
    let
      load = m: if isPath m || isString m then import m else m;
      call =
        m:
        let
          f = load m;
        in
        if isFunction f then
          f (
            {
              inherit config lib pkgs;
              options = opts;
              modulesPath = "/stub/nixos/modules";
            }
            // specialArgs
          )
        else
          f;
      collect = ms: concatMap (m: let r = call m; in [ r ] ++ collect (r.imports or [ ])) ms;
      results = collect modules;
      declOf = r: r.options or { };
      defsOf =
        r:
        if r ? config || r ? options then
          r.config or { }
        else
          removeAttrs r [
            "imports"
            "_file"
            "key"
          ];
      opts = foldl' mergeOptions { } (map declOf results);
      config = mergeNode opts [ ] ([ (defaultsOf opts) ] ++ map defsOf results);
    in
    {
      inherit config;
      options = opts;
    };

  # --- packages ---

  storePath = name: "/nix/store/00000000000000000000000000000000-${name}";
  drv = name: extra: { outPath = storePath name; inherit name; } // extra;

  buildGoModuleWith =
    go: attrs:
    drv "${attrs.pname}-${attrs.version}" (
      attrs
      // {
        inherit go;
        _stub = "buildGoModule";
      }
    );

  mkPkgs =
    {
      system ? "x86_64-linux",
      goVersion ? "1.26.8",
      go126Version ? "1.26.8",
    }:
    let
      pkgs = {
        inherit lib;
        stdenv.hostPlatform.system = system;
        go = drv "go-${goVersion}" { version = goVersion; };
        go_1_26 = if go126Version == null then null else drv "go-${go126Version}" { version = go126Version; };
        buildGoModule = {
          __functor = self: buildGoModuleWith pkgs.go;
          override = { go }: buildGoModuleWith go;
        };
        coreutils = drv "coreutils" { };
        util-linux = drv "util-linux" { };
        writeShellScriptBin =
          name: text:
          drv name {
            _stub = "writeShellScriptBin";
            inherit text;
            meta.mainProgram = name;
          };
        openssh = drv "openssh" { };
        iproute2 = drv "iproute2" { };
        nix = drv "nix" { };
        formats.toml =
          { }:
          {
            type = lib.types.attrs // {
              name = "TOML value";
            };
            generate =
              name: value:
              drv name {
                _stub = "toml";
                inherit value;
              };
          };
        callPackage =
          fn: args:
          let
            f = if isFunction fn then fn else import fn;
          in
          f (intersectAttrs (functionArgs f) pkgs // args);
        mkShell = args: drv "nix-shell" (args // { _stub = "mkShell"; });
        runCommand =
          name: env: script:
          drv name {
            _stub = "runCommand";
            inherit env script;
          };
      };
    in
    pkgs;

  pkgs = mkPkgs { };

  # A stand-in for the nixpkgs flake input.
  nixpkgs = {
    lib = lib // {
      nixosSystem =
        { modules, ... }@args:
        evalModules {
          inherit modules;
          pkgs = mkPkgs { system = args.system or "x86_64-linux"; };
        };
    };
    legacyPackages = lib.genAttrs lib.platforms.linux (system: mkPkgs { inherit system; });
    outPath = "/stub/nixpkgs";
  };
in
{
  inherit
    lib
    evalModules
    mkPkgs
    pkgs
    nixpkgs
    ;

  # evalModules with the stub pkgs.
  eval =
    modules:
    evalModules {
      inherit modules pkgs;
    };

  # flake.nix, with `result`: its outputs, called with a stub nixpkgs and `self` (rev: the
  # shortRev/dirtyShortRev attributes git gives `self`, or {} outside git).
  flake =
    rev:
    let
      flake = import ../../../flake.nix;
      self =
        outputs
        // rev
        // {
          outPath = "/stub/self";
        };
      outputs = flake.outputs {
        inherit self nixpkgs;
      };
    in
    flake // { result = outputs; };
}
