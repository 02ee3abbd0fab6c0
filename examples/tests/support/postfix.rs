//! A private Postfix instance for the interop tests.
//!
//! Everything lives in one temporary directory: `conf/` (main.cf, master.cf), `queue/`,
//! `data/` and the log file `maillog` written by `postlogd`. The instance listens for
//! SMTP on a free port of 127.0.0.1 only, uses one milter, relays every message to a
//! loopback sink, and never looks anything up in DNS. It is started with
//! `postfix -c DIR start` and stopped on drop (also when a test panics).
//!
//! Postfix's daemons run as user `postfix`, so the directory is made world-searchable and
//! `data/` is given to that user; `postfix start` creates the queue's subdirectories
//! with their owners itself.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::milter_process::{find_program, free_port, wait_for_port, TempDir};

/// How long `postfix start` may take until smtpd accepts connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the master may take to exit after `postfix stop` before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where Debian installs the Postfix commands.
const SBIN: &str = "/usr/sbin";

/// What the instance is connected to.
#[derive(Debug, Clone)]
pub struct PostfixConfig {
    /// The milter, in Postfix's `smtpd_milters` syntax (`inet:127.0.0.1:PORT`).
    pub milter: String,
    /// The relay host every message goes to (the test sink).
    pub relay: SocketAddr,
    /// Extra `main.cf` lines, appended last (they win).
    pub extra_main_cf: Vec<String>,
}

/// A running private Postfix. Stopped on drop.
#[derive(Debug)]
pub struct Postfix {
    dir: TempDir,
    smtp_port: u16,
    master_pid: Option<u32>,
    stopped: bool,
}

/// Why Postfix cannot be used on this machine (a reason to skip).
pub fn unavailable() -> Option<String> {
    for program in ["postfix", "postconf", "postqueue", "postcat", "postsuper"] {
        let path = Path::new(SBIN).join(program);
        if !path.is_file() && find_program(program).is_none() {
            return Some(format!(
                "`{program}` not found (install the Debian package `postfix`)"
            ));
        }
    }
    if !Path::new("/usr/lib/postfix/sbin/master").is_file() {
        return Some("/usr/lib/postfix/sbin/master not found (package `postfix`)".into());
    }
    if !running_as_root() {
        return Some("a private Postfix instance needs root".into());
    }
    None
}

fn running_as_root() -> bool {
    // `id -u` avoids unsafe libc calls.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
        .unwrap_or(false)
}

fn program(name: &str) -> PathBuf {
    let path = Path::new(SBIN).join(name);
    if path.is_file() {
        path
    } else {
        find_program(name).unwrap_or_else(|| PathBuf::from(name))
    }
}

/// Runs a Postfix command and returns its output; an error with its output when it
/// fails.
fn run(command: &mut Command) -> Result<Output, String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running {command:?}: {error}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{command:?} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Postfix {
    /// Writes the configuration and starts the instance; returns once smtpd accepts
    /// connections.
    pub fn start(config: &PostfixConfig) -> Result<Postfix, String> {
        let dir = TempDir::new("interop-postfix").map_err(|error| error.to_string())?;
        let root = dir.path().to_path_buf();
        let smtp_port = free_port();
        for sub in ["conf", "queue", "data"] {
            fs::create_dir_all(root.join(sub))
                .map_err(|error| format!("creating {sub}: {error}"))?;
        }
        for path in [root.clone(), root.join("conf"), root.join("queue")] {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .map_err(|error| format!("chmod {}: {error}", path.display()))?;
        }
        run(Command::new("chown").arg("postfix").arg(root.join("data")))?;
        fs::write(root.join("conf/main.cf"), main_cf(&root, config))
            .map_err(|error| format!("writing main.cf: {error}"))?;
        fs::write(root.join("conf/master.cf"), master_cf(smtp_port))
            .map_err(|error| format!("writing master.cf: {error}"))?;
        let mut postfix = Postfix {
            dir,
            smtp_port,
            master_pid: None,
            stopped: false,
        };
        run(Command::new(program("postfix"))
            .arg("-c")
            .arg(postfix.conf_dir())
            .arg("start"))
        .map_err(|error| format!("{error}\n--- maillog ---\n{}", postfix.log()))?;
        postfix.master_pid = postfix.read_master_pid(Duration::from_secs(10));
        wait_for_port(smtp_port, START_TIMEOUT).map_err(|error| {
            format!("Postfix smtpd: {error}\n--- maillog ---\n{}", postfix.log())
        })?;
        Ok(postfix)
    }

    /// The instance's configuration directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The instance's queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// The SMTP address to send test mail to.
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.smtp_port))
    }

    /// The whole log (`maillog_file`) so far.
    pub fn log(&self) -> String {
        let path = self.dir.path().join("maillog");
        fs::read(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("<cannot read {}: {error}>", path.display()))
    }

    /// The log from byte offset `from` on (see [`Postfix::log_len`]).
    pub fn log_since(&self, from: usize) -> String {
        let log = self.log();
        log.get(from..).unwrap_or("").to_owned()
    }

    /// The current length of the log, to mark where a case starts.
    pub fn log_len(&self) -> usize {
        fs::metadata(self.dir.path().join("maillog"))
            .map(|meta| meta.len() as usize)
            .unwrap_or(0)
    }

    /// Runs `postconf -c DIR -e SETTING...` and `postfix reload`.
    pub fn reconfigure(&self, settings: &[&str]) -> Result<(), String> {
        run(Command::new(program("postconf"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-e")
            .args(settings))?;
        run(Command::new(program("postfix"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("reload"))?;
        Ok(())
    }

    /// The queue as `postqueue -j` lists it: one JSON object per message, kept as text.
    pub fn queue_json(&self) -> Result<Vec<String>, String> {
        let output = run(Command::new(program("postqueue"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-j"))?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The queue name (`hold`, `active`, `deferred`, `incoming`, ...) of message
    /// `queue_id`, if it is queued.
    pub fn queue_of(&self, queue_id: &str) -> Result<Option<String>, String> {
        let needle = format!("\"queue_id\": \"{queue_id}\"");
        Ok(self
            .queue_json()?
            .into_iter()
            .find(|entry| entry.contains(&needle))
            .and_then(|entry| json_string_field(&entry, "queue_name")))
    }

    /// `postcat -c DIR -q ID`: the queue file of `queue_id`, human-readable.
    pub fn postcat(&self, queue_id: &str) -> Result<String, String> {
        let output = run(Command::new(program("postcat"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-q")
            .arg(queue_id))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Deletes message `queue_id` from the queue (`postsuper -d`).
    pub fn delete(&self, queue_id: &str) -> Result<(), String> {
        run(Command::new(program("postsuper"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("-d")
            .arg(queue_id))
        .map(drop)
    }

    /// Stops the instance: `postfix stop`, then waits for the master to exit (killing it
    /// after [`STOP_TIMEOUT`]).
    pub fn stop(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let result = run(Command::new(program("postfix"))
            .arg("-c")
            .arg(self.conf_dir())
            .arg("stop"))
        .map(drop);
        if let Some(pid) = self.master_pid {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while process_alive(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if process_alive(pid) {
                let _ = Command::new(program("postfix"))
                    .arg("-c")
                    .arg(self.conf_dir())
                    .arg("abort")
                    .stdin(Stdio::null())
                    .output();
                thread::sleep(Duration::from_millis(500));
                if process_alive(pid) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .output();
                }
                return Err(format!("Postfix master {pid} did not stop in time"));
            }
        }
        result
    }

    fn read_master_pid(&self, timeout: Duration) -> Option<u32> {
        let path = self.queue_dir().join("pid/master.pid");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                if let Ok(pid) = text.trim().parse() {
                    return Some(pid);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping Postfix: {error}");
        }
    }
}

fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state letter is Z.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// The value of `"field": "value"` in one line of `postqueue -j` output.
fn json_string_field(entry: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\": \"");
    let start = entry.find(&key)? + key.len();
    let end = entry[start..].find('"')?;
    Some(entry[start..start + end].to_owned())
}

fn main_cf(root: &Path, config: &PostfixConfig) -> String {
    let root = root.display();
    let mut lines = vec![
        "# Private Postfix instance of the milter interop tests.".to_owned(),
        "compatibility_level = 3.6".into(),
        format!("queue_directory = {root}/queue"),
        format!("data_directory = {root}/data"),
        format!("maillog_file = {root}/maillog"),
        format!("maillog_file_prefixes = {root}"),
        "myhostname = mta.postfix.test".into(),
        "mydomain = postfix.test".into(),
        "myorigin = $myhostname".into(),
        // Nothing is local: every address goes to the relay host.
        "mydestination =".into(),
        "local_recipient_maps =".into(),
        "alias_maps =".into(),
        "alias_database =".into(),
        "relay_domains =".into(),
        // Loopback only, IPv4 only.
        "inet_interfaces = 127.0.0.1".into(),
        "inet_protocols = ipv4".into(),
        "mynetworks = 127.0.0.0/8".into(),
        "smtp_bind_address = 127.0.0.1".into(),
        format!(
            "relayhost = [{}]:{}",
            config.relay.ip(),
            config.relay.port()
        ),
        // No DNS anywhere: the relay host is a literal address, client names are not
        // looked up.
        "smtp_dns_support_level = disabled".into(),
        "disable_dns_lookups = yes".into(),
        "smtp_host_lookup = native".into(),
        "lmtp_host_lookup = native".into(),
        "smtpd_peername_lookup = no".into(),
        "smtp_tls_security_level = none".into(),
        "smtpd_tls_security_level = none".into(),
        "biff = no".into(),
        "append_dot_mydomain = no".into(),
        // Deliver at once, retry fast, never wait for more mail.
        "queue_run_delay = 1s".into(),
        "minimal_backoff_time = 1s".into(),
        "maximal_backoff_time = 2s".into(),
        "maximal_queue_lifetime = 1h".into(),
        "bounce_queue_lifetime = 1h".into(),
        "in_flow_delay = 0".into(),
        "smtpd_error_sleep_time = 0".into(),
        "smtpd_soft_error_limit = 1000".into(),
        "smtpd_hard_error_limit = 1000".into(),
        "smtpd_junk_command_limit = 1000".into(),
        "smtp_connection_cache_on_demand = no".into(),
        "message_size_limit = 52428800".into(),
        "smtpd_client_connection_rate_limit = 0".into(),
        "anvil_rate_time_unit = 60s".into(),
        "notify_classes =".into(),
        "delay_warning_time = 0".into(),
        // The milter under test.
        format!("smtpd_milters = {}", config.milter),
        "non_smtpd_milters =".into(),
        "milter_protocol = 6".into(),
        "milter_default_action = tempfail".into(),
        "milter_connect_timeout = 10s".into(),
        "milter_command_timeout = 20s".into(),
        "milter_content_timeout = 60s".into(),
    ];
    lines.extend(config.extra_main_cf.iter().cloned());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn master_cf(smtp_port: u16) -> String {
    let services = [
        format!("127.0.0.1:{smtp_port} inet n - n - - smtpd"),
        "pickup    unix  n - n 60 1 pickup".into(),
        "cleanup   unix  n - n -  0 cleanup".into(),
        "qmgr      unix  n - n 300 1 qmgr".into(),
        "tlsmgr    unix  - - n 1000? 1 tlsmgr".into(),
        "rewrite   unix  - - n -  - trivial-rewrite".into(),
        "bounce    unix  - - n -  0 bounce".into(),
        "defer     unix  - - n -  0 bounce".into(),
        "trace     unix  - - n -  0 bounce".into(),
        "verify    unix  - - n -  1 verify".into(),
        "flush     unix  n - n 1000? 0 flush".into(),
        "proxymap  unix  - - n -  - proxymap".into(),
        "smtp      unix  - - n -  - smtp".into(),
        "relay     unix  - - n -  - smtp".into(),
        "showq     unix  n - n -  - showq".into(),
        "error     unix  - - n -  - error".into(),
        "retry     unix  - - n -  - error".into(),
        "discard   unix  - - n -  - discard".into(),
        "anvil     unix  - - n -  1 anvil".into(),
        "scache    unix  - - n -  1 scache".into(),
        "postlog   unix-dgram n - n - 1 postlogd".into(),
    ];
    let mut text = services.join("\n");
    text.push('\n');
    text
}
