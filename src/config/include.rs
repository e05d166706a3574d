//! `include = ["tenants.d/*.toml"]`: further files that hold identities and accounts (an
//! MSP's one file per customer tenant), read after the main file and merged into it; every
//! problem in them is named with the included file's path and its key there.
//!
//! Each file is read on its own through the `config` crate (not added as one more source of
//! the main file's builder): merged sources would replace one file's `[[accounts]]` array by
//! the next one's, and would lose which file a key came from.

use super::model::{AccountConfig, Config, IdentityConfig, Problem};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What an included file may hold: identities and accounts, nothing else (the daemon's
/// settings, `[defaults]` and further `include`s belong in the main file).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IncludedFile {
    identities: BTreeMap<String, IdentityConfig>,
    accounts: Vec<AccountConfig>,
}

/// Where the included identities and accounts came from, to name the file in problems.
#[derive(Debug, Default)]
pub(super) struct Origins {
    /// The included files, in the order they were read.
    pub(super) files: Vec<PathBuf>,
    /// The index in `config.accounts` of the first included account.
    first_account: usize,
    /// Each included account (from `first_account` on): its file (in `files`) and its
    /// index in that file's `[[accounts]]`.
    accounts: Vec<(usize, usize)>,
    /// Each included identity's file (in `files`).
    identities: BTreeMap<String, usize>,
}

/// The key a serde error names at its end ("… for key `a.b`"), else `(structure)`.
pub(super) fn key_of_serde_error(text: &str) -> String {
    text.rsplit_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(k, _)| k.to_owned())
        .unwrap_or_else(|| "(structure)".into())
}

/// Reads the files `config.include` names (relative to `main`'s folder) into `config`:
/// their identities into `config.identities`, their accounts after the main file's. Every
/// problem goes to `problems`, keyed with the file's path.
pub(super) fn read(config: &mut Config, main: &Path, problems: &mut Vec<Problem>) -> Origins {
    let mut origins = Origins {
        first_account: config.accounts.len(),
        ..Origins::default()
    };
    let dir = main.parent().unwrap_or(Path::new(""));
    let main_real = std::fs::canonicalize(main).ok();
    let mut seen = BTreeSet::new();
    let mut files = Vec::new();
    for (i, pattern) in config.include.iter().enumerate() {
        let key = format!("include[{i}]");
        let mut problem = |message: String| {
            problems.push(Problem {
                key: key.clone(),
                message,
            })
        };
        if pattern.is_empty() {
            problem("is empty; give a file or a glob pattern such as \"tenants.d/*.toml\" (relative to this file's folder)".into());
            continue;
        }
        let full = dir.join(pattern);
        let Some(full_text) = full.to_str() else {
            problem(format!("{} is not valid UTF-8", full.display()));
            continue;
        };
        // Hidden files (an editor's `.#acme.toml` lock, `.acme.toml.swp`) are not matched by
        // `*`, as in a shell.
        let options = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        let entries = match glob::glob_with(full_text, options) {
            Ok(entries) => entries,
            Err(e) => {
                problem(format!(
                    "{pattern:?} is not a glob pattern ({e}); e.g. \"tenants.d/*.toml\""
                ));
                continue;
            }
        };
        let mut matched = 0;
        for entry in entries {
            match entry {
                Ok(path) if path.is_dir() => {}
                Ok(path) => {
                    matched += 1;
                    // The main file matched by a pattern such as "*.toml" is not read twice.
                    let real = std::fs::canonicalize(&path).ok();
                    if real.is_some() && real == main_real {
                        continue;
                    }
                    if seen.insert(real.unwrap_or_else(|| path.clone())) {
                        files.push(path);
                    }
                }
                Err(e) => problem(format!(
                    "cannot read {}: {}; check the folder's permissions",
                    e.path().display(),
                    e.error()
                )),
            }
        }
        let literal = !pattern.contains(['*', '?', '[']);
        if literal && matched == 0 {
            problem(format!(
                "{} does not exist (a pattern without *, ? or [ names one file, which must exist; a pattern such as \"tenants.d/*.toml\" may match none)",
                full.display()
            ));
        }
    }
    for path in files {
        let index = origins.files.len();
        origins.files.push(path.clone());
        let Some(file) = read_one(&path, main, problems) else {
            continue;
        };
        for (name, identity) in file.identities {
            if config.identities.contains_key(&name) {
                let other = origins
                    .identities
                    .get(&name)
                    .and_then(|i| origins.files.get(*i))
                    .unwrap_or(&main.to_path_buf())
                    .display()
                    .to_string();
                problems.push(Problem {
                    key: format!("{}: identities.{name}", path.display()),
                    message: format!("the identity {name:?} is defined in {other} too: an identity's name must be unique across the main file and its includes; rename one of them (and the accounts that use it)"),
                });
                continue;
            }
            config.identities.insert(name.clone(), identity);
            origins.identities.insert(name, index);
        }
        for (i, account) in file.accounts.into_iter().enumerate() {
            config.accounts.push(account);
            origins.accounts.push((index, i));
        }
    }
    origins
}

/// One included file, or `None` with its problems in `problems`.
fn read_one(path: &Path, main: &Path, problems: &mut Vec<Problem>) -> Option<IncludedFile> {
    let at = |key: &str| format!("{}: {key}", path.display());
    let raw = ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .build();
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(Problem {
                key: at("(file)"),
                message: format!("cannot read it: {e}"),
            });
            return None;
        }
    };
    let mut unknown = Vec::new();
    match serde_ignored::deserialize(raw, |p| unknown.push(p.to_string())) {
        Ok(file) => {
            for key in unknown {
                let message = if key.starts_with("identities.") || key.starts_with("accounts") {
                    "unknown key: check its spelling against docs/configuration.md".to_owned()
                } else {
                    format!("an included file holds only [identities.NAME] tables and [[accounts]]; put other settings in the main file, {}", main.display())
                };
                problems.push(Problem {
                    key: at(&key),
                    message,
                });
            }
            Some(file)
        }
        Err(e) => {
            let text = e.to_string();
            problems.push(Problem {
                key: at(&key_of_serde_error(&text)),
                message: format!("{text}: fix this first; the rest of this file is not checked"),
            });
            None
        }
    }
}

impl Origins {
    /// The included file an identity came from; `None` for the main file's.
    pub(super) fn file_of_identity(&self, name: &str) -> Option<&Path> {
        self.identities
            .get(name)
            .and_then(|i| self.files.get(*i))
            .map(PathBuf::as_path)
    }

    /// Renames the problems' keys, and the accounts their messages name, that came from an
    /// included file: `accounts[1042].user` becomes `…/tenants.d/acme.toml: accounts[0].user`.
    pub(super) fn relabel(&self, problems: &mut [Problem]) {
        if self.files.is_empty() {
            return;
        }
        for p in problems {
            p.key = self.key(&p.key);
            p.message = self.accounts_in(&p.message);
        }
    }

    fn key(&self, key: &str) -> String {
        if key.starts_with("accounts[") {
            return self.accounts_in(key);
        }
        if let Some(rest) = key.strip_prefix("identities.") {
            let found = self.identities.iter().find(|(name, _)| {
                rest.strip_prefix(name.as_str())
                    .is_some_and(|after| after.is_empty() || after.starts_with('.'))
            });
            if let Some(path) = found.and_then(|(_, i)| self.files.get(*i)) {
                return format!("{}: {key}", path.display());
            }
        }
        key.to_owned()
    }

    /// `text` with each `accounts[N]` of an included account named by its file and index.
    fn accounts_in(&self, text: &str) -> String {
        const OPEN: &str = "accounts[";
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find(OPEN) {
            let (before, after) = rest.split_at(at);
            out.push_str(before);
            let digits = &after[OPEN.len()..];
            let end = digits.find(']');
            let place = end
                .and_then(|end| digits[..end].parse::<usize>().ok())
                .and_then(|n| n.checked_sub(self.first_account))
                .and_then(|n| self.accounts.get(n))
                .and_then(|(file, i)| self.files.get(*file).map(|f| (f, i)));
            match (place, end) {
                (Some((file, i)), Some(end)) => {
                    out.push_str(&format!("{}: accounts[{i}]", file.display()));
                    rest = &digits[end + 1..];
                }
                _ => {
                    out.push_str(OPEN);
                    rest = digits;
                }
            }
        }
        out.push_str(rest);
        out
    }
}
