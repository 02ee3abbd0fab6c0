//! A private Sendmail for the interop tests, run from unpacked Debian packages.
//!
//! Sendmail conflicts with Postfix as a Debian package, so it is not installed: the
//! packages `sendmail-bin`, `sendmail-cf` and `libwrap0` are fetched with
//! `apt-get download` (from the machine's configured Debian repository) and unpacked with
//! `dpkg -x` into a cache directory under Cargo's target directory, once; or an
//! already-unpacked tree is named with `INTEROP_SENDMAIL_ROOT`. The private copy of the
//! binary has its set-group-id bit dropped so that `LD_LIBRARY_PATH` (for the unpacked
//! `libwrap.so.0`) is honoured.
//!
//! The configuration is generated with `m4` from the unpacked `cf.m4`: own queue, pid,
//! status and help files, one daemon on a free port of 127.0.0.1, no interface probing,
//! every message relayed to the loopback sink, and one `INPUT_MAIL_FILTER` with `F=T`.
//!
//! Sendmail resolves its own host name at start-up (also AAAA records `/etc/hosts`
//! cannot answer). So that no packet leaves the machine, it runs inside `unshare -m`
//! with private `/etc/hosts`, `/etc/resolv.conf` (`nameserver 127.0.0.1`) and
//! `/etc/nsswitch.conf` (`hosts: files`) bind-mounted over the real ones. In the same
//! mount namespace `/dev` is replaced by a small tmpfs holding the usual device nodes
//! plus a `/dev/log` that is a datagram socket of this test process, so Sendmail's
//! syslog lines are captured ([`Sendmail::log`]) on a machine without a syslog daemon.
//!
//! The daemon runs in the foreground (`-bD`, the same as `-bd` without detaching) as the
//! child of `unshare --fork --kill-child`, in its own process group; it is stopped on
//! drop (SIGTERM to that process group, then SIGKILL).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::milter_process::{find_program, free_port, wait_for_port, TempDir};

/// How long Sendmail may take until it accepts SMTP connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Sendmail may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Debian packages unpacked for a private Sendmail.
pub const PACKAGES: &[&str] = &["sendmail-bin", "sendmail-cf", "libwrap0"];

/// Environment variable naming an already-unpacked tree (the directory holding `usr/`).
pub const ROOT_ENV: &str = "INTEROP_SENDMAIL_ROOT";

/// Where the unpacked tree is cached when [`ROOT_ENV`] is not set.
const CACHE_DIR: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/sendmail-root");

const BINARY: &str = "usr/libexec/sendmail/sendmail";
const CF_M4: &str = "usr/share/sendmail/cf/m4/cf.m4";
/// The library the unpacked binary needs from the unpacked tree (the rest comes from the
/// system).
const LIBWRAP: &str = "libwrap.so.0";
const HELP_FILE: &str = "etc/mail/helpfile";

/// What the instance is connected to.
#[derive(Debug, Clone)]
pub struct SendmailConfig {
    /// The milter as a libmilter socket spec (`inet:PORT@127.0.0.1`).
    pub milter: String,
    /// The relay host every message goes to (the test sink).
    pub relay: SocketAddr,
}

/// Why a private Sendmail cannot run here (a reason to skip), checked without
/// downloading anything: the tools it needs and the permission to unshare a mount
/// namespace. Call [`sendmail_root`] next for the packages.
pub fn unavailable() -> Option<String> {
    for program in ["unshare", "mount", "m4"] {
        if find_program(program).is_none() {
            return Some(format!("`{program}` not found on PATH"));
        }
    }
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`unshare -m` is not permitted here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run `unshare -m`: {error}")),
    }
}

/// The unpacked Sendmail tree: [`ROOT_ENV`] if set, else the cache directory, filled on
/// first use with `apt-get download` + `dpkg -x` (see the module docs).
pub fn sendmail_root() -> Result<PathBuf, String> {
    if let Some(root) = std::env::var_os(ROOT_ENV) {
        let root = PathBuf::from(root);
        check_root(&root)?;
        return Ok(root);
    }
    // One download at a time within this test binary.
    static DOWNLOAD: Mutex<()> = Mutex::new(());
    let _lock = DOWNLOAD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = PathBuf::from(CACHE_DIR);
    if check_root(&root).is_ok() {
        return Ok(root);
    }
    unpack_packages(&root)?;
    check_root(&root)?;
    Ok(root)
}

fn check_root(root: &Path) -> Result<(), String> {
    for file in [BINARY, CF_M4, HELP_FILE] {
        if !root.join(file).is_file() {
            return Err(format!(
                "{} is missing (unpack {} there)",
                root.join(file).display(),
                PACKAGES.join(" ")
            ));
        }
    }
    let mode = fs::metadata(root.join(BINARY))
        .map_err(|error| error.to_string())?
        .permissions()
        .mode();
    if mode & 0o2000 != 0 {
        return Err(format!(
            "{} is set-group-id; drop the bit (chmod g-s) so LD_LIBRARY_PATH works",
            root.join(BINARY).display()
        ));
    }
    Ok(())
}

fn unpack_packages(root: &Path) -> Result<(), String> {
    for program in ["apt-get", "dpkg"] {
        if find_program(program).is_none() {
            return Err(format!("`{program}` not found: cannot fetch Sendmail"));
        }
    }
    let work = root.with_extension("partial");
    let _ = fs::remove_dir_all(&work);
    let debs = work.join("debs");
    let tree = work.join("root");
    fs::create_dir_all(&debs).map_err(|error| format!("creating {}: {error}", debs.display()))?;
    let output = Command::new("apt-get")
        .arg("download")
        .args(PACKAGES)
        .current_dir(&debs)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running apt-get download: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "`apt-get download {}` failed ({}): {}",
            PACKAGES.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let entries = fs::read_dir(&debs).map_err(|error| error.to_string())?;
    for entry in entries {
        let path = entry.map_err(|error| error.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "deb") {
            let output = Command::new("dpkg")
                .arg("-x")
                .arg(&path)
                .arg(&tree)
                .stdin(Stdio::null())
                .output()
                .map_err(|error| format!("running dpkg -x: {error}"))?;
            if !output.status.success() {
                return Err(format!(
                    "dpkg -x {} failed: {}",
                    path.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
        }
    }
    let binary = tree.join(BINARY);
    let mode = fs::metadata(&binary)
        .map_err(|error| format!("{}: {error}", binary.display()))?
        .permissions()
        .mode();
    fs::set_permissions(&binary, fs::Permissions::from_mode(mode & 0o755))
        .map_err(|error| format!("chmod {}: {error}", binary.display()))?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&tree, root).map_err(|error| format!("moving the unpacked tree: {error}"))?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// Receives Sendmail's syslog datagrams on a unix socket.
#[derive(Debug)]
struct SyslogSink {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogSink {
    fn bind(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let lines = Arc::clone(&lines);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("sendmail-syslog".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    while !stop.load(Ordering::SeqCst) {
                        if let Ok(n) = socket.recv(&mut buf) {
                            let line = String::from_utf8_lossy(&buf[..n]).trim_end().to_owned();
                            lines
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push(line);
                        }
                    }
                })?
        };
        Ok(SyslogSink {
            lines,
            stop,
            thread: Some(thread),
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A running private Sendmail. Stopped on drop.
#[derive(Debug)]
pub struct Sendmail {
    child: Option<Child>,
    syslog: SyslogSink,
    smtp_port: u16,
    dir: TempDir,
}

impl Sendmail {
    /// Generates the configuration, starts the daemon in its mount namespace and returns
    /// once it accepts SMTP connections.
    pub fn start(root: &Path, config: &SendmailConfig) -> Result<Sendmail, String> {
        let dir = TempDir::new("interop-sendmail").map_err(|error| error.to_string())?;
        let base = dir.path().to_path_buf();
        let smtp_port = free_port();
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let write = |name: &str, text: &str| {
            let path = base.join(name);
            fs::write(&path, text).map_err(|error| format!("writing {}: {error}", path.display()))
        };
        for sub in ["etc", "queue", "dev.orig"] {
            fs::create_dir_all(base.join(sub)).map_err(|error| error.to_string())?;
        }
        fs::set_permissions(base.join("queue"), fs::Permissions::from_mode(0o700))
            .map_err(|error| error.to_string())?;
        write(
            "etc/hosts",
            &format!(
                "127.0.0.1\tmta.sendmail.test localhost {hostname}\n\
                 ::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        )?;
        write("etc/resolv.conf", "nameserver 127.0.0.1\n")?;
        write(
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n\
             protocols: files\nservices: files\n",
        )?;
        write("service.switch", "hosts files\naliases files\n")?;
        write("aliases", "")?;
        write("local-host-names", "")?;
        write("statistics", "")?;
        fs::copy(root.join(HELP_FILE), base.join("helpfile"))
            .map_err(|error| format!("copying the help file: {error}"))?;
        write("sendmail.mc", &mc(root, &base, smtp_port, config))?;
        let output = Command::new("m4")
            .arg(base.join("sendmail.mc"))
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("running m4: {error}"))?;
        if !output.status.success() || !output.stderr.is_empty() {
            return Err(format!(
                "m4 sendmail.mc failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        fs::write(base.join("sendmail.cf"), &output.stdout).map_err(|error| error.to_string())?;
        write("run.sh", &run_script(root, &base))?;
        let syslog = SyslogSink::bind(&base.join("log.sock"))
            .map_err(|error| format!("binding the syslog socket: {error}"))?;
        let stdout =
            fs::File::create(base.join("stdout.log")).map_err(|error| error.to_string())?;
        let stderr = stdout.try_clone().map_err(|error| error.to_string())?;
        let mut command = if find_program("setpriv").is_some() {
            // If this test process dies without dropping us, unshare gets SIGKILL and its
            // --kill-child passes SIGTERM on to Sendmail.
            let mut command = Command::new("setpriv");
            command.args(["--pdeathsig", "KILL", "--", "unshare"]);
            command
        } else {
            Command::new("unshare")
        };
        command
            .args(["--mount", "--fork", "--kill-child=TERM", "sh"])
            .arg(base.join("run.sh"))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|error| format!("starting unshare: {error}"))?;
        let mut sendmail = Sendmail {
            child: Some(child),
            syslog,
            smtp_port,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if wait_for_port(smtp_port, Duration::from_millis(200)).is_ok() {
                return Ok(sendmail);
            }
            let exited = sendmail
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let what = match exited {
                    Some(status) => format!("exited with {status}"),
                    None => format!("did not listen within {START_TIMEOUT:?}"),
                };
                return Err(format!(
                    "Sendmail {what}\n--- output ---\n{}\n--- syslog ---\n{}",
                    sendmail.output(),
                    sendmail.log()
                ));
            }
        }
    }

    /// The SMTP address to send test mail to.
    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.smtp_port))
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("queue")
    }

    /// Sendmail's syslog lines so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.syslog.lines()
    }

    /// Sendmail's syslog so far, one line each.
    pub fn log(&self) -> String {
        self.log_lines().join("\n")
    }

    /// What the daemon and the start script wrote to standard output and error.
    pub fn output(&self) -> String {
        fs::read(self.dir.path().join("stdout.log"))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The contents of queue file `<prefix><queue_id>` (`qf` queued, `hf` quarantined,
    /// `df` data), if it exists.
    pub fn queue_file(&self, prefix: &str, queue_id: &str) -> Option<String> {
        fs::read(self.queue_dir().join(format!("{prefix}{queue_id}")))
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The names of the files in the queue directory.
    pub fn queue_files(&self) -> Vec<String> {
        fs::read_dir(self.queue_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the daemon and everything in its process group.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(25)),
                _ => {
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &group])
                        .stdin(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("Sendmail did not stop within the timeout; killed".into());
                }
            }
        }
        // Sendmail itself got SIGTERM too; give it a moment to clean up, then kill what
        // is left in the group (delivery processes, if any).
        let pid = fs::read_to_string(self.dir.path().join("sendmail.pid"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .next()
                    .and_then(|line| line.trim().parse::<u32>().ok())
            });
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(25));
            }
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status();
        Ok(())
    }
}

impl Drop for Sendmail {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("stopping Sendmail: {error}");
        }
    }
}

/// The shell script run inside the new mount namespace.
fn run_script(root: &Path, base: &Path) -> String {
    let lib_dir = lib_dir(root);
    let lib_dir = lib_dir.display();
    let base = base.display();
    let root = root.display();
    format!(
        r#"set -e
B='{base}'
mount --bind "$B/etc/hosts" /etc/hosts
mount --bind "$B/etc/resolv.conf" /etc/resolv.conf
mount --bind "$B/etc/nsswitch.conf" /etc/nsswitch.conf
# A private /dev: the usual nodes, and /dev/log = the test's syslog socket.
mount --bind /dev "$B/dev.orig"
mount -t tmpfs -o mode=755,size=1m interop-dev /dev
for node in null zero full random urandom tty; do
  if [ -e "$B/dev.orig/$node" ]; then
    touch "/dev/$node"
    mount --bind "$B/dev.orig/$node" "/dev/$node"
  fi
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
touch /dev/log
mount --bind "$B/log.sock" /dev/log
umount -l "$B/dev.orig"
export LD_LIBRARY_PATH='{lib_dir}'
exec '{root}/{BINARY}' -C "$B/sendmail.cf" -bD -X "$B/smtp-trace"
"#
    )
}

/// The directory of the unpacked tree holding [`LIBWRAP`] (`usr/lib/<multiarch triplet>`).
fn lib_dir(root: &Path) -> PathBuf {
    let usr_lib = root.join("usr/lib");
    fs::read_dir(&usr_lib)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|dir| dir.join(LIBWRAP).exists())
        .unwrap_or(usr_lib)
}

/// The m4 input for sendmail.cf.
fn mc(root: &Path, base: &Path, smtp_port: u16, config: &SendmailConfig) -> String {
    let cf_m4 = root.join(CF_M4);
    let base = base.display();
    let relay_ip = config.relay.ip();
    let relay_port = config.relay.port();
    let milter = &config.milter;
    let lines = [
        "divert(-1)".to_owned(),
        "# Private Sendmail of the milter interop tests.".into(),
        "divert(0)dnl".into(),
        format!("include(`{}')dnl", cf_m4.display()),
        "VERSIONID(`milter interop tests')dnl".into(),
        "OSTYPE(`linux')dnl".into(),
        "define(`confDOMAIN_NAME', `mta.sendmail.test')dnl".into(),
        format!("define(`QUEUE_DIR', `{base}/queue')dnl"),
        format!("define(`STATUS_FILE', `{base}/statistics')dnl"),
        format!("define(`confPID_FILE', `{base}/sendmail.pid')dnl"),
        format!("define(`confHOST_STATUS_DIRECTORY', `{base}/hoststat')dnl"),
        format!("define(`ALIAS_FILE', `{base}/aliases')dnl"),
        format!("define(`confCW_FILE', `{base}/local-host-names')dnl"),
        format!("define(`confHELP_FILE', `{base}/helpfile')dnl"),
        format!("define(`confSERVICE_SWITCH_FILE', `{base}/service.switch')dnl"),
        "define(`confDONT_PROBE_INTERFACES', `True')dnl".into(),
        "define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl".into(),
        "define(`confDELIVERY_MODE', `background')dnl".into(),
        "define(`confTO_IDENT', `0')dnl".into(),
        "define(`confQUEUE_LA', `100')dnl".into(),
        "define(`confREFUSE_LA', `200')dnl".into(),
        "define(`confDELAY_LA', `0')dnl".into(),
        "define(`confMAX_DAEMON_CHILDREN', `0')dnl".into(),
        "define(`confCONNECTION_RATE_THROTTLE', `0')dnl".into(),
        "define(`confBAD_RCPT_THROTTLE', `0')dnl".into(),
        "define(`confMAX_MESSAGE_SIZE', `52428800')dnl".into(),
        "define(`confLOG_LEVEL', `9')dnl".into(),
        "CLIENT_OPTIONS(`Family=inet, Addr=127.0.0.1')dnl".into(),
        format!("define(`SMART_HOST', `esmtp:[{relay_ip}]')dnl"),
        format!("define(`ESMTP_MAILER_ARGS', `TCP $h {relay_port}')dnl"),
        "FEATURE(`nocanonify')dnl".into(),
        // example.test has no DNS (nothing has, here): take its addresses anyway.
        "FEATURE(`accept_unresolvable_domains')dnl".into(),
        "FEATURE(`no_default_msa')dnl".into(),
        format!("DAEMON_OPTIONS(`Port={smtp_port}, Addr=127.0.0.1, Name=MTA')dnl"),
        format!("INPUT_MAIL_FILTER(`conformance', `S={milter}, F=T, T=C:10s;S:20s;R:30s;E:2m')dnl"),
        "MAILER(`smtp')dnl".into(),
    ];
    let mut text = lines.join("\n");
    text.push('\n');
    text
}
