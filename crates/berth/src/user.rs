//! `berth user add|rm`: edits an htpasswd file so nobody needs Apache's tools. Entries are
//! bcrypt (`$2y$`, cost 10) as `htpasswd -B` writes them; other lines (comments, other users)
//! are kept as they are. The file is replaced in one rename, so a running server reading it
//! (it looks again every second) sees the old file or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::cli::{UserAction, UserArgs};
use crate::config::FileConfig;

/// bcrypt reads only this many bytes of a password; a longer one would be cut silently.
const BCRYPT_MAX: usize = 72;

/// `berth user …`
pub fn run(a: UserArgs) -> anyhow::Result<()> {
    let path = file(&a)?;
    match a.action {
        UserAction::Add { name, password_stdin } => {
            check_name(&name)?;
            let password = new_password(&name, password_stdin)?;
            let entry = berth_server::auth::htpasswd::hash(&password).map_err(|e| anyhow!("hashing: {e}"))?;
            let text = read(&path)?;
            let (text, replaced) = set(&text, &name, Some(&entry));
            write(&path, &text)?;
            println!("{} {name} in {}", if replaced { "changed the password of" } else { "added" }, path.display());
        }
        UserAction::Rm { name } => {
            let text = read(&path)?;
            let (text, found) = set(&text, &name, None);
            if !found {
                bail!("{name} is not in {}", path.display());
            }
            write(&path, &text)?;
            println!("removed {name} from {}", path.display());
        }
    }
    Ok(())
}

/// `--file`, else `auth.htpasswd.path` of the config.
fn file(a: &UserArgs) -> anyhow::Result<PathBuf> {
    if let Some(f) = &a.file {
        return Ok(f.clone());
    }
    let Some(config) = &a.config else {
        bail!("which htpasswd file? give --file FILE, or --config with auth.htpasswd.path");
    };
    let c = FileConfig::load(config)?;
    c.auth
        .htpasswd
        .and_then(|h| h.path)
        .ok_or_else(|| anyhow!("{} has no auth.htpasswd.path; give --file FILE", config.display()))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.contains(':') || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("{name:?} cannot be a user name: it must be non-empty, without ':' or spaces");
    }
    Ok(())
}

/// The new password: stdin's first line, or asked for twice on the terminal.
fn new_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    let p = crate::http::password(&format!("New password for {name}: "), from_stdin)?;
    if !from_stdin && crate::http::password("Again: ", false)? != p {
        bail!("the passwords differ; nothing changed");
    }
    if p.is_empty() {
        bail!("the password is empty; nothing changed");
    }
    if p.len() > BCRYPT_MAX {
        bail!("the password is longer than {BCRYPT_MAX} bytes, which bcrypt would cut short; nothing changed");
    }
    Ok(p)
}

fn read(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `text` with `name`'s entry set to `entry` (or removed, with `None`); whether it was there.
fn set(text: &str, name: &str, entry: Option<&str>) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + 80);
    let mut found = false;
    for line in text.lines() {
        if line.split_once(':').is_some_and(|(u, _)| u == name) {
            if !found && let Some(e) = entry {
                out.push_str(&format!("{name}:{e}\n"));
            }
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found && let Some(e) = entry {
        out.push_str(&format!("{name}:{e}\n"));
    }
    (out, found)
}

/// Replaces the file in one rename, keeping its permissions (0600 for a new file).
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o600);
    let tmp = dir.join(format!(
        ".{}.berth-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("htpasswd"),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_set_replaced_and_removed_keeping_other_lines() {
        let text = "# users\nalice:$2y$10$a\nbob:$2y$10$b\n";
        assert_eq!(set(text, "carol", Some("$2y$10$c")), (format!("{text}carol:$2y$10$c\n"), false));
        assert_eq!(set(text, "alice", Some("$2y$10$z")), ("# users\nalice:$2y$10$z\nbob:$2y$10$b\n".into(), true));
        assert_eq!(set(text, "bob", None), ("# users\nalice:$2y$10$a\n".into(), true));
        assert_eq!(set(text, "al", None), (text.into(), false), "a prefix of a name is another name");
        assert_eq!(set("", "a", Some("h")), ("a:h\n".into(), false));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-bot.1").is_ok());
        for bad in ["", "a:b", "a b", "a\tb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_file_is_replaced_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("htpasswd");
        write(&p, "a:h\n").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600, "new files are private");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, "b:h\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b:h\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
