//! The `keyturn` binary: everything lives in the library; see `keyturn::cli`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(keyturn::cli::main());
}
