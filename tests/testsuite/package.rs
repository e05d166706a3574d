//! The Debian package (issue 18), as `cargo deb` builds it from `[package.metadata.deb]`:
//! `.ci/run` builds it once (a release build without the `demo` feature) into
//! `<target>/debian/`, and these tests read it with `dpkg-deb` and `lintian`. Without a
//! package, with one older than the repository files it packages (build it again with
//! `cargo deb -p keyturn`), or without lintian, the tests say SKIPPED, except under
//! `CI=true`, where they fail.

use crate::ops::{read, required_tool};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target folder this test binary was built in (`<target>/debug/deps/testsuite-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("the test binary sits in <target>/<profile>/deps")
        .to_path_buf()
}

/// The package `cargo deb` built for this version, if any.
fn package() -> Option<PathBuf> {
    let dir = target_dir().join("debian");
    let prefix = format!("keyturn_{}-1_", env!("CARGO_PKG_VERSION"));
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
    });
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let Some(deb) = found else {
        assert!(
            !ci,
            "no {prefix}*.deb in {}: .ci/run builds it with cargo deb",
            dir.display()
        );
        eprintln!(
            "SKIPPED: no {prefix}*.deb in {} (build it with `cargo deb -p keyturn`; .ci/run does)",
            dir.display()
        );
        return None;
    };
    // A package left from an older tree (a developer's target folder) is skipped, saying so;
    // under CI, where .ci/run has just built it, it fails.
    let data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .output()
        .expect("dpkg-deb runs")
        .stdout;
    let stale: Vec<&str> = PACKAGED
        .iter()
        .filter(|(path, source)| tar_file(&data, path).as_deref() != Some(read(source).as_bytes()))
        .map(|(_, source)| *source)
        .collect();
    if !stale.is_empty() {
        assert!(!ci, "{} is older than {stale:?}", deb.display());
        eprintln!(
            "SKIPPED: {} is older than {stale:?} (build it again with `cargo deb -p keyturn`)",
            deb.display()
        );
        return None;
    }
    Some(deb)
}

/// The files the package takes from the repository as they are: (path, source).
const PACKAGED: &[(&str, &str)] = &[
    (
        "/usr/lib/systemd/system/keyturn.service",
        "systemd/keyturn.service",
    ),
    (
        "/usr/lib/sysusers.d/keyturn.conf",
        "systemd/keyturn.sysusers",
    ),
    (
        "/usr/lib/tmpfiles.d/keyturn.conf",
        "systemd/keyturn.tmpfiles",
    ),
    ("/etc/keyturn/keyturn.toml", "config/example.toml"),
    (
        "/usr/lib/systemd/system/keyturn.service.d/packaged-binary.conf",
        "deploy/debian/packaged-binary.conf",
    ),
];

/// The contents of `path` in an uncompressed tar archive (the package's data), if there.
fn tar_file(tar: &[u8], path: &str) -> Option<Vec<u8>> {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|b| *b == 0) {
            return None;
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &header[r];
            let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let name = format!("{}{}", field(345..500), field(0..100));
        let size = usize::from_str_radix(field(124..136).trim(), 8).unwrap_or(0);
        let body = at + 512;
        if name.trim_start_matches('.') == path {
            return tar.get(body..body + size).map(<[u8]>::to_vec);
        }
        at = body + size.div_ceil(512) * 512;
    }
    None
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb runs");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package's files as `dpkg-deb -c` lists them: (mode, owner, path without the `.`).
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    dpkg_deb(&["-c"], deb)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_owned(),
                f[1].to_owned(),
                f[5].trim_start_matches('.').to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_debian_package_holds_the_service_and_starts_nothing() {
    let Some(deb) = package() else { return };

    // The control file.
    let info = dpkg_deb(&["-I"], &deb);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {name} in\n{info}"))
    };
    assert_eq!(field("Package"), "keyturn");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Section"), "admin");
    assert!(
        field("Depends").split(", ").any(|d| d == "systemd"),
        "systemd-sysusers and the unit need systemd: {}",
        field("Depends")
    );

    // The files, where a Debian system looks for them, with their modes.
    let files = contents(&deb);
    let entry = |path: &str| {
        files
            .iter()
            .find(|(_, _, p)| p == path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {files:#?}"))
    };
    for (path, mode) in [
        ("/usr/bin/keyturn", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/keyturn.service", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system/keyturn.service.d/packaged-binary.conf",
            "-rw-r--r--",
        ),
        ("/usr/lib/sysusers.d/keyturn.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/keyturn.conf", "-rw-r--r--"),
        // Group keyturn is given by the tmpfiles line at configure; no one else reads it.
        ("/etc/keyturn/keyturn.toml", "-rw-r-----"),
        ("/usr/share/doc/keyturn/copyright", "-rw-r--r--"),
        ("/usr/share/doc/keyturn/deploy.md", "-rw-r--r--"),
        (
            "/usr/share/doc/keyturn/examples/keyturn-rules.yaml",
            "-rw-r--r--",
        ),
    ] {
        let (m, owner, _) = entry(path);
        assert_eq!(m, mode, "{path}");
        assert!(owner == "root/root" || owner == "0/0", "{path}: {owner}");
    }
    assert!(
        !files.iter().any(|(_, _, p)| p.starts_with("/usr/local")),
        "a package never installs into /usr/local"
    );

    // The example configuration is a conffile: dpkg keeps the administrator's edits.
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control");
    let out = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&control)
        .output()
        .unwrap();
    assert!(out.status.success());
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    assert!(
        conffiles.lines().any(|l| l == "/etc/keyturn/keyturn.toml"),
        "conffiles: {conffiles:?}"
    );

    // The files are the repository's, the unit's ExecStart pointed at /usr/bin by the drop-in.
    let root = dir.path().join("root");
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let packaged = |p: &str| {
        std::fs::read_to_string(root.join(p.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    for (path, source) in PACKAGED {
        assert!(
            packaged(path) == read(source),
            "{path} differs from {source}"
        );
    }
    let drop_in = packaged("/usr/lib/systemd/system/keyturn.service.d/packaged-binary.conf");
    let exec: Vec<&str> = drop_in
        .lines()
        .filter(|l| l.starts_with("ExecStart="))
        .collect();
    assert_eq!(
        exec,
        [
            "ExecStart=",
            "ExecStart=/usr/bin/keyturn run --config /etc/keyturn/keyturn.toml"
        ]
    );

    // The production build: it runs, and has no `demo` (so no embedded emulator).
    let bin = root.join("usr/bin/keyturn");
    let help = Command::new(&bin).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("check-config"), "{help}");
    let demo = Command::new(&bin)
        .args(["demo", "--help"])
        .output()
        .unwrap();
    assert!(
        !demo.status.success(),
        "the packaged binary has the demo: {}",
        String::from_utf8_lossy(&demo.stdout)
    );

    // Maintainer scripts: users at configure, folders where systemd runs, never a start or
    // an enable of a service whose configuration still holds placeholders. (An enable is
    // only restored on upgrade where the administrator had enabled it: `was-enabled`.)
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("a postinst");
    assert!(
        postinst.contains("systemd-sysusers") && postinst.contains("keyturn.conf"),
        "{postinst}"
    );
    assert!(
        postinst.contains("systemd-tmpfiles --create keyturn.conf"),
        "{postinst}"
    );
    let mut scripts = postinst.clone();
    for s in ["preinst", "prerm", "postrm"] {
        scripts.push_str(&std::fs::read_to_string(control.join(s)).unwrap_or_default());
    }
    for line in scripts.lines().map(str::trim) {
        assert!(
            !(line.contains("deb-systemd-invoke") && line.contains("start"))
                || line.contains("try-restart"),
            "a maintainer script starts the service: {line}"
        );
        assert!(
            !line.contains("systemctl enable") && !line.contains("systemctl start"),
            "{line}"
        );
    }
    for (i, line) in postinst.lines().enumerate() {
        if line.contains("deb-systemd-helper enable") {
            let before: Vec<&str> = postinst.lines().take(i).collect();
            assert!(
                before
                    .iter()
                    .rev()
                    .take(3)
                    .any(|l| l.contains("was-enabled")),
                "postinst enables the unit unconditionally:\n{postinst}"
            );
        }
    }
}

/// lintian finds no error or warning; each tag the package overrides is explained in
/// deploy/debian/lintian-overrides (installed as lintian expects it).
#[test]
fn the_debian_package_passes_lintian() {
    let Some(deb) = package() else { return };
    if !required_tool("lintian", "lintian") {
        return;
    }
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
        .arg(&deb)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "lintian:\n{report}");
    eprintln!("lintian:\n{report}");
    // Every override is explained by the comment above it.
    let overrides = read("deploy/debian/lintian-overrides");
    let mut explained = false;
    for line in overrides.lines() {
        if line.starts_with('#') {
            explained = true;
        } else if !line.trim().is_empty() {
            assert!(explained, "override without a reason: {line}");
            explained = false;
        }
    }
}
