//! Man pages and shell completions for packaging.
//!
//! Each binary has a hidden `assets DIR` subcommand calling [`write`] (carpctl)
//! or [`write_daemon`] (carpd), so the pages are made from the real clap
//! definitions and settings table; `scripts/test-package.sh` runs them before
//! `cargo deb`, which gzips the pages.

use std::fs;
use std::io;
use std::path::Path;

use clap_complete::Shell;

/// Write `NAME.1` (plus `NAME-SUB.1` per subcommand) and bash, zsh and fish
/// completions for `cmd` into `dir`.
pub fn write(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    man_pages(&cmd, &name, dir)?;
    completions(&mut cmd, &name, dir)
}

/// Write carpd's `carpd.8` and `carpd.toml.5` (see [`crate::man`]) and the
/// completions for `cmd` into `dir`.
pub fn write_daemon(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    fs::write(dir.join(format!("{name}.8")), crate::man::carpd_page(&cmd))?;
    fs::write(
        dir.join(format!("{name}.toml.5")),
        crate::man::carpd_toml_page(),
    )?;
    completions(&mut cmd, &name, dir)
}

fn completions(cmd: &mut clap::Command, name: &str, dir: &Path) -> io::Result<()> {
    for (shell, file) in [
        (Shell::Bash, name.to_string()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = fs::File::create(dir.join(file))?;
        clap_complete::generate(shell, cmd, name, &mut out);
    }
    Ok(())
}

fn man_pages(cmd: &clap::Command, name: &str, dir: &Path) -> io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    fs::write(dir.join(format!("{name}.1")), page)?;
    let pages = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in pages {
        let sub_name = format!("{name}-{}", sub.get_name());
        let sub = sub.clone().display_name(sub_name.clone());
        man_pages(&sub, &sub_name, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn pages_and_completions_for_every_visible_subcommand() {
        let cmd = clap::Command::new("tool")
            .about("A tool.")
            .subcommand(clap::Command::new("go").about("Go."))
            .subcommand(clap::Command::new("secret").hide(true));
        let dir = tempfile::tempdir().unwrap();
        write(cmd, dir.path()).unwrap();
        for f in ["tool.1", "tool-go.1", "tool", "_tool", "tool.fish"] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        for f in ["tool-secret.1", "tool-help.1"] {
            assert!(!dir.path().join(f).exists(), "{f} written");
        }
        let page = fs::read_to_string(dir.path().join("tool-go.1")).unwrap();
        assert!(page.contains("tool\\-go"), "{page}");
    }
}
