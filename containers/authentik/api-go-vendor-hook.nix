{ makeSetupHook, client-go }:
makeSetupHook {
  name = "authentik-api-go-vendor-hook";
  substitutions.client = client-go;
} ./api-go-vendor-hook.sh
