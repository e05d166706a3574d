#!/usr/bin/env bash
# Creates what keyturn needs in Azure, with the az CLI. Run it logged in (az login) as a
# Privileged Role Administrator (or Global Administrator) of the tenant who is also Owner or
# User Access Administrator of the resource group:
#   1. an app registration + service principal "keyturn-rotator" (KEYTURN_APP_NAME);
#   2. Microsoft Graph application permissions User-PasswordProfile.ReadWrite.All (reset
#      passwords), User.Read.All (lastPasswordChangeDateTime, drift checks) and
#      Policy.Read.ConditionalAccess (keyturn doctor's Conditional Access What-If) and
#      RoleManagement.Read.Directory (read-only: `keyturn doctor` reads the accounts'
#      directory roles to tell whether the app may reset them), granted (admin consent = app
#      role assignments on the service principal);
#   2b. Microsoft Graph delegated permissions openid and User.Read, consented for all users
#      (an oauth2PermissionGrant, AllPrincipals): keyturn's verify sign-in (verify = true,
#      the password grant) asks them, and Entra answers AADSTS65001 without that consent;
#   3. the directory role Privileged Authentication Administrator for the service principal
#      (a management service account holds admin roles; only this role may reset the
#      password of any privileged user);
#   4. an RBAC-mode Key Vault (created if missing) and "Key Vault Secrets Officer" on it;
#   5. with KEYTURN_CONSUMER (the object id of the principal that reads the passwords, e.g.
#      the consumer's service principal): "Key Vault Secrets User" on the vault for it
#      (KEYTURN_CONSUMER_TYPE: ServicePrincipal (default), User, Group);
#   6. with AKS_OIDC_ISSUER: a federated credential trusting the keyturn/keyturn service
#      account (deploy/kubernetes/keyturn.yaml), for kind = "workload_identity".
# Every step looks first and only creates what is missing: re-running it is safe. Any step
# that fails stops the script with what failed and a non-zero exit; "Done" means all ran.
# The ids below are Microsoft's fixed ids; the script also checks them against the names
# Azure reports and stops on a mismatch. Not run on the project's machines (no Azure).
#
# Usage: [KEYTURN_CONSUMER=OBJECT_ID] deploy/azure/setup.sh RESOURCE_GROUP VAULT_NAME [AKS_OIDC_ISSUER]
#   (AKS_OIDC_ISSUER: az aks show -g RG -n CLUSTER --query oidcIssuerProfile.issuerUrl -o tsv)
set -euo pipefail
usage="usage: [KEYTURN_CONSUMER=OBJECT_ID] setup.sh RESOURCE_GROUP VAULT_NAME [AKS_OIDC_ISSUER]"
rg=${1:?$usage}
vault=${2:?$usage}
issuer=${3:-}
if [ $# -ge 3 ] && [ -z "$issuer" ]; then
  # Given but empty: `az aks show ... oidcIssuerProfile.issuerUrl` answers nothing when the
  # cluster's OIDC issuer is off; going on would leave keyturn's pod unable to sign in.
  printf '%s\n' "the AKS OIDC issuer (third argument) is empty: turn it on with az aks update -g RG -n CLUSTER --enable-oidc-issuer --enable-workload-identity, or leave the argument out for a host outside AKS" >&2
  exit 64
fi
app_name=${KEYTURN_APP_NAME:-keyturn-rotator}
consumer=${KEYTURN_CONSUMER:-}
consumer_type=${KEYTURN_CONSUMER_TYPE:-ServicePrincipal}

graph_app=00000003-0000-0000-c000-000000000000                # Microsoft Graph (appId)
perm_password=cc117bb9-00cf-4eb8-b580-ea2a878fe8f7            # User-PasswordProfile.ReadWrite.All (Role)
perm_read=df021288-bdef-4463-88db-98f22de89214                # User.Read.All (Role)
perm_ca_read=37730810-e9ba-4e46-b07e-8ca78d182097             # Policy.Read.ConditionalAccess (Role)
perm_roles_read=483bed4a-2ad3-4361-a73b-c83ccdbdc53c          # RoleManagement.Read.Directory (Role)
scope_openid=37f7f235-527c-4136-accd-4a02d197296e            # openid (delegated, Scope)
scope_user_read=e1fe6dd8-ba31-4d61-89e7-88639da4683d         # User.Read (delegated, Scope)
verify_scope="openid User.Read"                              # what keyturn's verify asks (src/azure/graph.rs VERIFY_SCOPE)
role_paa=7be44c8a-adaf-4e2a-84d6-ab2649e08a13                 # Privileged Authentication Administrator (template id)
role_kv_officer=b86a8fe4-44ce-4948-aee5-eccb2c155cd7          # Key Vault Secrets Officer (Azure RBAC)
role_kv_user=4633458b-17de-408a-b874-0445c86b69e6             # Key Vault Secrets User (Azure RBAC)
graph=https://graph.microsoft.com/v1.0

say() { printf '%s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
# Retries a command while a freshly created principal replicates through Entra.
retry() { for _ in 1 2 3 4 5 6; do "$@" && return 0; say "  (not yet; retrying in 10 s)"; sleep 10; done; "$@"; }

# 1. App registration and service principal. `--display-name` alone is a prefix search
#    ("keyturn-rotator-old" matches too): filter on the exact name, and stop if it is not unique.
app_ids=$(az ad app list --filter "displayName eq '$app_name'" --query "[?displayName=='$app_name'].appId" -o tsv)
if [ "$(printf '%s' "$app_ids" | grep -c .)" -gt 1 ]; then
  die "more than one app registration is named $app_name ($(printf '%s' "$app_ids" | tr '\n' ' ')): remove the extra ones or choose another name with KEYTURN_APP_NAME"
fi
app_id=$app_ids
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$app_name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
  say "created app registration $app_name"
fi
sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query '[0].id' -o tsv)
if [ -z "$sp_id" ]; then
  sp_id=$(retry az ad sp create --id "$app_id" --query id -o tsv)
  say "created its service principal"
fi
graph_sp=$(az ad sp show --id "$graph_app" --query id -o tsv)
say "app $app_name: client id $app_id, service principal $sp_id"

# 2. Graph application permissions: declared on the app (what the portal shows), then
#    granted as app role assignments (what admin consent does).
for pair in "$perm_password:User-PasswordProfile.ReadWrite.All" "$perm_read:User.Read.All" \
  "$perm_ca_read:Policy.Read.ConditionalAccess" \
  "$perm_roles_read:RoleManagement.Read.Directory"; do
  id=${pair%%:*}; name=${pair#*:}
  actual=$(az ad sp show --id "$graph_app" --query "appRoles[?value=='$name'].id | [0]" -o tsv)
  if [ "$actual" != "$id" ]; then
    say "Graph reports $name as app role '$actual', not $id: stop and check"; exit 1
  fi
  declared=$(az ad app show --id "$app_id" \
    --query "requiredResourceAccess[?resourceAppId=='$graph_app'].resourceAccess[] | [?id=='$id'] | length(@)" -o tsv)
  if [ "${declared:-0}" = "0" ]; then
    # az warns on stderr that a grant is still needed (done below): keep its output for a
    # failure, which stops the script with what az said.
    if ! out=$(az ad app permission add --id "$app_id" --api "$graph_app" --api-permissions "$id=Role" 2>&1); then
      die "cannot declare $name on the app: $out"
    fi
    say "declared $name"
  fi
  granted=$(az rest --method GET --url "$graph/servicePrincipals/$sp_id/appRoleAssignments" \
    --query "value[?appRoleId=='$id' && resourceId=='$graph_sp'] | length(@)" -o tsv)
  if [ "$granted" = "0" ]; then
    retry az rest --method POST --url "$graph/servicePrincipals/$sp_id/appRoleAssignments" \
      --headers Content-Type=application/json \
      --body "{\"principalId\":\"$sp_id\",\"resourceId\":\"$graph_sp\",\"appRoleId\":\"$id\"}" >/dev/null
    say "granted $name"
  fi
done

# 2b. Delegated permissions for the verify sign-in: declared on the app, then consented for
#     all users of the tenant (what `az ad app permission grant` creates: an
#     oauth2PermissionGrant with consentType AllPrincipals on Graph's service principal).
for pair in "$scope_openid:openid" "$scope_user_read:User.Read"; do
  id=${pair%%:*}; name=${pair#*:}
  actual=$(az ad sp show --id "$graph_app" --query "oauth2PermissionScopes[?value=='$name'].id | [0]" -o tsv)
  if [ "$actual" != "$id" ]; then
    die "Graph reports $name as delegated permission '$actual', not $id: stop and check"
  fi
  declared=$(az ad app show --id "$app_id" \
    --query "requiredResourceAccess[?resourceAppId=='$graph_app'].resourceAccess[] | [?id=='$id'] | length(@)" -o tsv)
  if [ "${declared:-0}" = "0" ]; then
    if ! out=$(az ad app permission add --id "$app_id" --api "$graph_app" --api-permissions "$id=Scope" 2>&1); then
      die "cannot declare $name on the app: $out"
    fi
    say "declared $name (delegated)"
  fi
done
consented=$(az ad app permission list-grants --id "$app_id" \
  --query "[?resourceId=='$graph_sp' && consentType=='AllPrincipals'].scope | [0]" -o tsv)
missing=
for name in $verify_scope; do
  case " $consented " in *" $name "*) ;; *) missing="$missing $name" ;; esac
done
if [ -n "$missing" ]; then
  if [ -n "$consented" ]; then
    # One AllPrincipals grant per client and resource: widen it rather than add a second.
    grant_id=$(az ad app permission list-grants --id "$app_id" \
      --query "[?resourceId=='$graph_sp' && consentType=='AllPrincipals'].id | [0]" -o tsv)
    retry az rest --method PATCH --url "$graph/oauth2PermissionGrants/$grant_id" \
      --headers Content-Type=application/json --body "{\"scope\":\"$consented$missing\"}" >/dev/null
  else
    retry az ad app permission grant --id "$app_id" --api "$graph_app" --scope "$verify_scope" >/dev/null
  fi
  say "consented$missing (delegated, all users) for the verify sign-in"
fi

# 3. Directory role, tenant-wide. Built-in roles' definition id is their template id.
actual=$(az rest --method GET --url "$graph/roleManagement/directory/roleDefinitions/$role_paa" --query displayName -o tsv)
if [ "$actual" != "Privileged Authentication Administrator" ]; then
  say "directory role $role_paa is '$actual': stop and check"; exit 1
fi
assigned=$(az rest --method GET \
  --url "$graph/roleManagement/directory/roleAssignments?\$filter=principalId eq '$sp_id' and roleDefinitionId eq '$role_paa'" \
  --query 'length(value)' -o tsv)
if [ "$assigned" = "0" ]; then
  retry az rest --method POST --url "$graph/roleManagement/directory/roleAssignments" \
    --headers Content-Type=application/json \
    --body "{\"principalId\":\"$sp_id\",\"roleDefinitionId\":\"$role_paa\",\"directoryScopeId\":\"/\"}" >/dev/null
  say "assigned Privileged Authentication Administrator"
fi

# 4. The vault, in RBAC mode, and the app's data-plane role on it (this vault only).
if ! az keyvault show --name "$vault" --resource-group "$rg" >/dev/null 2>&1; then
  az keyvault create --name "$vault" --resource-group "$rg" --enable-rbac-authorization true \
    --enable-purge-protection true >/dev/null
  say "created Key Vault $vault (RBAC, purge protection)"
fi
if [ "$(az keyvault show --name "$vault" --resource-group "$rg" --query properties.enableRbacAuthorization -o tsv)" != "true" ]; then
  say "Key Vault $vault uses access policies, not RBAC: switch it (az keyvault update --enable-rbac-authorization true) after checking who uses it"; exit 1
fi
vault_id=$(az keyvault show --name "$vault" --resource-group "$rg" --query id -o tsv)
actual=$(az role definition list --name "$role_kv_officer" --query '[0].roleName' -o tsv)
if [ "$actual" != "Key Vault Secrets Officer" ]; then
  say "Azure role $role_kv_officer is '$actual': stop and check"; exit 1
fi
if [ -z "$(az role assignment list --assignee "$sp_id" --role "$role_kv_officer" --scope "$vault_id" --query '[0].id' -o tsv)" ]; then
  retry az role assignment create --assignee-object-id "$sp_id" --assignee-principal-type ServicePrincipal \
    --role "$role_kv_officer" --scope "$vault_id" >/dev/null
  say "assigned Key Vault Secrets Officer on $vault"
fi

# 5. The consumer (who reads the passwords keyturn writes): "Key Vault Secrets User" on the
#    vault, which reads secrets and cannot write them.
if [ -n "$consumer" ]; then
  actual=$(az role definition list --name "$role_kv_user" --query '[0].roleName' -o tsv)
  if [ "$actual" != "Key Vault Secrets User" ]; then
    die "Azure role $role_kv_user is '$actual': stop and check"
  fi
  if [ -z "$(az role assignment list --assignee "$consumer" --role "$role_kv_user" --scope "$vault_id" --query '[0].id' -o tsv)" ]; then
    retry az role assignment create --assignee-object-id "$consumer" --assignee-principal-type "$consumer_type" \
      --role "$role_kv_user" --scope "$vault_id" >/dev/null
    say "assigned Key Vault Secrets User on $vault to the consumer $consumer"
  fi
fi

# 6. AKS workload identity: trust the keyturn service account's tokens.
if [ -n "$issuer" ]; then
  existing=$(az ad app federated-credential list --id "$app_id" --query "[?name=='keyturn-aks'].issuer" -o tsv)
  if [ -z "$existing" ]; then
    az ad app federated-credential create --id "$app_id" --parameters \
      "{\"name\":\"keyturn-aks\",\"issuer\":\"$issuer\",\"subject\":\"system:serviceaccount:keyturn:keyturn\",\"audiences\":[\"api://AzureADTokenExchange\"]}" >/dev/null \
      || die "cannot create the federated credential keyturn-aks for $issuer (see az's message above)"
    say "created federated credential keyturn-aks for system:serviceaccount:keyturn:keyturn"
  elif [ "$existing" != "$issuer" ]; then
    die "the federated credential keyturn-aks trusts $existing, not $issuer (a recreated cluster?): update it (az ad app federated-credential update --id $app_id --federated-credential-id keyturn-aks ...) or delete it and re-run"
  fi
fi

tenant=$(az account show --query tenantId -o tsv)
if [ -n "$issuer" ]; then
  identity="  kind = \"workload_identity\"                  # AKS: the ServiceAccount's azure.workload.identity/client-id is $app_id
  # verify = true needs an identity that can sign a user in (a workload identity cannot):
  # give this identity a verify_identity: an identity of this app with a secret or certificate."
else
  identity="  kind = \"client_secret\"
  client_secret_credential = \"keyturn-client-secret\"   # systemd: LoadCredential=keyturn-client-secret:/etc/keyturn/client-secret
  # A client secret, added beside any the app already has (--append: a renewal must not
  # remove the secret the running keyturn uses):
  #   az ad app credential reset --id $app_id --append --display-name keyturn --years 1 --query password -o tsv
  # stored as /etc/keyturn/client-secret (0600 root) for LoadCredential= (docs/deploy.md)."
fi
if [ -n "$consumer" ]; then
  reader="# The consumer $consumer reads the secrets (Key Vault Secrets User on $vault)."
else
  reader="# Nobody reads the passwords yet: re-run with KEYTURN_CONSUMER=<object id of the consumer's
# service principal> to grant it Key Vault Secrets User on $vault."
fi
cat <<DONE
Done. In keyturn.toml:

  [identities.rotator]
  tenant_id = "$tenant"
  client_id = "$app_id"
$identity

  [[accounts]]
  vault = "https://$vault.vault.azure.net/"

$reader
DONE
