//! Start, wait for and stop a milter process in integration tests.
//!
//! Everything here uses the standard library only and is bounded in time: every wait has
//! a timeout, and a [`MilterGuard`] kills its process when it is dropped, also when the
//! test panics. The helpers are shared by the miltertest, Postfix and Sendmail tests:
//!
//! - [`free_port`] picks a loopback TCP port nobody listens on.
//! - [`SocketSpec`] parses a libmilter socket spec and renders it for libmilter, Sendmail
//!   and Postfix.
//! - [`spawn_milter`] starts a milter, waits until it accepts connections and returns the
//!   guard; its standard error goes to a log file that [`MilterGuard::log`] reads.
//! - [`build_c_milter`] compiles a libmilter C milter with `cc`; [`c_toolchain_available`]
//!   tells beforehand whether `cc` and libmilter's headers and library are there.
//! - [`run_with_timeout`] runs a command to completion, killing it after a timeout.
//! - [`find_program`] looks a program up on `PATH`; [`missing_prerequisite`] turns a
//!   missing tool into a skip, or into a failure when `CI=true`.
//! - [`TempDir`] is a temporary directory removed on drop.

#![allow(dead_code)] // Each test binary uses a different subset of these helpers.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long [`spawn_milter`] waits for a new milter to accept connections. libmilter
/// milters listen within milliseconds; the margin covers a loaded 2-core CI machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`MilterGuard::stop`] and the drop guard wait for the milter to exit after
/// SIGTERM before killing it. The conformance milter lets connections finish for at
/// most 10 s, so this is a little longer.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(12);

/// Interval between two connection attempts or exit checks while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Timeout of a single connection attempt to a TCP socket.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// It binds `127.0.0.1:0`, reads the port the kernel chose and releases it. Another
/// process could take the port before the caller binds it again; on a test machine that
/// is rare enough, and [`spawn_milter`] reports the milter's log if it fails to listen.
///
/// # Panics
///
/// If no loopback port can be bound at all.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a listener bound to 127.0.0.1:0")
        .port()
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, for at most
/// `timeout`.
///
/// The probe connection is closed right away; a milter sees it as a client that left
/// before negotiating.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<(), String> {
    let spec = SocketSpec::Inet(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    wait_for_socket(&spec, timeout)
}

/// Waits until something accepts connections on `spec` (TCP or unix socket), for at most
/// `timeout`. Returns the last connection error when the time is up.
pub fn wait_for_socket(spec: &SocketSpec, timeout: Duration) -> Result<(), String> {
    wait_until_listening(spec, timeout, || Ok(()))
}

/// Polls `spec` until it accepts a connection; `still_alive` is asked between attempts so
/// that a process that died is reported at once rather than after the whole timeout.
fn wait_until_listening(
    spec: &SocketSpec,
    timeout: Duration,
    mut still_alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let error = match spec.probe() {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        still_alive()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "nothing accepted connections on {spec} within {timeout:?} (last error: {error})"
            ));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Where a milter listens, parsed from a libmilter socket spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketSpec {
    /// `inet:PORT@HOST` or `inet6:PORT@HOST`.
    Inet(SocketAddr),
    /// `unix:PATH` or `local:PATH`.
    Unix(PathBuf),
}

impl SocketSpec {
    /// A TCP socket on `127.0.0.1:port`.
    pub fn loopback(port: u16) -> Self {
        SocketSpec::Inet(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Parses `inet:PORT@HOST`, `inet6:PORT@HOST`, `unix:PATH` or `local:PATH`. HOST must
    /// be an IP address or `localhost` (tests never resolve other names).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("socket spec {spec:?} has no `kind:` prefix"))?;
        match kind {
            "unix" | "local" if !rest.is_empty() => Ok(SocketSpec::Unix(PathBuf::from(rest))),
            "inet" | "inet6" => {
                let (port, host) = rest
                    .split_once('@')
                    .ok_or_else(|| format!("socket spec {spec:?} is not `{kind}:PORT@HOST`"))?;
                let port: u16 = port
                    .parse()
                    .map_err(|error| format!("bad port in socket spec {spec:?}: {error}"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let host = if host == "localhost" {
                    if kind == "inet6" {
                        "::1"
                    } else {
                        "127.0.0.1"
                    }
                } else {
                    host
                };
                let ip = host
                    .parse()
                    .map_err(|error| format!("bad host in socket spec {spec:?}: {error}"))?;
                Ok(SocketSpec::Inet(SocketAddr::new(ip, port)))
            }
            _ => Err(format!("unsupported socket spec {spec:?}")),
        }
    }

    /// The libmilter (and Sendmail `S=`, and miltertest) form: `inet:PORT@HOST`,
    /// `inet6:PORT@HOST` or `unix:PATH`.
    pub fn to_libmilter(&self) -> String {
        match self {
            SocketSpec::Inet(SocketAddr::V4(addr)) => {
                format!("inet:{}@{}", addr.port(), addr.ip())
            }
            SocketSpec::Inet(SocketAddr::V6(addr)) => {
                format!("inet6:{}@{}", addr.port(), addr.ip())
            }
            SocketSpec::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// The Postfix `smtpd_milters` form: `inet:HOST:PORT` (`inet:[::1]:PORT` for IPv6)
    /// or `unix:PATH`.
    pub fn to_postfix(&self) -> String {
        match self {
            SocketSpec::Inet(SocketAddr::V4(addr)) => {
                format!("inet:{}:{}", addr.ip(), addr.port())
            }
            SocketSpec::Inet(SocketAddr::V6(addr)) => {
                format!("inet:[{}]:{}", addr.ip(), addr.port())
            }
            SocketSpec::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// Connects once and closes the connection again; a socket that connected to
    /// itself counts as refused.
    fn probe(&self) -> io::Result<()> {
        match self {
            SocketSpec::Inet(addr) => {
                let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
                // Nothing listens yet, but the kernel picked the port itself as
                // the source port and the socket connected to itself.
                if s.local_addr()? == s.peer_addr()? {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connected to itself",
                    ));
                }
                Ok(())
            }
            SocketSpec::Unix(path) => UnixStream::connect(path).map(drop),
        }
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_libmilter())
    }
}

impl ToSocketAddrs for SocketSpec {
    type Iter = std::option::IntoIter<SocketAddr>;

    /// The TCP address of an `inet` spec; an error for a unix socket.
    fn to_socket_addrs(&self) -> io::Result<Self::Iter> {
        match self {
            SocketSpec::Inet(addr) => Ok(Some(*addr).into_iter()),
            SocketSpec::Unix(path) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is a unix socket", path.display()),
            )),
        }
    }
}

/// A running milter process. Dropping the guard stops it (SIGTERM, up to
/// [`STOP_TIMEOUT`] to exit, then SIGKILL) and removes its log file, so read
/// [`MilterGuard::log`] before. Use [`MilterGuard::stop`] to check the exit status of a
/// graceful stop.
#[derive(Debug)]
pub struct MilterGuard {
    child: Option<Child>,
    socket: SocketSpec,
    log_path: PathBuf,
    name: String,
}

impl MilterGuard {
    /// Where the milter listens.
    pub fn socket(&self) -> &SocketSpec {
        &self.socket
    }

    /// The process id of the milter.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The path of the file that receives the milter's standard output and error.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the milter wrote to standard output and error so far (lossily decoded).
    pub fn log(&self) -> String {
        match fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(error) => format!("<cannot read {}: {error}>", self.log_path.display()),
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit. Returns its exit
    /// status, or an error (after killing it with SIGKILL) if it did not exit in time.
    pub fn stop_within(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let Some(mut child) = self.child.take() else {
            return Err(format!("{} was already stopped", self.name));
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
        }
        if let Err(error) = send_sigterm(child.id()) {
            kill_and_reap(&mut child);
            return Err(format!("cannot send SIGTERM to {}: {error}", self.name));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) => {
                    kill_and_reap(&mut child);
                    return Err(format!(
                        "{} did not exit within {timeout:?} of SIGTERM; killed",
                        self.name
                    ));
                }
                Err(error) => {
                    kill_and_reap(&mut child);
                    return Err(format!("waiting for {}: {error}", self.name));
                }
            }
        }
    }

    /// [`MilterGuard::stop_within`] with [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> Result<ExitStatus, String> {
        self.stop_within(STOP_TIMEOUT)
    }
}

impl Drop for MilterGuard {
    /// Stops the process if it still runs and removes the log file.
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(error) = self.stop() {
                eprintln!("{error}");
            }
        }
        let _ = fs::remove_file(&self.log_path);
    }
}

/// Sends SIGTERM with the system's `kill` program (the crate forbids `unsafe`, so no
/// `libc::kill`).
fn send_sigterm(pid: u32) -> Result<(), String> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|error| format!("running `kill`: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`kill -TERM {pid}` failed: {status}"))
    }
}

/// SIGKILL and reap; errors are ignored because the process may be gone already.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts `cmd args... socket_spec` (the socket spec is the last argument), waits until
/// the milter accepts connections on that socket and returns a guard that stops it.
///
/// `socket_spec` is a libmilter socket spec (see [`SocketSpec::parse`]). The milter's
/// standard output and error go to a log file in the system temporary directory; see
/// [`MilterGuard::log`].
///
/// # Panics
///
/// If the spec does not parse, the program cannot be started, it exits early or it does
/// not accept connections within [`START_TIMEOUT`]; the message includes its log. Use
/// [`try_spawn_milter`] to handle that yourself.
pub fn spawn_milter(cmd: &Path, args: &[&str], socket_spec: &str) -> MilterGuard {
    match try_spawn_milter(cmd, args, socket_spec, START_TIMEOUT) {
        Ok(guard) => guard,
        Err(error) => panic!("{error}"),
    }
}

/// Like [`spawn_milter`], with an explicit start timeout and an error instead of a panic.
pub fn try_spawn_milter(
    cmd: &Path,
    args: &[&str],
    socket_spec: &str,
    start_timeout: Duration,
) -> Result<MilterGuard, String> {
    let socket = SocketSpec::parse(socket_spec)?;
    let name = cmd
        .file_name()
        .unwrap_or_else(|| OsStr::new("milter"))
        .to_string_lossy()
        .into_owned();
    let log_path = std::env::temp_dir().join(format!("{}.log", unique_name(&name)));
    let log = File::create(&log_path)
        .map_err(|error| format!("creating {}: {error}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|error| format!("duplicating {}: {error}", log_path.display()))?;
    let child = Command::new(cmd)
        .args(args)
        .arg(socket_spec)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", cmd.display()))?;
    let mut guard = MilterGuard {
        child: Some(child),
        socket,
        log_path,
        name: format!("milter {name}"),
    };
    let socket = guard.socket.clone();
    let waited = wait_until_listening(&socket, start_timeout, || {
        match guard.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(status))) => Err(format!("exited early with {status}")),
            Some(Err(error)) => Err(format!("cannot be waited for: {error}")),
            None => Err("is gone".to_owned()),
        }
    });
    match waited {
        Ok(()) => Ok(guard),
        Err(error) => {
            if let Some(mut child) = guard.child.take() {
                kill_and_reap(&mut child);
            }
            Err(format!(
                "{} {} {} ({}): {error}\n--- its output ---\n{}",
                cmd.display(),
                args.join(" "),
                socket_spec,
                guard.name,
                guard.log()
            ))
        }
    }
}

/// Runs `command` with standard input closed, collecting its standard output and error,
/// and waits at most `timeout` for it to exit. A command still running then is killed
/// and reported as an error that includes what it printed so far.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output, String> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {description}: {error}"))?;
    // Read both pipes in threads so that a chatty command cannot block on a full pipe.
    let stdout = child.stdout.take().map(read_in_thread);
    let stderr = child.stderr.take().map(read_in_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                kill_and_reap(&mut child);
                break None;
            }
            Err(error) => {
                kill_and_reap(&mut child);
                return Err(format!("waiting for {description}: {error}"));
            }
        }
    };
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{description} did not finish within {timeout:?}; killed\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// Reads `pipe` to its end in a new thread. Read errors end the data early.
fn read_in_thread(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut data = Vec::new();
        let _ = pipe.read_to_end(&mut data);
        data
    })
}

/// The C compiler the helpers use: `$CC`, else `cc`.
pub fn c_compiler() -> PathBuf {
    match std::env::var_os("CC") {
        Some(cc) if !cc.is_empty() => PathBuf::from(cc),
        _ => PathBuf::from("cc"),
    }
}

/// Checks that a C compiler is on `PATH` and that it finds libmilter's header
/// (`libmilter/mfapi.h`) and library (`-lmilter`), by compiling and linking a probe
/// program in a temporary directory. `Err` says what is missing.
pub fn c_toolchain_available() -> Result<(), String> {
    let cc = c_compiler();
    if cc.components().count() == 1 && find_program(&cc.to_string_lossy()).is_none() {
        return Err(format!("C compiler `{}` not found on PATH", cc.display()));
    }
    let dir = TempDir::new("libmilter-probe").map_err(|error| error.to_string())?;
    let source = dir.path().join("probe.c");
    fs::write(
        &source,
        "#include <stdbool.h>\n#include <libmilter/mfapi.h>\n\
         int main(void) { unsigned int a, b, c; return smfi_version(&a, &b, &c); }\n",
    )
    .map_err(|error| format!("writing {}: {error}", source.display()))?;
    let output = Command::new(&cc)
        .arg("-o")
        .arg(dir.path().join("probe"))
        .arg(&source)
        .args(["-lmilter", "-lpthread"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running {}: {error}", cc.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot build against libmilter (install libmilter-dev): {}",
            cc.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Compiles the libmilter C milter `source` into `out_dir` and returns the binary's path
/// (`out_dir/<source stem>`), with
/// `cc -O2 -Wall -Wextra -o OUT SOURCE -lmilter -lpthread`. Compiler warnings are
/// printed to standard error; errors are returned with the compiler's output.
///
/// Call [`c_toolchain_available`] first to tell a missing compiler or libmilter (a
/// reason to skip) from a broken source file (a failure).
pub fn build_c_milter(source: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let stem = source
        .file_stem()
        .ok_or_else(|| format!("{} has no file name", source.display()))?;
    fs::create_dir_all(out_dir)
        .map_err(|error| format!("creating {}: {error}", out_dir.display()))?;
    let binary = out_dir.join(stem);
    let cc = c_compiler();
    let output = Command::new(&cc)
        .args(["-O2", "-Wall", "-Wextra", "-o"])
        .arg(&binary)
        .arg(source)
        .args(["-lmilter", "-lpthread"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("running {}: {error}", cc.display()))?;
    let diagnostics = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed to compile {}: {}\n{}",
            cc.display(),
            source.display(),
            output.status,
            diagnostics.trim()
        ));
    }
    if !diagnostics.trim().is_empty() {
        eprintln!(
            "warnings compiling {}:\n{}",
            source.display(),
            diagnostics.trim()
        );
    }
    Ok(binary)
}

/// The first executable file called `name` in the directories of `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether the environment says this is a CI run (`CI=true`, any case, or `1`).
pub fn running_in_ci() -> bool {
    std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false)
}

/// Reports a missing test prerequisite: under CI (see [`running_in_ci`]) it panics with
/// `reason`, so the test fails; otherwise it prints a one-line skip notice and returns, and
/// the caller should return from the test. The notice goes straight to standard error,
/// past the test harness's output capture, so that it shows in every run.
pub fn missing_prerequisite(test: &str, reason: &str) {
    if running_in_ci() {
        panic!("{test}: {reason} (CI=true, so this is a failure, not a skip)");
    }
    let _ = writeln!(io::stderr(), "skipping {test}: {reason}");
}

/// A directory under the system temporary directory, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> io::Result<Self> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// `prefix-PID-COUNTER-NANOS`: unique among the processes and threads of this machine.
fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
