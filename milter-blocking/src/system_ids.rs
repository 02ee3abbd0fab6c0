//! User and group names to numeric ids, read from `/etc/passwd` and
//! `/etc/group` (no NSS lookup: names served only by LDAP or similar are not
//! found; give the number then).

use std::fmt;
use std::io;
use std::path::Path;

/// A user or group name that could not be turned into an id.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdLookupError {
    /// The database file could not be read.
    Read {
        /// `/etc/group` or `/etc/passwd`.
        file: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// No entry of that name.
    NotFound {
        /// `/etc/group` or `/etc/passwd`.
        file: &'static str,
        /// The name looked up.
        name: String,
    },
}

impl fmt::Display for IdLookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdLookupError::Read { file, source } => write!(f, "cannot read {file}: {source}"),
            IdLookupError::NotFound { file, name } => write!(
                f,
                "no entry {name:?} in {file} (names from other sources than the file are not \
                 looked up: give the number)"
            ),
        }
    }
}

impl std::error::Error for IdLookupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdLookupError::Read { source, .. } => Some(source),
            IdLookupError::NotFound { .. } => None,
        }
    }
}

/// The numeric id of group `name` (from `/etc/group`), e.g. for
/// [`ListenOptions::unix_group`](crate::ListenOptions::unix_group).
///
/// ```no_run
/// let postfix = milter_blocking::group_id("postfix")?;
/// # Ok::<(), milter_blocking::IdLookupError>(())
/// ```
pub fn group_id(name: &str) -> Result<u32, IdLookupError> {
    lookup("/etc/group", name)
}

/// The numeric id of user `name` (from `/etc/passwd`), e.g. for
/// [`ListenOptions::unix_owner`](crate::ListenOptions::unix_owner).
pub fn user_id(name: &str) -> Result<u32, IdLookupError> {
    lookup("/etc/passwd", name)
}

fn lookup(file: &'static str, name: &str) -> Result<u32, IdLookupError> {
    let text = std::fs::read_to_string(Path::new(file))
        .map_err(|source| IdLookupError::Read { file, source })?;
    id_in(&text, name).ok_or_else(|| IdLookupError::NotFound {
        file,
        name: name.to_string(),
    })
}

/// The third field of the line whose first field is `name`, in the
/// `name:password:id:...` format both files share.
fn id_in(text: &str, name: &str) -> Option<u32> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next()? == name).then_some(())?;
            fields.nth(1)?.trim().parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_by_exact_name() {
        let group = "# comment\nroot:x:0:\npostfix-extra:x:7:\npostfix:x:105:\npostdrop:x:106:\nbad:x:notanumber:\n";
        assert_eq!(id_in(group, "postfix"), Some(105));
        assert_eq!(id_in(group, "root"), Some(0));
        assert_eq!(id_in(group, "post"), None);
        assert_eq!(id_in(group, "bad"), None);
        let passwd = "postfix:x:102:105::/var/spool/postfix:/usr/sbin/nologin\n";
        assert_eq!(id_in(passwd, "postfix"), Some(102));
    }

    #[test]
    fn the_root_group_exists_and_an_unknown_name_says_so() {
        assert_eq!(group_id("root").unwrap(), 0);
        assert_eq!(user_id("root").unwrap(), 0);
        let e = group_id("no-such-group-here").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("no entry \"no-such-group-here\" in /etc/group"));
    }
}
