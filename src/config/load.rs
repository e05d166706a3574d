//! Reading the file and the environment into a validated [`Loaded`].

use super::include::{self, Origins};
use super::model::{Config, Problem, ResolvedAccount};
use super::validate::validate;
use std::path::{Path, PathBuf};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    /// The file could not be read or parsed as TOML (or an override applied).
    #[error("cannot read {path}: {source}")]
    Load {
        path: PathBuf,
        /// Boxed: the config crate's error is large, and every `ConfigError` would be.
        #[source]
        source: Box<::config::ConfigError>,
    },
    #[error("{} problem(s) in {path}:\n{}", .problems.len(), .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found (one for an unreadable file).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Read { detail, .. } => vec![Problem {
                key: "(file)".into(),
                message: detail.clone(),
            }],
            ConfigError::Load { source, .. } => vec![Problem {
                key: "(file)".into(),
                message: source.to_string(),
            }],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// As read.
    pub config: Config,
    /// Accounts with defaults applied, in file order.
    pub accounts: Vec<ResolvedAccount>,
    /// The file it came from.
    pub path: PathBuf,
    /// The files its `include` patterns matched, in the order they were read.
    pub includes: Vec<PathBuf>,
}

/// Reads `path` (TOML) with `KEYTURN__…` environment overrides, and validates it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(path, true)
}

/// Like [`load`]; `env = false` ignores the environment (tests).
pub fn load_with_env(path: &Path, env: bool) -> Result<Loaded, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Read {
            path: path.to_owned(),
            detail: "no such file; pass --config or create it (see config/example.toml)".into(),
        });
    }
    let source = ::config::File::from(path).format(::config::FileFormat::Toml);
    let (loaded, origins) = on_own_thread(|| load_source(source, path, env, true))?;
    warn_inline_secrets(&loaded.config, path, &origins);
    Ok(loaded)
}

/// Runs `parse` on a thread of its own (on the caller's thread if none can be started).
///
/// Parsing is the process's peak: the `config` crate's value tree of 10,000 accounts takes
/// about 40 MB, all freed once the typed configuration is read. glibc's allocator gives each
/// thread an arena of its own; parsed on the main thread, that tree would be interleaved with
/// the daemon's long-lived data in the main arena, and the holes it leaves could not go back
/// to the kernel. On its own thread it lands in another arena, whose free top glibc returns
/// whole (with the fixed trim threshold `src/main.rs` sets). Measured at 10,000 accounts:
/// idle RSS 47 → 37 MiB (`docs/benchmarks.md`).
fn on_own_thread<T: Send>(parse: impl FnOnce() -> T + Send) -> T {
    let parse = std::sync::Mutex::new(Some(parse));
    // Runs `parse` the first time it is called, and returns `None` after that.
    let run = || {
        parse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(|f| f())
    };
    let on_thread = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("keyturn-config".into())
            .spawn_scoped(s, run)
            .ok()?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    // No thread could be started: `parse` has not run yet.
    on_thread.or_else(run).expect("parse runs exactly once")
}

/// An inline client secret (`allow_inline_secret = true`, meant for demos and tests) in a
/// file its group or other users can read is readable by them too (the packaged
/// `/etc/keyturn/keyturn.toml` is 0640 for the on-call group): warned, not refused, so that
/// demos and tests keep working with emulator secrets.
fn warn_inline_secrets(config: &Config, main: &Path, origins: &Origins) {
    use std::os::unix::fs::MetadataExt;
    for (name, id) in &config.identities {
        if id.client_secret.is_some() {
            let path = origins.file_of_identity(name).unwrap_or(main);
            let Ok(mode) = std::fs::metadata(path).map(|m| m.mode() & 0o777) else {
                continue;
            };
            if mode & 0o077 == 0 {
                continue;
            }
            tracing::warn!(
                identity = %name,
                file = %path.display(),
                mode = %format!("{mode:04o}"),
                "identities.{name}.client_secret is inline in a configuration file that its group or other users can read: they can read the credential too; for a real credential use client_secret_credential (systemd LoadCredential=) or a client_secret_file at mode 0600"
            );
        }
    }
}

/// Loads and validates configuration text (the fuzz target; `origin` names it in errors).
/// Text has no folder to read included files from: an `include` is refused.
pub fn load_str(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    load_source(
        ::config::File::from_str(text, ::config::FileFormat::Toml),
        origin,
        false,
        false,
    )
    .map(|(loaded, _)| loaded)
}

/// Loads `source` (and the environment if `env`), reads the files its `include` names if
/// `follow` (else refuses them), and validates the whole.
fn load_source<S>(
    source: S,
    path: &Path,
    env: bool,
    follow: bool,
) -> Result<(Loaded, Origins), ConfigError>
where
    S: ::config::Source + Send + Sync + 'static,
{
    let mut builder = ::config::Config::builder().add_source(source);
    if env {
        builder = builder.add_source(environment());
    }
    let raw = builder.build().map_err(|source| ConfigError::Load {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    let mut problems = Vec::new();
    let mut config: Config = match serde_ignored::deserialize(raw, |p| {
        let key = p.to_string();
        problems.push(Problem {
            // An empty key (`"" = 1`) is a key too; name it visibly.
            key: if key.is_empty() { "\"\"".into() } else { key },
            message: "unknown key: check its spelling against docs/configuration.md".into(),
        })
    }) {
        Ok(c) => c,
        Err(e) => {
            // The config crate names the key at the end of its message: "… for key `a.b`".
            let text = e.to_string();
            problems.push(Problem {
                key: include::key_of_serde_error(&text),
                message: format!("{text}: fix this first; further checks need a readable file"),
            });
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
    };
    let origins = if config.include.is_empty() {
        Origins::default()
    } else if follow {
        include::read(&mut config, path, &mut problems)
    } else {
        problems.push(Problem {
            key: "include".into(),
            message: "included files are read only from a configuration file on disk (keyturn check-config --config FILE)".into(),
        });
        Origins::default()
    };
    let accounts = validate(&config, &mut problems);
    origins.relabel(&mut problems);
    if problems.is_empty() {
        let includes = origins.files.clone();
        Ok((
            Loaded {
                config,
                accounts,
                path: path.to_owned(),
                includes,
            },
            origins,
        ))
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// The `KEYTURN__SECTION__KEY` overrides (`KEYTURN__ADMIN__SOCKET` sets `admin.socket`).
fn environment() -> ::config::Environment {
    ::config::Environment::with_prefix("KEYTURN")
        .prefix_separator("__")
        .separator("__")
}

/// The admin socket that the file at `path` and its environment overrides name, without
/// validating the rest (the client commands need only the socket); `None` when the file
/// cannot be read or names none.
pub(crate) fn admin_socket(path: &Path) -> Option<PathBuf> {
    let raw = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .add_source(environment())
        .build()
        .ok()?;
    raw.get_string("admin.socket").ok().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_runs_on_a_thread_of_its_own_and_its_result_comes_back() {
        let caller = std::thread::current().id();
        let (id, name) = on_own_thread(|| {
            let me = std::thread::current();
            (me.id(), me.name().map(str::to_owned))
        });
        assert_ne!(id, caller);
        assert_eq!(name.as_deref(), Some("keyturn-config"));
    }

    #[test]
    fn a_panic_while_parsing_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| on_own_thread(|| -> u8 { panic!("parser bug") }));
        let payload = caught.expect_err("the panic is not swallowed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"parser bug"));
    }

    #[test]
    fn a_file_that_does_not_parse_keeps_the_parser_error_as_its_source() {
        let e = load_str("[daemon\n", Path::new("bad.toml")).unwrap_err();
        let ConfigError::Load { source, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(e.to_string(), format!("cannot read bad.toml: {source}"));
        let kept = std::error::Error::source(&e).expect("the parser's error is kept");
        assert!(kept.is::<Box<::config::ConfigError>>());
        assert_eq!(kept.to_string(), source.to_string());
        assert_eq!(e.problems()[0].key, "(file)");
    }
}
