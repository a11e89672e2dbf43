# The built-in example: a tiny closure from plain derivations (no nixpkgs).
# A static busybox from the host stands in for a shell, a "greeting" library
# is shared, and "hello" is the app.
{ system ? builtins.currentSystem }:
let
  sh = name: script: derivation {
    inherit name system;
    builder = "/bin/sh";
    args = [ "-c" script ];
  };
in
rec {
  busybox = sh "busybox-static" ''
    set -e
    /bin/mkdir -p $out/bin
    /bin/cp /bin/busybox $out/bin/busybox
    for tool in sh ls cat echo; do /bin/ln -s busybox $out/bin/$tool; done
  '';
  greeting = sh "greeting-1.0" ''
    /bin/mkdir -p $out/share
    echo "Hello from a Nix closure, layered by nixoci!" > $out/share/greeting.txt
  '';
  hello = sh "hello-1.0" ''
    set -e
    /bin/mkdir -p $out/bin
    printf '#!${busybox}/bin/sh\n${busybox}/bin/cat ${greeting}/share/greeting.txt\necho "args: $*"\n' > $out/bin/hello
    /bin/chmod +x $out/bin/hello
  '';
}
