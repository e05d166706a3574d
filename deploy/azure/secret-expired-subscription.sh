#!/usr/bin/env bash
# Key Vault's own dead-man switch for keyturn: an Event Grid subscription on the vault that
# delivers Microsoft.KeyVault.SecretExpired, and nothing else, to an endpoint you watch.
#
# keyturn sets each committed password's `exp` to rotation time + the schedule's period +
# `expiry_grace` (docs/configuration.md). Each rotation commits a new version with a later
# `exp`, so the current version expires only when rotations have stalled for longer than
# `expiry_grace`: whatever stopped keyturn (the host, its credential, keyturn itself), Key
# Vault still tells. SecretNearExpiry is not usable for this: Key Vault sends it 30 days before
# `exp`, which with a weekly schedule is at every rotation. The `-pending` staging secret
# has no `exp` and never sends either.
#
# Key Vault sends these events only for versions created after the subscription exists: the
# next rotation of each account arms it.
#
# Usage: secret-expired-subscription.sh RESOURCE_GROUP VAULT ENDPOINT [SECRET ...]
#   ENDPOINT  an https webhook that answers Event Grid's validation handshake (a Logic App,
#             an Azure Function's HTTP trigger, an on-call tool's Event Grid integration), or,
#             with KEYTURN_ENDPOINT_TYPE=storagequeue|servicebusqueue|eventhub|azurefunction,
#             that resource's id (a storage queue: .../queueServices/default/queues/NAME)
#   SECRET    only these secret names (keyturn's `secret` of each account, at most 25);
#             without them, every secret of the vault that has an `exp`
# Environment: KEYTURN_SUBSCRIPTION_NAME (default keyturn-secret-expired),
#   KEYTURN_ENDPOINT_TYPE (default webhook).
set -euo pipefail

die() { # CODE MESSAGE
    echo "secret-expired-subscription.sh: $2" >&2
    exit "$1"
}

if [[ $# -lt 3 ]]; then
    sed -n '/^# Usage:/,/(default webhook)/p' "$0" >&2
    exit 64
fi
group=$1
vault=$2
endpoint=$3
shift 3
name=${KEYTURN_SUBSCRIPTION_NAME:-keyturn-secret-expired}
endpoint_type=${KEYTURN_ENDPOINT_TYPE:-webhook}

[[ -n $group && -n $vault && -n $endpoint ]] || die 64 "RESOURCE_GROUP, VAULT and ENDPOINT must not be empty"
case $endpoint_type in
webhook) [[ $endpoint == https://* ]] || die 64 "a webhook ENDPOINT must be an https:// URL: $endpoint" ;;
storagequeue | servicebusqueue | eventhub | azurefunction) ;;
*) die 64 "KEYTURN_ENDPOINT_TYPE must be webhook, storagequeue, servicebusqueue, eventhub or azurefunction: $endpoint_type" ;;
esac
# Event Grid's StringIn advanced filter takes at most 25 values.
[[ $# -le 25 ]] || die 64 "at most 25 SECRET names ($#): create one subscription per 25, with KEYTURN_SUBSCRIPTION_NAME"

vault_id=$(az keyvault show --resource-group "$group" --name "$vault" --query id --output tsv) ||
    die 1 "cannot find the vault $vault in $group (az keyvault show failed)"
[[ -n $vault_id ]] || die 1 "az keyvault show returned no id for $vault"

args=(
    eventgrid event-subscription create
    --name "$name"
    --source-resource-id "$vault_id"
    --endpoint-type "$endpoint_type"
    --endpoint "$endpoint"
    --included-event-types Microsoft.KeyVault.SecretExpired
)
# A Key Vault event's subject is the secret's name.
if [[ $# -gt 0 ]]; then
    args+=(--advanced-filter subject StringIn "$@")
fi
az "${args[@]}" --output none ||
    die 1 "cannot create the event subscription $name on $vault (az eventgrid event-subscription create failed)"

echo "Done: $name sends Microsoft.KeyVault.SecretExpired of ${*:-every secret} in $vault to $endpoint."
echo "Armed for versions created from now on: each account's next rotation arms it."
