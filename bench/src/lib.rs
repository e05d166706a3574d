//! keyturn-bench: a fleet of N accounts over T tenants and V vaults, seeded into
//! `keyturn-emulator` and described in a keyturn configuration. The benchmark binary
//! (`src/main.rs`) runs keyturn against it; keyturn's end-to-end scale test uses the same
//! fleet at a small size.
//!
//! Layout of a fleet:
//! - tenant `tJ` (domain `tJ.example`) for J in 0..T, with one app (the Graph permission
//!   `User-PasswordProfile.ReadWrite.All` + `User.Read.All` and the directory role
//!   Privileged Authentication Administrator): keyturn's identity `tJ` in that tenant;
//! - account I belongs to tenant `I mod T`; its user `svc-I@tJ.example` holds an admin role;
//! - vault `kvK` for K in 0..V, owned by the operator's tenant `msp`; the tenant of account I
//!   uses vault `(I mod T) mod V`, so a customer's accounts share one vault;
//! - one operator identity (`operator`, an app in `msp` with Key Vault Secrets Officer on
//!   every vault) reads and writes every vault: a managed-service provider keeps its vaults
//!   in its own tenant, while each customer's app can only reach that customer's Graph. It
//!   also means one Key Vault token and V vault clients instead of T × V;
//! - one consumer app (`CONSUMER_CLIENT` in `msp`, Key Vault Secrets User on every vault),
//!   which the benchmark's consumer reads a password as;
//! - each user's initial password is seeded as the first version of its secret `sI`.

use keyturn_emulator::Emulator;
use std::fmt::Write as _;
use std::path::Path;

/// The operator's tenant (owns the vaults).
pub const OPERATOR_TENANT: &str = "msp";
/// The operator app's client id.
pub const OPERATOR_CLIENT: &str = "ffffffff-0000-0000-0000-000000000000";
/// The consumer's app (in the operator's tenant, Key Vault Secrets User on every vault): a
/// CoreView-style tool reading the passwords keyturn writes.
pub const CONSUMER_CLIENT: &str = "eeeeeeee-0000-0000-0000-000000000000";
/// The consumer app's client secret.
pub const CONSUMER_SECRET: &str = "consumer-secret";

/// A fleet's shape.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    /// Accounts (N).
    pub accounts: usize,
    /// Tenants (T), one app each.
    pub tenants: usize,
    /// Vaults (V).
    pub vaults: usize,
}

/// Limits the emulator enforces (`None` in [`Fleet::scenario`]: effectively none).
#[derive(Debug, Clone, Copy)]
pub struct EmulatorLimits {
    /// Sets per vault per window.
    pub kv_set: u32,
    /// Other operations per vault per window.
    pub kv_other: u32,
    /// Key Vault window.
    pub kv_window_ms: u64,
    /// Graph writes per app and tenant per window.
    pub graph_write: u32,
    /// Graph window.
    pub graph_window_ms: u64,
}

impl EmulatorLimits {
    /// Azure's published limits.
    pub fn azure() -> Self {
        EmulatorLimits {
            kv_set: 300,
            kv_other: 4_000,
            kv_window_ms: 10_000,
            graph_write: 3_000,
            graph_window_ms: 150_000,
        }
    }

    /// So high that nothing is throttled.
    pub fn off() -> Self {
        EmulatorLimits {
            kv_set: u32::MAX,
            kv_other: u32::MAX,
            kv_window_ms: 10_000,
            graph_write: u32::MAX,
            graph_window_ms: 150_000,
        }
    }
}

/// keyturn settings for [`Fleet::config`].
#[derive(Debug, Clone)]
pub struct KeyturnOpts {
    /// `[limits] enabled`.
    pub limits: bool,
    /// `[limits]` budgets (sets, other per 10 s, graph writes per 150 s), `None`: defaults.
    pub budgets: Option<(u32, u32, u32)>,
    /// `daemon.max_concurrent_rotations`.
    pub max_concurrent: usize,
    /// `daemon.max_concurrent_per_tenant`.
    pub per_tenant: usize,
    /// `daemon.drift_check_interval`.
    pub drift: String,
    /// `limits.reserve`, `None`: keyturn's default.
    pub reserve: Option<f64>,
}

impl Default for KeyturnOpts {
    fn default() -> Self {
        KeyturnOpts {
            limits: true,
            budgets: None,
            max_concurrent: 64,
            per_tenant: 4,
            drift: "1h".into(),
            reserve: None,
        }
    }
}

impl Fleet {
    /// The tenant of account `i`.
    pub fn tenant_of(&self, i: usize) -> usize {
        i % self.tenants
    }

    /// The vault of account `i`.
    pub fn vault_of(&self, i: usize) -> usize {
        self.tenant_of(i) % self.vaults
    }

    /// Tenant id `tJ`.
    pub fn tenant_id(j: usize) -> String {
        format!("t{j}")
    }

    /// App client id of tenant `j`.
    pub fn client_id(j: usize) -> String {
        format!("00000000-0000-0000-0000-{:012}", j + 1)
    }

    /// Vault name `kvK`.
    pub fn vault_name(k: usize) -> String {
        format!("kv{k}")
    }

    /// Account name, UPN and secret of account `i`.
    pub fn account(&self, i: usize) -> (String, String, String) {
        (
            format!("a{i}"),
            format!("svc-{i}@t{}.example", self.tenant_of(i)),
            format!("s{i}"),
        )
    }

    /// The emulator scenario (TOML).
    pub fn scenario(&self, limits: EmulatorLimits) -> String {
        let mut t = String::with_capacity(self.accounts * 300);
        let _ = writeln!(
            t,
            "[limits]\nkv_window_ms = {}\nkv_set_limit = {}\nkv_other_limit = {}\ngraph_write_window_ms = {}\ngraph_write_limit = {}\n",
            limits.kv_window_ms, limits.kv_set, limits.kv_other, limits.graph_window_ms, limits.graph_write
        );
        let _ = writeln!(
            t,
            "[[tenants]]\nid = \"{OPERATOR_TENANT}\"\n\n[[apps]]\ntenant = \"{OPERATOR_TENANT}\"\nclient_id = \"{OPERATOR_CLIENT}\"\nsecrets = [\"operator-secret\"]\n\n[[apps]]\ntenant = \"{OPERATOR_TENANT}\"\nclient_id = \"{CONSUMER_CLIENT}\"\nsecrets = [\"{CONSUMER_SECRET}\"]\n"
        );
        for j in 0..self.tenants {
            let _ = writeln!(
                t,
                "[[tenants]]\nid = \"t{j}\"\ndomain = \"t{j}.example\"\n\n[[apps]]\ntenant = \"t{j}\"\nclient_id = \"{}\"\nsecrets = [\"secret-{j}\"]\ngraph_permissions = [\"User.Read.All\", \"User-PasswordProfile.ReadWrite.All\"]\ndirectory_roles = [\"Privileged Authentication Administrator\"]\n",
                Self::client_id(j)
            );
        }
        for i in 0..self.accounts {
            let (_, upn, _) = self.account(i);
            let _ = writeln!(
                t,
                "[[users]]\ntenant = \"t{}\"\nupn = \"{upn}\"\npassword = \"Init-{i}-Pass!\"\ndirectory_roles = [\"Exchange Administrator\"]\n",
                self.tenant_of(i)
            );
        }
        for k in 0..self.vaults {
            let _ = writeln!(
                t,
                "[[vaults]]\nname = \"{}\"\ntenant = \"{OPERATOR_TENANT}\"\naccess = [{{ client_id = \"{OPERATOR_CLIENT}\", role = \"Key Vault Secrets Officer\" }}, {{ client_id = \"{CONSUMER_CLIENT}\", role = \"Key Vault Secrets User\" }}]\nsecrets = [",
                Self::vault_name(k)
            );
            for i in (0..self.accounts).filter(|i| self.vault_of(*i) == k) {
                let (_, upn, secret) = self.account(i);
                let _ = writeln!(
                    t,
                    "  {{ name = \"{secret}\", from_user = \"t{}/{upn}\" }},",
                    self.tenant_of(i)
                );
            }
            t.push_str("]\n\n");
        }
        t
    }

    /// A keyturn configuration for this fleet on `emu`, with its files in `dir`.
    pub fn config(&self, emu: &Emulator, dir: &Path, o: &KeyturnOpts) -> String {
        let ca = dir.join("ca.pem");
        let _ = std::fs::write(&ca, emu.ca_pem());
        let mut t = String::with_capacity(self.accounts * 250);
        let _ = writeln!(
            t,
            "[daemon]\nstate_dir = {:?}\naudit_log = {:?}\ndrift_check_interval = {:?}\nmax_concurrent_rotations = {}\nmax_concurrent_per_tenant = {}\nretry_base_delay = \"1s\"\nretry_max_delay = \"5s\"\nshutdown_grace = \"10s\"\n",
            dir.join("state").display().to_string(),
            dir.join("audit.jsonl").display().to_string(),
            o.drift,
            o.max_concurrent,
            o.per_tenant
        );
        let _ = writeln!(t, "[limits]\nenabled = {}", o.limits);
        if let Some(r) = o.reserve {
            let _ = writeln!(t, "reserve = {r}");
        }
        if let Some((w, other, g)) = o.budgets {
            let _ = writeln!(
                t,
                "vault_writes_per_10s = {w}\nvault_other_per_10s = {other}\ngraph_writes_per_150s = {g}"
            );
        }
        let _ = writeln!(
            t,
            "\n[admin]\nsocket = {:?}\n\n[tls]\nextra_ca_files = [{:?}]\n\n[network]\ntimeout = \"30s\"\n[network.resolve]",
            dir.join("admin.sock").display().to_string(),
            ca.display().to_string()
        );
        for h in emu.resolve_hosts() {
            let _ = writeln!(t, "{h:?} = \"127.0.0.1\"");
        }
        let _ = writeln!(
            t,
            "\n[defaults]\nschedule = \"0 3 * * MON\"\nwindow = \"0s\"\nverify = false\n"
        );
        let identity = |t: &mut String, name: &str, tenant: &str, client: &str, secret: &str| {
            let _ = writeln!(
                t,
                "[identities.{name}]\nkind = \"client_secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\nclient_secret = \"{secret}\"\nallow_inline_secret = true\nauthority_host = \"{}\"\ngraph_base = \"{}\"\n",
                emu.authority_host(),
                emu.graph_base()
            );
        };
        identity(
            &mut t,
            "operator",
            OPERATOR_TENANT,
            OPERATOR_CLIENT,
            "operator-secret",
        );
        for j in 0..self.tenants {
            identity(
                &mut t,
                &Self::tenant_id(j),
                &Self::tenant_id(j),
                &Self::client_id(j),
                &format!("secret-{j}"),
            );
        }
        for i in 0..self.accounts {
            let (name, upn, secret) = self.account(i);
            let _ = writeln!(
                t,
                "[[accounts]]\nname = \"{name}\"\nuser = \"{upn}\"\nidentity = \"t{}\"\nvault_identity = \"operator\"\nvault = \"{}\"\nsecret = \"{secret}\"\n",
                self.tenant_of(i),
                emu.vault_url(&Self::vault_name(self.vault_of(i)))
            );
        }
        t
    }
}
