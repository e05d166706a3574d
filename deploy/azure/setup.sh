#!/usr/bin/env bash
# Creates what keyturn needs in Azure, with the az CLI (logged in as a Global Administrator
# or Privileged Role Administrator, and an Owner/User Access Administrator of the vault):
#   - an app registration + service principal "keyturn-rotator";
#   - Microsoft Graph application permissions User-PasswordProfile.ReadWrite.All and
#     User.Read.All, with admin consent;
#   - the directory role Privileged Authentication Administrator for the service principal
#     (needed to reset accounts that hold admin roles);
#   - an RBAC-mode Key Vault and the role "Key Vault Secrets Officer" on it;
#   - optionally a federated credential for AKS workload identity.
# Ids of permissions and roles are looked up by name, not hard-coded. Re-running is safe:
# each step checks what exists first. Not run on the project's machines (no Azure there).
#
# Usage: deploy/azure/setup.sh RESOURCE_GROUP VAULT_NAME [AKS_OIDC_ISSUER]
set -euo pipefail
rg=${1:?resource group}; vault=${2:?vault name}; issuer=${3:-}
app_name=keyturn-rotator
graph=00000003-0000-0000-c000-000000000000   # Microsoft Graph's well-known app id

app_id=$(az ad app list --display-name "$app_name" --query '[0].appId' -o tsv)
if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$app_name" --query appId -o tsv)
fi
sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query '[0].id' -o tsv)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
fi
echo "app $app_name: client id $app_id, service principal $sp_id"

# Graph application permissions (app roles), then admin consent.
for perm in User-PasswordProfile.ReadWrite.All User.Read.All; do
  role_id=$(az ad sp show --id "$graph" --query "appRoles[?value=='$perm'].id" -o tsv)
  az ad app permission add --id "$app_id" --api "$graph" --api-permissions "$role_id=Role" 2>/dev/null || true
done
az ad app permission admin-consent --id "$app_id"

# Directory role: Privileged Authentication Administrator.
role_def=$(az rest --method GET \
  --url "https://graph.microsoft.com/v1.0/roleManagement/directory/roleDefinitions?\$filter=displayName eq 'Privileged Authentication Administrator'" \
  --query 'value[0].id' -o tsv)
assigned=$(az rest --method GET \
  --url "https://graph.microsoft.com/v1.0/roleManagement/directory/roleAssignments?\$filter=principalId eq '$sp_id' and roleDefinitionId eq '$role_def'" \
  --query 'length(value)' -o tsv)
if [ "$assigned" = "0" ]; then
  az rest --method POST --url https://graph.microsoft.com/v1.0/roleManagement/directory/roleAssignments \
    --body "{\"principalId\":\"$sp_id\",\"roleDefinitionId\":\"$role_def\",\"directoryScopeId\":\"/\"}"
fi

# The vault (RBAC authorization) and the app's role on it.
if ! az keyvault show --name "$vault" --resource-group "$rg" >/dev/null 2>&1; then
  az keyvault create --name "$vault" --resource-group "$rg" --enable-rbac-authorization true
fi
vault_id=$(az keyvault show --name "$vault" --resource-group "$rg" --query id -o tsv)
az role assignment create --assignee-object-id "$sp_id" --assignee-principal-type ServicePrincipal \
  --role "Key Vault Secrets Officer" --scope "$vault_id" >/dev/null

# AKS workload identity: trust the keyturn service account's tokens.
if [ -n "$issuer" ]; then
  if [ -z "$(az ad app federated-credential list --id "$app_id" --query "[?name=='keyturn-aks'].name" -o tsv)" ]; then
    az ad app federated-credential create --id "$app_id" --parameters "{\"name\":\"keyturn-aks\",\"issuer\":\"$issuer\",\"subject\":\"system:serviceaccount:keyturn:keyturn\",\"audiences\":[\"api://AzureADTokenExchange\"]}"
  fi
fi

tenant=$(az account show --query tenantId -o tsv)
cat <<DONE
Done. In keyturn.toml:
  [identities.rotator]
  tenant_id = "$tenant"
  client_id = "$app_id"
  kind = "client_secret"   # then: az ad app credential reset --id $app_id (store it for LoadCredential=)
                           # or kind = "workload_identity" on AKS, or "managed_identity"
  vault = "https://$vault.vault.azure.net/"
DONE
