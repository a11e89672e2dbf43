# The sources: authentik and its Go client from the forge mirrors at their
# tags, and oci-python (not mirrored) from its upstream archive.
{ fetchgit, fetchzip, pins }:
{
  src = fetchgit {
    url = pins.authentik.mirror;
    inherit (pins.authentik) rev hash;
  };
  client-go-src = fetchgit {
    url = pins.client-go.mirror;
    inherit (pins.client-go) rev hash;
  };
  opencontainers-src = fetchzip {
    url = pins.opencontainers.upstream;
    inherit (pins.opencontainers) hash;
  };
}
