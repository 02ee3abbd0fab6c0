//! Soak: many messages over 64 concurrent connections with random aborts,
//! early decisions, quit-new-connection (`K`), quits and reconnects, and
//! disconnects in the middle of messages. At the end the MTA side's count of
//! sessions, messages, recipients, verdicts and modifications must equal the
//! milter's own (atomics), a checksum over the queue ids seen at end of message
//! must match (nothing lost or duplicated), and resident memory, descriptors and
//! threads must be back within a small margin of where they started.
//!
//! By default (CI) it runs 20,000 messages. The full run:
//!
//! ```text
//! MILTER_SOAK_FULL=1 cargo test --release -p milter-blocking --test soak -- --nocapture
//! ```
//!
//! (`MILTER_SOAK_MESSAGES=N` picks any other count, `MILTER_SOAK_SEED=S` the
//! random seed; the seed in use is printed.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Answer, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::{Command, Modification};
use milter_blocking::{
    Actions, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Spec,
    Status,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;

// ---------------------------------------------------------------------------
// Tallies, kept identically on both sides
// ---------------------------------------------------------------------------

/// Verdict kinds counted.
const VERDICTS: [&str; 7] = [
    "continue",
    "accept",
    "reject",
    "tempfail",
    "discard",
    "reply",
    "rcpt-reject",
];
/// Modification kinds counted.
const MODS: [&str; 4] = ["add_header", "change_from", "add_rcpt", "replace_body"];

#[derive(Default)]
struct Tally {
    sessions: AtomicUsize,
    mails: AtomicUsize,
    rcpts: AtomicUsize,
    eoms: AtomicUsize,
    aborts: AtomicUsize,
    verdicts: [AtomicUsize; 7],
    mods: [AtomicUsize; 4],
    /// Sum of a hash of each queue id answered at end of message.
    id_sum: AtomicU64,
}

impl Tally {
    fn verdict(&self, kind: &str) {
        let i = VERDICTS.iter().position(|k| *k == kind).unwrap();
        self.verdicts[i].fetch_add(1, Ordering::Relaxed);
    }
    fn modification(&self, kind: &str) {
        let i = MODS.iter().position(|k| *k == kind).unwrap();
        self.mods[i].fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> Vec<(String, usize)> {
        let mut v = vec![
            ("sessions".to_string(), self.sessions.load(Ordering::SeqCst)),
            ("mails".into(), self.mails.load(Ordering::SeqCst)),
            ("rcpts".into(), self.rcpts.load(Ordering::SeqCst)),
            ("eoms".into(), self.eoms.load(Ordering::SeqCst)),
            ("aborts".into(), self.aborts.load(Ordering::SeqCst)),
        ];
        for (k, n) in VERDICTS.iter().zip(&self.verdicts) {
            v.push((format!("verdict {k}"), n.load(Ordering::SeqCst)));
        }
        for (k, n) in MODS.iter().zip(&self.mods) {
            v.push((format!("mod {k}"), n.load(Ordering::SeqCst)));
        }
        v.push((
            "id checksum".into(),
            self.id_sum.load(Ordering::SeqCst) as usize,
        ));
        v
    }
}

fn id_hash(id: &[u8]) -> u64 {
    // FNV-1a, then a final mix.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

// ---------------------------------------------------------------------------
// The milter: decisions come from the sender address, modifications from a
// header; everything it does is counted
// ---------------------------------------------------------------------------

struct Soak {
    tally: Arc<Tally>,
    verdict: String,
    mods: u32,
}

impl milter_blocking::Declaration for Soak {
    const ACTIONS: milter_blocking::Actions = Actions::ADD_HEADER
        .union(Actions::CHANGE_FROM)
        .union(Actions::ADD_RCPT)
        .union(Actions::CHANGE_BODY);
}
impl milter_blocking::action::AddHeader for Soak {}
impl milter_blocking::action::ChangeBody for Soak {}
impl milter_blocking::action::AddRcpt for Soak {}
impl milter_blocking::action::ChangeFrom for Soak {}

#[milter_blocking::handlers]
impl Milter for Soak {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec {
            actions: Actions::ADD_HEADER
                .union(Actions::CHANGE_FROM)
                .union(Actions::ADD_RCPT)
                .union(Actions::CHANGE_BODY),
            ..Spec::ALL_STAGES
        };
    }

    fn connect(&mut self, _: &mut Context<'_>, _: &[u8], _: ConnectAddr<'_>) -> HandlerResult {
        Ok(Status::Continue)
    }
    fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
        self.tally.mails.fetch_add(1, Ordering::Relaxed);
        // "<KIND@soak>"
        let a = String::from_utf8_lossy(from.address);
        self.verdict = a
            .trim_start_matches('<')
            .split('@')
            .next()
            .unwrap_or("")
            .to_string();
        self.mods = 0;
        if self.verdict == "mail-tempfail" {
            self.tally.verdict("tempfail");
            return Ok(Status::Tempfail);
        }
        Ok(Status::Continue)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, to: &EnvelopeAddr<'_>) -> HandlerResult {
        self.tally.rcpts.fetch_add(1, Ordering::Relaxed);
        if to.address.starts_with(b"<bad") {
            self.tally.verdict("rcpt-reject");
            return Ok(Status::Reject);
        }
        Ok(Status::Continue)
    }
    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        if h.name == b"X-Mods" {
            self.mods = std::str::from_utf8(h.value).unwrap().parse().unwrap();
        }
        if self.verdict == "header-reject" {
            self.tally.verdict("reject");
            return Ok(Status::Reject);
        }
        Ok(Status::Continue)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        self.tally.eoms.fetch_add(1, Ordering::Relaxed);
        let id = ctx.queue_id().unwrap_or("missing").as_bytes().to_vec();
        self.tally.id_sum.fetch_add(id_hash(&id), Ordering::Relaxed);
        for i in 0..self.mods {
            ctx.add_header("X-Soak", format!("{i}"))?;
            self.tally.modification("add_header");
        }
        if self.mods % 3 == 1 {
            ctx.change_from("<new-sender@soak>", None)?;
            self.tally.modification("change_from");
        }
        if self.mods % 4 == 2 {
            ctx.add_rcpt("<added@soak>")?;
            self.tally.modification("add_rcpt");
        }
        if self.mods % 5 == 3 {
            ctx.replace_body(b"replaced\r\n")?;
            self.tally.modification("replace_body");
        }
        let (status, kind) = match self.verdict.as_str() {
            "accept" => (Status::Accept, "accept"),
            "reject" => (Status::Reject, "reject"),
            "tempfail" => (Status::Tempfail, "tempfail"),
            "discard" => (Status::Discard, "discard"),
            "reply" => (
                Status::reply(550, Some("5.7.1"), "soak says no").unwrap(),
                "reply",
            ),
            _ => (Status::Continue, "continue"),
        };
        self.tally.verdict(kind);
        Ok(status)
    }
    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.tally.aborts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.tally.sessions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The MTA side
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn decision_kind(d: &Decision) -> &'static str {
    match d {
        Decision::Continue => "continue",
        Decision::Accept => "accept",
        Decision::Reject => "reject",
        Decision::Tempfail => "tempfail",
        Decision::Discard => "discard",
        Decision::Reply(_) => "reply",
        other => panic!("unexpected decision {other:?}"),
    }
}

fn new_session(spec: &milter_blocking::SocketSpec, tally: &Tally) -> Mta {
    let mut m = Mta::connect(spec);
    if let common::Conn::Tcp(s) = &m.conn {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    start_session(&mut m, tally);
    m
}

fn start_session(m: &mut Mta, tally: &Tally) {
    tally.sessions.fetch_add(1, Ordering::Relaxed);
    m.macros(
        b'C',
        &[("j", "mx.soak.example"), ("{daemon_name}", "smtpd")],
    );
    m.connect_stage("client.soak.example", "192.0.2.77", 40000);
    m.helo("client.soak.example");
}

/// One MTA thread: sends messages until `budget` is used up.
fn mta_thread(
    spec: milter_blocking::SocketSpec,
    tally: Arc<Tally>,
    budget: Arc<AtomicUsize>,
    seed: u64,
    t: usize,
) {
    let mut rng = Rng((seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let mut m = new_session(&spec, &tally);
    let mut n = 0usize;
    while budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok()
    {
        n += 1;
        let id = format!("T{t}Q{n}");
        // Whether the milter has a message open (so that an abort is due on a
        // cut): from MAIL until a final decision or the end of message.
        let mut open;
        let verdict = match rng.below(100) {
            0..=39 => "continue",
            40..=49 => "accept",
            50..=57 => "reject",
            58..=63 => "tempfail",
            64..=69 => "discard",
            70..=74 => "reply",
            75..=80 => "mail-tempfail",
            _ => "header-reject",
        };
        m.macros(b'M', &[("{i}", id.as_str()), ("{mail_addr}", "x@soak")]);
        tally.mails.fetch_add(1, Ordering::Relaxed);
        let a = m.mail(&format!("<{verdict}@soak>"), &["SIZE=100"]);
        open = true;
        // Where this message is abandoned, if it is (stage index), and how.
        let cut_at = if rng.chance(15) {
            Some(rng.below(6))
        } else {
            None
        };
        let cut_how = rng.below(4); // 0: A, 1: K, 2: Q + reconnect, 3: disconnect
        let mut cut = false;
        if verdict == "mail-tempfail" {
            assert_eq!(a, Answer::Decision(Decision::Tempfail));
            tally.verdict("tempfail");
            open = false;
        } else {
            assert_eq!(a, common::continue_());
            'stages: for stage in 0..6u64 {
                if cut_at == Some(stage) {
                    cut = true;
                    break 'stages;
                }
                match stage {
                    0 => {
                        for r in 0..=rng.below(3) {
                            let bad = rng.chance(20);
                            let to = if bad {
                                format!("<bad{r}@soak>")
                            } else {
                                format!("<r{r}@soak>")
                            };
                            tally.rcpts.fetch_add(1, Ordering::Relaxed);
                            let ans = m.rcpt(&to, &[]);
                            if bad {
                                assert_eq!(ans, Answer::Decision(Decision::Reject));
                                tally.verdict("rcpt-reject");
                            } else {
                                assert_eq!(ans, common::continue_());
                            }
                        }
                    }
                    1 => assert_eq!(m.send(Command::Data), common::continue_()),
                    2 => {
                        let mods = rng.below(6);
                        let ans = m.header("X-Mods", &mods.to_string());
                        if verdict == "header-reject" {
                            assert_eq!(ans, Answer::Decision(Decision::Reject));
                            tally.verdict("reject");
                            open = false;
                            break 'stages;
                        }
                        assert_eq!(ans, common::continue_());
                        assert_eq!(m.header("Subject", &id), common::continue_());
                    }
                    3 => assert_eq!(m.send(Command::Eoh), common::continue_()),
                    4 => {
                        for _ in 0..=rng.below(2) {
                            assert_eq!(m.body(b"soak body line\r\n"), common::continue_());
                        }
                    }
                    _ => {
                        m.macros(b'E', &[("{i}", id.as_str())]);
                        tally.eoms.fetch_add(1, Ordering::Relaxed);
                        let eom = m.eom();
                        tally
                            .id_sum
                            .fetch_add(id_hash(id.as_bytes()), Ordering::Relaxed);
                        tally.verdict(decision_kind(&eom.decision));
                        for md in &eom.modifications {
                            tally.modification(match md {
                                Modification::AddHeader { .. } => "add_header",
                                Modification::ChangeFrom { .. } => "change_from",
                                Modification::AddRcpt(_) => "add_rcpt",
                                Modification::ReplaceBody(_) => "replace_body",
                                other => panic!("unexpected modification {other:?}"),
                            });
                        }
                        open = false;
                    }
                }
            }
        }
        if cut {
            if open {
                tally.aborts.fetch_add(1, Ordering::Relaxed);
            }
            match cut_how {
                0 => m.send_only(Command::Abort),
                1 => {
                    m.send_only(Command::QuitNewConnection);
                    start_session(&mut m, &tally);
                }
                2 => {
                    m.send_only(Command::Quit);
                    assert!(m.closed_by_milter(Duration::from_secs(20)));
                    m = new_session(&spec, &tally);
                }
                _ => {
                    // Every reply was read: the milter has seen everything sent.
                    drop(m);
                    m = new_session(&spec, &tally);
                }
            }
        } else {
            // Postfix-style: A after every transaction (ignored outside one).
            if rng.chance(50) {
                m.send_only(Command::Abort);
            }
            if rng.chance(3) {
                m.send_only(Command::QuitNewConnection);
                start_session(&mut m, &tally);
            } else if rng.chance(3) {
                m.send_only(Command::Quit);
                assert!(m.closed_by_milter(Duration::from_secs(20)));
                m = new_session(&spec, &tally);
            }
        }
    }
    m.send_only(Command::Quit);
    assert!(m.closed_by_milter(Duration::from_secs(20)));
}

fn status_kib(field: &str) -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).unwrap().count()
}

/// The process's thread count once it stops changing: a worker that has left
/// the pool (the pool no longer counts it) can still be tearing down, and
/// counting in /proc, for a moment. The same count three times 50 ms apart,
/// within 10 s.
fn steady_thread_count() -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = count_dir("/proc/self/task");
    let mut same = 0;
    while same < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = count_dir("/proc/self/task");
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Runs `messages` messages over 64 connections; returns the elapsed time.
fn run(server: &TestServer, server_tally: &Tally, messages: usize, seed: u64) -> (Tally, Duration) {
    let tally = Arc::new(Tally::default());
    let budget = Arc::new(AtomicUsize::new(messages));
    let started = Instant::now();
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|t| {
            let (spec, tally, budget) = (server.spec.clone(), tally.clone(), budget.clone());
            std::thread::Builder::new()
                .name(format!("soak-mta-{t}"))
                .spawn(move || mta_thread(spec, tally, budget, seed, t))
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    // The milter counts a session when its close handler ran, before the
    // connection leaves the registry: wait for the last one to leave.
    let _ = server_tally;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.handle.stats().open > 0 {
        assert!(Instant::now() < deadline, "{:?}", server.handle.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap();
    (tally, elapsed)
}

#[test]
fn soak_many_messages_over_64_connections() {
    let messages: usize = match std::env::var("MILTER_SOAK_MESSAGES") {
        Ok(v) => v.parse().expect("MILTER_SOAK_MESSAGES"),
        Err(_) if std::env::var_os("MILTER_SOAK_FULL").is_some() => 200_000,
        Err(_) => 20_000,
    };
    let seed: u64 = std::env::var("MILTER_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed0f_50a4);
    let limit = Duration::from_secs(60 + messages as u64 / 50);
    watchdog(limit, move || {
        let server_tally = Arc::new(Tally::default());
        let server = {
            let t = server_tally.clone();
            TestServer::with(
                |b| b.idle_thread_timeout(Duration::from_millis(200)),
                move || Soak {
                    tally: t.clone(),
                    verdict: String::new(),
                    mods: 0,
                },
            )
        };
        let settle = |server: &TestServer| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while server.handle.stats().threads > 0 || server.handle.stats().open > 0 {
                assert!(Instant::now() < deadline, "{:?}", server.handle.stats());
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // Warm-up: every connection thread and allocator arena exists once.
        let (warm, _) = run(
            &server,
            &server_tally,
            CONNECTIONS * 20,
            seed.wrapping_add(1),
        );
        settle(&server);
        let server_warm = server_tally.snapshot();
        let threads0 = steady_thread_count();
        let (rss0, fds0) = (status_kib("VmRSS"), count_dir("/proc/self/fd"));

        let (client, elapsed) = run(&server, &server_tally, messages, seed);
        settle(&server);
        let threads1 = steady_thread_count();
        let (rss1, hwm, fds1) = (
            status_kib("VmRSS"),
            status_kib("VmHWM"),
            count_dir("/proc/self/fd"),
        );

        // The milter's counts minus the warm-up equal the MTA side's.
        let server_now = server_tally.snapshot();
        let warm = warm.snapshot();
        let client = client.snapshot();
        let mut report = String::new();
        for (((name, s_now), (_, s_warm)), ((_, c), (_, c_warm))) in server_now
            .iter()
            .zip(&server_warm)
            .zip(client.iter().zip(&warm))
        {
            let server_count = if name == "id checksum" {
                (*s_now as u64).wrapping_sub(*s_warm as u64) as usize
            } else {
                s_now - s_warm
            };
            let _ = c_warm;
            report.push_str(&format!(
                "  {name:<22} mta {c:>12}  milter {server_count:>12}\n"
            ));
            assert_eq!(*c, server_count, "{name} differs:\n{report}");
        }
        let mib = |k: i64| k as f64 / 1024.0;
        eprintln!(
            "[soak] seed {seed}: {messages} messages over {CONNECTIONS} connections in {elapsed:?} \
             ({:.0} messages/s)\n{report}\
             [soak] VmRSS {:.1} MiB -> {:.1} MiB ({:+.1} MiB), VmHWM {:.1} MiB; fds {fds0} -> {fds1}; threads {threads0} -> {threads1}",
            messages as f64 / elapsed.as_secs_f64(),
            mib(rss0),
            mib(rss1),
            mib(rss1 - rss0),
            mib(hwm),
        );
        assert_eq!(fds1, fds0, "descriptors");
        assert_eq!(threads1, threads0, "threads");
        assert!(rss1 - rss0 < 8 * 1024, "VmRSS grew by {} KiB", rss1 - rss0);
    });
}
