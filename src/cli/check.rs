//! `keyturn check-config`: every problem with its key, or a summary of the accounts.

use crate::config::{self, EXIT_CONFIG};
use std::path::Path;

pub(super) fn check_config(path: &Path) -> i32 {
    match config::load(path) {
        Ok(loaded) => {
            println!(
                "{}: OK, {} account(s), {} identity(ies){}",
                path.display(),
                loaded.accounts.len(),
                loaded.config.identities.len(),
                match loaded.includes.len() {
                    0 => String::new(),
                    n => format!(", {n} included file(s)"),
                }
            );
            for (key, message) in
                config::expiry_warnings(&loaded.config, time::OffsetDateTime::now_utc())
            {
                println!("  warning: {key}: {message}");
            }
            for (key, message) in config::provision_warnings(&loaded.config) {
                println!("  warning: {key}: {message}");
            }
            for a in &loaded.accounts {
                println!(
                    "  {:<24} {} in {} ({}) schedule {:?}",
                    a.name,
                    a.secret,
                    a.vault,
                    a.user,
                    a.schedule.pattern()
                );
            }
            0
        }
        Err(e) => {
            let problems = e.problems();
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  {}: {}", p.key, p.message);
            }
            EXIT_CONFIG
        }
    }
}
