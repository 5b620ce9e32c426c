//! The files an installation needs besides the binary, generated here so they cannot drift:
//! man pages from the clap definitions (`clap_mangen`) and from the default configuration
//! (`config_man`), shell completions (`clap_complete`), and the udev rule and systemd units
//! with the paths of the layout they are installed in.
//!
//! One source, two layouts: [`SOURCE`] (`install-system`, under `/usr/local`) and
//! [`PACKAGE`] (the Debian package, `/usr`, written by the hidden `package-files` command that
//! `scripts/deb.sh` runs before `cargo deb`). The units in `systemd/` carry `@bindir@` and
//! `@docdir@` placeholders that only [`unit`] fills in.

use super::agent_cmds::{DEFAULT_CONFIG, SYSTEMD_UNIT, UDEV_RULE, UI_UNIT};
use super::Cli;
use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use std::path::{Path, PathBuf};

/// Where an installation puts things.
pub struct Layout {
    pub bin: &'static str,
    pub doc: &'static str,
    pub man: &'static str,
    pub udev_rules: &'static str,
    pub units: &'static str,
    pub bash: &'static str,
    pub zsh: &'static str,
    pub fish: &'static str,
}

/// `trayback install-system`: a source install.
pub const SOURCE: Layout = Layout {
    bin: "/usr/local/bin",
    doc: "/usr/local/share/doc/trayback",
    man: "/usr/local/share/man",
    udev_rules: "/etc/udev/rules.d",
    units: "/etc/systemd/system",
    bash: "/usr/local/share/bash-completion/completions",
    zsh: "/usr/local/share/zsh/site-functions",
    fish: "/usr/local/share/fish/vendor_completions.d",
};

/// The Debian package.
pub const PACKAGE: Layout = Layout {
    bin: "/usr/bin",
    doc: "/usr/share/doc/trayback",
    man: "/usr/share/man",
    udev_rules: "/usr/lib/udev/rules.d",
    units: "/usr/lib/systemd/system",
    bash: "/usr/share/bash-completion/completions",
    zsh: "/usr/share/zsh/vendor-completions",
    fish: "/usr/share/fish/vendor_completions.d",
};

/// A unit file from `systemd/` with the layout's paths.
pub fn unit(template: &str, layout: &Layout) -> String {
    template
        .replace("@bindir@", layout.bin)
        .replace("@docdir@", layout.doc)
}

/// Every man page: `trayback.1`, one per subcommand (`trayback-backup.1`,
/// `trayback-media-init.1`, …), and `trayback.yaml.5`; as (file name, roff).
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    fn each(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            each(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)?;
        out.push((man.get_filename(), page));
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    each(cmd, &mut out)?;
    out.push((
        "trayback.yaml.5".into(),
        super::config_man::page(DEFAULT_CONFIG).into_bytes(),
    ));
    Ok(out)
}

/// The completion script for `shell`.
pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "trayback", &mut out);
    out
}

/// Every generated file of a layout, as (absolute path, contents): man pages, completions,
/// the udev rule and the units.
pub fn generated(l: &Layout) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    use clap_complete::Shell;
    let mut files: Vec<(PathBuf, Vec<u8>)> = man_pages()?
        .into_iter()
        .map(|(name, page)| {
            let section = name.rsplit('.').next().unwrap_or("1").to_string();
            (
                Path::new(l.man).join(format!("man{section}")).join(name),
                page,
            )
        })
        .collect();
    files.push((Path::new(l.bash).join("trayback"), completion(Shell::Bash)));
    files.push((Path::new(l.zsh).join("_trayback"), completion(Shell::Zsh)));
    files.push((
        Path::new(l.fish).join("trayback.fish"),
        completion(Shell::Fish),
    ));
    files.push((
        Path::new(l.udev_rules).join("90-trayback.rules"),
        UDEV_RULE.as_bytes().to_vec(),
    ));
    for (name, template) in [
        ("trayback-agent.service", SYSTEMD_UNIT),
        ("trayback-ui.service", UI_UNIT),
    ] {
        files.push((
            Path::new(l.units).join(name),
            unit(template, l).into_bytes(),
        ));
    }
    Ok(files)
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// `trayback completions SHELL`: print the script (a package installs them already).
pub fn completions(a: CompletionsArgs) -> Result<u8> {
    use std::io::Write;
    std::io::stdout().write_all(&completion(a.shell))?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write the pages (trayback.1, trayback-*.1, trayback.yaml.5) into this directory.
    pub dir: PathBuf,
}

/// `trayback man DIR`.
pub fn man(a: ManArgs) -> Result<u8> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    for (name, page) in man_pages()? {
        let path = a.dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PackageFilesArgs {
    /// The staging root the Debian package's assets are taken from (e.g. target/package).
    pub root: PathBuf,
}

/// `trayback package-files ROOT` (hidden; `scripts/deb.sh`): the generated files of the
/// package layout under ROOT.
pub fn package_files(a: PackageFilesArgs) -> Result<u8> {
    for (path, data) in generated(&PACKAGE)? {
        let at = a.root.join(path.strip_prefix("/").unwrap_or(&path));
        std::fs::create_dir_all(at.parent().unwrap_or(&a.root))?;
        std::fs::write(&at, data).with_context(|| format!("writing {}", at.display()))?;
    }
    Ok(0)
}
