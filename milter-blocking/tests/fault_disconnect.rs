//! The MTA disconnects after each command of a message, in turn (after reading
//! the reply, without reading it, and with a reset instead of a FIN): every
//! session still gets its close handler (and abort when inside a message), and
//! no thread, file descriptor or memory is left behind: threads and descriptors
//! return to their baseline (`/proc/self/task`, `/proc/self/fd`; the MTA side of
//! the test lives in the same process and is closed too), idle worker threads
//! leave after `idle_thread_timeout`, and resident memory stays flat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{watchdog, Mta, TestServer};
use milter_blocking::milter_core::client::Decision;
use milter_blocking::milter_core::frame::FrameDecoder;
use milter_blocking::milter_core::{Command, Connect, EnvelopeAddr, Family, Header, OptNeg};
use milter_blocking::{Context, HandlerResult, Milter, SocketSpec, Spec};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).unwrap().count()
}

fn threads() -> usize {
    count_dir("/proc/self/task")
}

fn fds() -> usize {
    count_dir("/proc/self/fd")
}

fn rss_kib() -> i64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[derive(Default)]
struct Counts {
    closes: AtomicUsize,
    aborts: AtomicUsize,
}

struct Counting(Arc<Counts>);

impl milter_blocking::Declaration for Counting {}

#[milter_blocking::handlers]
impl Milter for Counting {
    fn negotiate(&mut self, _offer: &milter_blocking::OptNeg, spec: &mut milter_blocking::Spec) {
        *spec = Spec::ALL_STAGES;
    }

    fn abort(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.0.aborts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&mut self, _: &mut Context<'_>) -> HandlerResult<()> {
        self.0.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The commands of one message, each with whether a message is open after it.
fn commands() -> Vec<(&'static str, Vec<u8>, bool)> {
    let enc = |c: Command<'_>| {
        let mut v = Vec::new();
        c.encode(&mut v);
        v
    };
    vec![
        ("optneg", enc(Command::OptNeg(OptNeg::POSTFIX_3)), false),
        (
            "connect",
            enc(Command::Connect(Connect {
                hostname: b"client.example",
                family: Family::Inet,
                port: 4444,
                address: b"192.0.2.44",
            })),
            false,
        ),
        ("helo", enc(Command::Helo(b"client.example")), false),
        (
            "mail",
            enc(Command::Mail(EnvelopeAddr::new(b"<a@x>"))),
            true,
        ),
        (
            "rcpt",
            enc(Command::Rcpt(EnvelopeAddr::new(b"<b@x>"))),
            true,
        ),
        ("data", enc(Command::Data), true),
        (
            "header",
            enc(Command::Header(Header {
                name: b"Subject",
                value: b"cut",
            })),
            true,
        ),
        ("eoh", enc(Command::Eoh), true),
        ("body", enc(Command::Body(b"body\r\n")), true),
        ("eom", enc(Command::Eom(b"")), false),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Close after reading the reply to the last command.
    AfterReply,
    /// Half-close right after writing, without reading any reply (the milter's
    /// replies are read and dropped until it closes).
    BeforeReply,
    /// Close right after writing, with the replies unread: the kernel answers
    /// them with a reset, which may also discard commands the milter had not
    /// read yet.
    Vanish,
    /// Read the replies, then reset the connection (SO_LINGER 0).
    Reset,
}

/// Runs commands `0..=last`, then disconnects the way `cut` says.
fn cut_after(spec: &SocketSpec, last: usize, cut: Cut) {
    let SocketSpec::Inet(a) = spec else {
        unreachable!()
    };
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cmds = commands();
    let mut d = FrameDecoder::new();
    for (_, bytes, _) in &cmds[..=last] {
        s.write_all(bytes).unwrap();
        if matches!(cut, Cut::BeforeReply | Cut::Vanish) {
            continue;
        }
        // Every command here is answered with exactly one packet.
        loop {
            if let Some(f) = d.next_frame().unwrap() {
                assert!(matches!(f.code, b'O' | b'c'), "reply {}", f.code as char);
                break;
            }
            let n = s.read(d.spare()).unwrap();
            assert!(n > 0, "milter closed early");
            d.commit(n);
        }
    }
    if matches!(cut, Cut::BeforeReply) {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    if matches!(cut, Cut::Reset) {
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(s);
}

/// One round: every cut point, every way of cutting, `reps` times. Returns
/// (sessions, sessions cut inside a message, vanished sessions cut at or after
/// MAIL: for those a reset may have discarded the last commands before the
/// milter read them, so whether it saw a message open is not known; and of
/// those, the ones cut inside a message).
fn round(spec: &SocketSpec, reps: usize) -> (usize, usize, usize, usize) {
    let cmds = commands();
    let (mut sessions, mut in_message, mut vanished, mut vanished_open) = (0, 0, 0, 0);
    for _ in 0..reps {
        for cut in [Cut::AfterReply, Cut::BeforeReply, Cut::Reset, Cut::Vanish] {
            for (last, (_, _, open)) in cmds.iter().enumerate() {
                cut_after(spec, last, cut);
                sessions += 1;
                in_message += usize::from(*open);
                if matches!(cut, Cut::Vanish) && last >= 3 {
                    vanished += 1;
                    vanished_open += usize::from(*open);
                }
            }
        }
    }
    (sessions, in_message, vanished, vanished_open)
}

#[test]
fn disconnects_after_each_command_leak_no_thread_descriptor_or_memory() {
    watchdog(Duration::from_secs(120), || {
        let counts = Arc::new(Counts::default());
        let server = {
            let counts = counts.clone();
            TestServer::with(
                |b| b.idle_thread_timeout(Duration::from_millis(100)),
                move || Counting(counts.clone()),
            )
        };
        // Warm up (allocator arenas, lazy statics), then take the baseline with
        // no connection and no worker thread.
        let mut m = Mta::connect(&server.spec);
        m.message_until_eom();
        assert_eq!(m.eom().decision, Decision::Continue);
        drop(m);
        let settled = |server: &TestServer| {
            let st = server.handle.stats();
            st.open == 0 && st.threads == 0
        };
        wait_until("the pool to empty", Duration::from_secs(10), || {
            settled(&server)
        });
        let (threads0, fds0) = (threads(), fds());
        let (mut sessions, mut in_message, mut vanished, mut vanished_open) = (1, 0, 0, 0);

        let mut rss = Vec::new();
        for r in 0..3 {
            let (s, m, v, vo) = round(&server.spec, 10);
            sessions += s;
            in_message += m;
            vanished += v;
            vanished_open += vo;
            // Every session ended with its handlers...
            wait_until("every close handler", Duration::from_secs(20), || {
                counts.closes.load(Ordering::SeqCst) == sessions
            });
            // A reset may discard the last commands before the milter read them:
            // a vanished session may end before its message began, or (when the
            // E was lost) inside it.
            let aborts = counts.aborts.load(Ordering::SeqCst);
            let exact = in_message - vanished_open;
            assert!(
                (exact..=exact + vanished).contains(&aborts),
                "{aborts} abort calls: {exact} sessions certainly cut inside a message, \
                 {vanished} vanished ones that may have been"
            );
            // ... and left nothing behind.
            wait_until(
                "connections and idle threads to go",
                Duration::from_secs(20),
                || settled(&server),
            );
            wait_until(
                "threads back to the baseline",
                Duration::from_secs(10),
                || threads() <= threads0,
            );
            wait_until(
                "descriptors back to the baseline",
                Duration::from_secs(10),
                || fds() <= fds0,
            );
            let now = rss_kib();
            eprintln!(
                "[disconnect] round {r}: {sessions} sessions, {in_message} cut inside a message; \
                 threads {} (baseline {threads0}), fds {} (baseline {fds0}), VmRSS {now} KiB",
                threads(),
                fds()
            );
            rss.push(now);
        }
        // The first round warms up; the later ones must not grow.
        let growth = rss[2] - rss[0];
        assert!(
            growth < 2048,
            "VmRSS grew by {growth} KiB over 800 sessions: {rss:?}"
        );
        // The server still works.
        let mut m = Mta::connect(&server.spec);
        m.message_until_eom();
        assert_eq!(m.eom().decision, Decision::Continue);
    });
}
