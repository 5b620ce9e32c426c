//! The Debian package, built as a release is (`scripts/deb.sh`: `cargo deb` over the release
//! binary and the files `trayback package-files` generates), checked as an administrator
//! would meet it: its file list against what the binary generates, the conffile, the
//! maintainer scripts (the agent enabled and started the Debian way, udevd told to reload),
//! lintian without errors; then unpacked into a throwaway root, where the installed binary
//! runs a real backup, the installed man pages render, bash completes from the installed
//! script, and the installed unit starts the installed binary; with the packaged udev rule,
//! real udevd marks an inserted tray for the packaged unit and the agent backs it up. Last, as root on a machine
//! without trayback installed, a real `dpkg -i` (the unit enabled by deb-systemd-helper) and
//! `dpkg --purge` leave the machine as it was.

#[path = "support/lab.rs"]
mod lab;
#[path = "support/util.rs"]
mod util;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use util::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The package, built once for this test binary.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        for tool in ["cargo-deb", "dpkg-deb", "lintian", "man"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "the package test needs {tool} (scripts/setup.sh installs it)"
            );
        }
        let out = sh(&mut Command::new(repo().join("scripts/deb.sh")));
        PathBuf::from(out.lines().last().unwrap_or_default().trim())
    })
}

/// The package unpacked (`dpkg-deb -x`) into a fresh root.
fn unpacked() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("trayback-deb")
        .tempdir()
        .unwrap();
    sh(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb())
        .arg(root.path()));
    root
}

#[test]
fn contents_conffile_scripts_and_lintian() {
    let list = sh(Command::new("dpkg-deb").arg("-c").arg(deb()));
    let files: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    let mut want: Vec<String> = [
        "/usr/bin/trayback",
        "/usr/lib/udev/rules.d/90-trayback.rules",
        "/usr/lib/systemd/system/trayback-agent.service",
        "/usr/lib/systemd/system/trayback-ui.service",
        "/etc/trayback/trayback.yaml",
        "/usr/share/doc/trayback/README.md",
        "/usr/share/doc/trayback/FORMAT.md",
        "/usr/share/doc/trayback/copyright",
        "/usr/share/doc/trayback/changelog.Debian.gz",
        "/usr/share/bash-completion/completions/trayback",
        "/usr/share/zsh/vendor-completions/_trayback",
        "/usr/share/fish/vendor_completions.d/trayback.fish",
    ]
    .map(String::from)
    .to_vec();
    // One page per page the binary generates (trayback.1, every subcommand's, the config's).
    let pages = tempfile::tempdir().unwrap();
    sh(Command::new(bin()).arg("man").arg(pages.path()));
    let mut names: Vec<String> = fs::read_dir(pages.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"trayback.1".to_string()), "{names:?}");
    assert!(
        names.contains(&"trayback-backup.1".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"trayback-media-init.1".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"trayback.yaml.5".to_string()), "{names:?}");
    for n in &names {
        let section = n.rsplit('.').next().unwrap();
        want.push(format!("/usr/share/man/man{section}/{n}.gz"));
    }
    // And every file the binary generates for the package layout (the same files
    // `install-system` installs from source): a file added there and forgotten in
    // Cargo.toml's assets fails here.
    let layout = tempfile::tempdir().unwrap();
    sh(Command::new(bin()).arg("package-files").arg(layout.path()));
    for f in files_below(layout.path()) {
        let rel = f.strip_prefix(layout.path()).unwrap().to_string_lossy();
        let gz = if rel.starts_with("usr/share/man/") {
            ".gz"
        } else {
            ""
        };
        want.push(format!("/{rel}{gz}"));
    }
    for w in &want {
        assert!(
            files.contains(&w.as_str()),
            "{w} is not in the package:\n{list}"
        );
    }

    let control = tempfile::tempdir().unwrap();
    sh(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb())
        .arg(control.path()));
    let read = |f: &str| fs::read_to_string(control.path().join(f)).unwrap_or_default();
    assert_eq!(read("conffiles").trim(), "/etc/trayback/trayback.yaml");
    let postinst = read("postinst");
    for needed in [
        "deb-systemd-helper enable trayback-agent.service",
        "deb-systemd-invoke $_dh_action trayback-agent.service",
        "udevadm control --reload-rules",
    ] {
        assert!(
            postinst.contains(needed),
            "postinst lacks {needed:?}:\n{postinst}"
        );
    }
    // The web interface is installed, never enabled or started by the package.
    assert!(
        !postinst.contains("deb-systemd-invoke $_dh_action trayback-ui"),
        "{postinst}"
    );
    assert!(read("prerm").contains("deb-systemd-invoke stop trayback-agent.service"));
    assert!(read("postrm").contains("deb-systemd-helper purge trayback-agent.service"));
    for script in ["postinst", "prerm", "postrm"] {
        sh(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
    }
    let depends = read("control");
    assert!(
        depends.contains("udev") && depends.contains("systemd"),
        "{depends}"
    );

    // lintian: no errors (warnings are printed for the record).
    let out = Command::new("lintian").arg(deb()).output().unwrap();
    let report = text(&out.stdout);
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{report}");
}

#[test]
fn unpacked_package_works() {
    let root = unpacked();
    let r = root.path();
    let installed = r.join("usr/bin/trayback");

    // The unit starts the packaged binary and points at packaged docs; the rule is the one
    // the agent tests exercise with real udevd events.
    let unit = fs::read_to_string(r.join("usr/lib/systemd/system/trayback-agent.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/trayback agent\n"),
        "{unit}"
    );
    assert!(
        unit.contains("Documentation=file:///usr/share/doc/trayback/README.md\n"),
        "{unit}"
    );
    assert!(
        !unit.contains('@'),
        "a placeholder left in the unit:\n{unit}"
    );
    let ui = fs::read_to_string(r.join("usr/lib/systemd/system/trayback-ui.service")).unwrap();
    assert!(ui.contains("ExecStart=/usr/bin/trayback ui\n"), "{ui}");
    assert_eq!(
        fs::read_to_string(r.join("usr/lib/udev/rules.d/90-trayback.rules")).unwrap(),
        fs::read_to_string(repo().join("udev-rules/90-trayback.rules")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(r.join("etc/trayback/trayback.yaml")).unwrap(),
        fs::read_to_string(repo().join("config/trayback.yaml")).unwrap()
    );
    if Path::new("/usr/bin/systemd-analyze").exists() {
        // The unit as systemd reads it, with ExecStart pointing into the unpacked root.
        let dir = tempfile::tempdir().unwrap();
        let u = dir.path().join("trayback-agent.service");
        fs::write(
            &u,
            unit.replace("/usr/bin/trayback", installed.to_str().unwrap()),
        )
        .unwrap();
        sh(Command::new("systemd-analyze").arg("verify").arg(&u));
    }

    // The installed binary runs: a demo backs up, verifies and restores a real directory.
    let version = sh(Command::new(&installed).arg("--version"));
    assert!(version.starts_with("trayback "), "{version}");
    let src = root.path().join("demo-src");
    write(&src.join("f.txt"), b"from the package");
    let work = root.path().join("demo-work");
    let demo = Command::new(&installed)
        .args(["demo", "--source"])
        .arg(&src)
        .arg("--workdir")
        .arg(&work)
        .env("TRAYBACK_STATE_DIR", root.path().join("state"))
        .output()
        .unwrap();
    assert!(
        demo.status.success(),
        "demo: {}{}",
        text(&demo.stdout),
        text(&demo.stderr)
    );

    // Every installed man page renders without a warning; trayback(1) lists the commands,
    // trayback.yaml(5) the keys.
    for sect in ["man1", "man5"] {
        for e in fs::read_dir(r.join("usr/share/man").join(sect)).unwrap() {
            let page = e.unwrap().path();
            let out = Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&page)
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(out.status.success(), "man -l {}", page.display());
            assert!(
                text(&out.stderr).trim().is_empty(),
                "man -l {}: {}",
                page.display(),
                text(&out.stderr)
            );
            // Plain text: a backspace overstrikes (bold) the character before it.
            let mut shown = String::new();
            for c in text(&out.stdout).chars() {
                if c == '\u{8}' {
                    shown.pop();
                } else {
                    shown.push(c);
                }
            }
            if page.ends_with("trayback.1.gz") {
                assert!(
                    shown.contains("install-system") && shown.contains("status"),
                    "{shown}"
                );
            }
            if page.ends_with("trayback.yaml.5.gz") {
                assert!(shown.contains("agent.metrics_file"), "{shown}");
            }
        }
    }

    // bash completes subcommands and options from the installed script.
    let script = r.join("usr/share/bash-completion/completions/trayback");
    assert_eq!(
        fs::read(&script).unwrap(),
        Command::new(&installed)
            .args(["completions", "bash"])
            .output()
            .unwrap()
            .stdout
    );
    let complete = |words: &str| {
        sh(Command::new("bash").arg("-c").arg(format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
             _trayback trayback \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        )))
    };
    let subs = complete("trayback st");
    assert_eq!(subs.lines().collect::<Vec<_>>(), ["status"], "{subs}");
    let opts = complete("trayback status --");
    assert!(opts.lines().any(|l| l == "--format"), "{opts}");
    let formats = complete("trayback status --format ''");
    assert!(
        formats.split_whitespace().any(|w| w == "openmetrics"),
        "{formats}"
    );
}

#[test]
fn the_packaged_rule_has_udev_start_the_agent_on_an_inserted_tray() {
    let root = unpacked();
    let mut lab = lab::Lab::new("");
    // The lab's udevd now reads the rule as the package installs it.
    fs::copy(
        root.path().join("usr/lib/udev/rules.d/90-trayback.rules"),
        "/run/udev/rules.d/90-trayback.rules",
    )
    .unwrap();
    sh(Command::new("udevadm").args(["control", "--reload"]));
    write(&lab.src.join("a.txt"), b"inserted");
    let label = lab.label("P");
    let img = lab.image("p.img", &label, "96M");
    let dev = lab.insert(&img);
    let props = sh(Command::new("udevadm").args(["info", "--query=property", &dev]));
    assert!(
        props.lines().any(|l| l == "TRAYBACK_CANDIDATE=1")
            && props
                .lines()
                .any(|l| l.starts_with("SYSTEMD_WANTS=") && l.contains("trayback-agent.service")),
        "udev did not mark the tray for the packaged unit:\n{props}"
    );
    lab.wait_first_monthly(&label);
}

#[test]
fn real_install_enables_the_agent_and_purge_leaves_nothing() {
    if !is_root() {
        panic!("this test needs root (dpkg -i); run it as root, as CI does");
    }
    // Never disturb a machine that has trayback (or its config) already.
    let installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "trayback"])
        .output()
        .unwrap();
    if text(&installed.stdout).contains("installed")
        || Path::new("/usr/bin/trayback").exists()
        || Path::new("/etc/trayback").exists()
    {
        eprintln!("note: trayback is already on this machine; the real install was not tried");
        return;
    }
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/trayback-agent.service");
    let out = Command::new("dpkg")
        .args(["-i", "--force-confdef", "--force-confold"])
        .arg(deb())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(
            out.status.success(),
            "dpkg -i: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // Enabled the Debian way: deb-systemd-helper's symlink, to the packaged unit (by
        // its /lib or /usr/lib name: one directory on a merged-/usr system).
        assert_eq!(
            fs::canonicalize(wants).unwrap(),
            fs::canonicalize("/usr/lib/systemd/system/trayback-agent.service").unwrap()
        );
        let v = sh(Command::new("/usr/bin/trayback").arg("--version"));
        assert!(v.starts_with("trayback "));
        // `man trayback` finds the page where man looks.
        let page = sh(Command::new("man").args(["-w", "trayback"]));
        assert_eq!(page.trim(), "/usr/share/man/man1/trayback.1.gz");
        let mode = fs::metadata("/etc/trayback/trayback.yaml").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    });
    let purge = Command::new("dpkg")
        .args(["--purge", "trayback"])
        .output()
        .unwrap();
    assert!(
        purge.status.success(),
        "dpkg --purge: {}",
        text(&purge.stderr)
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(!Path::new("/usr/bin/trayback").exists());
    assert!(
        !Path::new("/etc/trayback").exists(),
        "purge left /etc/trayback"
    );
    assert!(
        fs::symlink_metadata(wants).is_err(),
        "purge left the enable symlink"
    );
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out
}
