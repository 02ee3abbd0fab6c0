//! Descriptors: a connection costs one, and the shutdown deadline holds when
//! the process has run out of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::{Context, HandlerResult, Milter, OptNeg, SocketSpec, Spec};
use std::process::Command as Process;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests here count the descriptors of the whole process: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[derive(Default)]
struct Quiet;

impl milter_blocking::Declaration for Quiet {}

#[milter_blocking::handlers]
impl Milter for Quiet {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut Spec) {
        *spec = Spec::ALL_STAGES;
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

/// Waits until the server has `n` connections open.
fn wait_open(server: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.handle.stats().open != n {
        assert!(Instant::now() < deadline, "{:?}", server.handle.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_connection_costs_one_descriptor() {
    let _serial = serial();
    watchdog(Duration::from_secs(60), || {
        const N: usize = 50;
        let server = TestServer::start(Quiet::default);
        // Warm up (the first connection starts what is started once).
        drop(Mta::connect(&server.spec));
        wait_open(&server, 0);
        let before = fds();
        let conns: Vec<Mta> = (0..N).map(|_| Mta::connect(&server.spec)).collect();
        wait_open(&server, N);
        let per_connection = (fds() - before) as f64 / N as f64;
        eprintln!("[descriptors] {per_connection} per connection (client and server side)");
        // The client's end of each connection lives in this process too.
        assert_eq!(
            fds() - before,
            2 * N,
            "the server holds more than one descriptor per connection"
        );
        drop(conns);
    });
}

/// Set in the child process that runs
/// [`the_deadline_holds_when_out_of_descriptors_child`].
const CHILD: &str = "MILTER_TEST_OUT_OF_DESCRIPTORS";

/// The shutdown deadline cuts connections accepted while the process had no
/// descriptor to spare. Runs in a child process under `ulimit -n 64`, as it
/// fills the descriptor table.
#[test]
fn the_deadline_holds_when_out_of_descriptors() {
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let mut child = Process::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(exe)
        .args([
            "--exact",
            "the_deadline_holds_when_out_of_descriptors_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not finish: run did not return after the deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "child failed: {status}");
}

#[test]
#[ignore = "run by the_deadline_holds_when_out_of_descriptors in a child process"]
fn the_deadline_holds_when_out_of_descriptors_child() {
    assert!(std::env::var_os(CHILD).is_some(), "run only as a child");
    let server = TestServer::start(Quiet::default);
    let SocketSpec::Inet(addr) = server.spec.clone() else {
        unreachable!()
    };
    // Fill the descriptor table, then free two: one for the client's end of
    // a connection, one for the server's.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    assert!(hog.len() > 2, "could not fill the descriptor table");
    hog.truncate(hog.len() - 2);
    let stream = std::net::TcpStream::connect(addr).expect("connect with the last descriptors");
    let mut mta = Mta::over_tcp(stream, OptNeg::POSTFIX_3);
    mta.negotiate().expect("negotiation");
    // Inside a message: the shutdown waits for it until the deadline.
    mta.connect_stage("h", "192.0.2.1", 25);
    mta.mail("<a@b>", &[]);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.stop(Duration::from_millis(500)));
    });
    let returned = rx.recv_timeout(Duration::from_secs(20));
    eprintln!(
        "[descriptors] run returned {:?} after a stop with a 500 ms deadline",
        started.elapsed()
    );
    assert!(returned.is_ok(), "run did not return after the deadline");
    assert!(mta.closed_by_milter(Duration::from_secs(5)));
    drop(hog);
}
