//! The `vault_write` check: may the vault identity write secrets? Without `--write-probe`
//! doctor cannot tell (see below) and says so; with it, doctor sets and deletes a probe
//! secret.
//!
//! Who may write is decided by the vault's Azure role assignments, which live in Azure
//! Resource Manager (`Microsoft.Authorization/roleAssignments` on the vault's resource id), not
//! in the vault's data plane doctor talks to: reading them needs the vault's resource id (its
//! subscription and resource group, which keyturn's configuration does not hold), a token for
//! `management.azure.com` and `Microsoft.Authorization/roleAssignments/read`. Doctor does not
//! read them (and the emulator has no Resource Manager), so it cannot confirm write access
//! without writing.

use super::Check;
use crate::azure::keyvault::{write_probe, ProbeError};
use crate::azure::Http;
use crate::config::{IdentityConfig, NetworkConfig};
use crate::store::PROBE_PREFIX;

const CHECK: &str = "vault_write";

/// The check without a probe.
pub(super) fn unconfirmed(vault_identity: &str) -> Check {
    Check::warn(
        CHECK,
        "cannot confirm write access without writing: the vault's role assignments are in Azure Resource Manager, which doctor does not read",
        format!("run `keyturn doctor --write-probe` (sets and deletes a probe secret), or check that identity {vault_identity:?} holds Key Vault Secrets Officer on the vault: `az role assignment list --assignee <client id> --scope <vault resource id>`"),
    )
}

/// A probe secret's name: the reserved prefix and 128 random bits (never an account's
/// secret: the configuration refuses that prefix; never a previous probe, which may still be
/// soft-deleted under its own name).
pub(super) fn probe_name() -> String {
    format!("{PROBE_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// `--write-probe`: sets and deletes the probe secret `name` in `vault` as `identity`.
pub(super) async fn probe(
    vault: &str,
    identity: &str,
    id: &IdentityConfig,
    http: &Http,
    net: &NetworkConfig,
    name: &str,
) -> Check {
    let grant = format!(
        "az role assignment create --role \"Key Vault Secrets Officer\" --assignee <identity {identity:?}'s client id> --scope \"$(az keyvault show --name <vault name> --query id -o tsv)\""
    );
    let credential = match crate::azure::credential(identity, id, http, net) {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                CHECK,
                format!("no credential for identity {identity:?}: {e}"),
                "fix the identity (`keyturn check-config`)",
            )
        }
    };
    match write_probe(vault, credential, http, net, name).await {
        Ok(()) => Check::pass(
            CHECK,
            format!("set and deleted the probe secret {name:?} in {vault} (it stays soft-deleted until purged or its retention ends)"),
        ),
        Err(ProbeError::Set(e)) if e.status() == Some(403) => Check::fail(
            CHECK,
            format!("identity {identity:?} may not write secrets in {vault}: {e}"),
            format!("give it the role Key Vault Secrets Officer on the vault: {grant}"),
        ),
        Err(ProbeError::Set(e)) => Check::fail(
            CHECK,
            format!("the probe secret could not be set in {vault}: {e}"),
            format!("check the vault's firewall and that identity {identity:?} holds Key Vault Secrets Officer: {grant}"),
        ),
        Err(ProbeError::Delete(e)) => Check::warn(
            CHECK,
            format!("identity {identity:?} may write secrets in {vault}, but deleting the probe secret {name:?} failed: {e}"),
            format!("delete it: `az keyvault secret delete --vault-name <vault name> --name {name}` (keyturn itself never deletes secrets)"),
        ),
    }
}
