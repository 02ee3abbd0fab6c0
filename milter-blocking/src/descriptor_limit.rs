//! The process's descriptor limit against what the configured maximum of
//! connections needs, read from `/proc/self/limits` (no system call, no
//! unsafe code).

/// Descriptors the server needs besides one per connection: listeners,
/// standard streams, the logger's, a margin for the milter's own files.
pub(crate) const DESCRIPTOR_MARGIN: u64 = 32;

/// The soft limit of open files (`RLIMIT_NOFILE`), if it can be read.
pub(crate) fn soft_limit() -> Option<u64> {
    soft_limit_in(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft "Max open files" limit in the text of `/proc/self/limits`;
/// `None` when unlimited or absent.
fn soft_limit_in(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The warning to log at start when `connections` (each holding one
/// descriptor) cannot fit under the soft limit; `None` when they fit.
pub(crate) fn check(connections: usize, soft: Option<u64>) -> Option<String> {
    let soft = soft?;
    let needed = connections as u64 + DESCRIPTOR_MARGIN;
    (needed > soft).then(|| {
        format!(
            "up to {connections} connections (max_connections plus queue) need about {needed} \
             descriptors, but the soft limit of open files is {soft}: connections beyond \
             about {} will fail to be accepted; raise the limit (systemd: LimitNOFILE=, \
             shell: ulimit -n) or lower max_connections",
            soft.saturating_sub(DESCRIPTOR_MARGIN)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str =
        "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max processes             63704                63704                processes \n\
        Max open files            1024                 524288               files     \n";

    #[test]
    fn reads_the_soft_limit() {
        assert_eq!(soft_limit_in(LIMITS), Some(1024));
        assert_eq!(
            soft_limit_in(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
        assert_eq!(soft_limit_in(""), None);
        assert!(soft_limit().is_some(), "this process's limit");
    }

    #[test]
    fn warns_only_when_the_connections_do_not_fit() {
        // systemd's default soft limit and the default 1024 + 64 connections.
        let line = check(1024 + 64, Some(1024)).unwrap();
        assert!(line.contains("need about 1120 descriptors"), "{line}");
        assert!(line.contains("soft limit of open files is 1024"), "{line}");
        assert!(line.contains("LimitNOFILE"), "{line}");
        assert_eq!(check(100 + 64, Some(1024)), None);
        assert_eq!(check(1_000_000, None), None);
    }
}
