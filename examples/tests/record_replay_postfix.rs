//! A real Postfix session recorded through the recording proxy of
//! `milter_blocking::client`, then replayed against the same milter (no difference)
//! and against changed ones (the difference named).
//!
//! Needs root and the Debian package `postfix`; skipped (or failing under `CI=true`)
//! without.

mod support;
#[path = "../../milter-blocking/tests/data/tagger.rs"]
mod tagger;

use milter_blocking::client::{replay, DifferenceKind, Direction, Recording, ReplayReport};
use milter_blocking::{Milter, Server, ServerHandle, SocketSpec};
use std::time::Duration;
use support::milter_process::missing_prerequisite;
use support::postfix;
use support::recordings::through_postfix;
use tagger::{EomOnlyTagger, Tagger};

struct RunningMilter {
    spec: SocketSpec,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), milter_blocking::ServerError>>>,
}

impl Drop for RunningMilter {
    fn drop(&mut self) {
        self.handle.shutdown(Duration::from_secs(2));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(tag: &'static str) -> RunningMilter {
    start_milter(move || Tagger { tag })
}

fn start_milter<M: Milter + 'static>(
    factory: impl Fn() -> M + Send + Sync + 'static,
) -> RunningMilter {
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .expect("bind")
        .build(factory)
        .expect("server");
    let spec = server.local_spec();
    let handle = server.handle();
    let thread = Some(std::thread::spawn(move || server.run()));
    RunningMilter {
        spec,
        handle,
        thread,
    }
}

const MESSAGE: &str =
    "From: a@example.test\r\nTo: b@example.test\r\nSubject: recorded\r\n\r\nbody line\r\n";

fn replayed(rec: &Recording, milter: &RunningMilter) -> ReplayReport {
    replay(rec, &milter.spec).unwrap_or_else(|e| panic!("replay: {e}\n{rec}"))
}

#[test]
fn a_postfix_session_recorded_through_the_proxy_replays_against_the_same_and_changed_milters() {
    const TEST: &str =
        "a_postfix_session_recorded_through_the_proxy_replays_against_the_same_and_changed_milters";
    if let Some(reason) = postfix::unavailable() {
        missing_prerequisite(TEST, &reason);
        return;
    }
    let one = start("one");
    let run = through_postfix(&one.spec, MESSAGE.as_bytes());
    assert!(run.data_reply.is_positive(), "{:?}", run.data_reply);
    assert_eq!(run.delivered[0].header_values("X-Tag"), [" one"]);
    let rec = run.recording;

    // What Postfix sent is all there, in its order, with the milter's answers.
    let codes: String = rec
        .packets()
        .filter(|p| p.direction == Direction::ToMilter && p.code != b'D')
        .map(|p| char::from(p.code))
        .collect();
    assert!(
        // HELO, end of headers and body are negotiated away (no handlers); the
        // headers are the message's three and the two Postfix adds.
        codes.starts_with("OCMRLLLLLE") && codes.ends_with('Q'),
        "{codes}\n{rec}"
    );
    assert!(rec.negotiated().is_some(), "{rec}");
    assert_eq!(Recording::parse(&rec.to_string()).as_ref(), Ok(&rec));

    let same = replayed(&rec, &one);
    assert!(same.is_same(), "{same}\n{rec}");

    let two = start("two");
    let report = replayed(&rec, &two);
    let kinds: Vec<_> = report
        .differences
        .iter()
        .map(|d| (d.kind, d.command))
        .collect();
    assert_eq!(
        kinds,
        [(DifferenceKind::Modifications, b'E')],
        "{report}\n{rec}"
    );

    // Changed to negotiate every stage before end of message away: they are not
    // sent and their recorded answers show as differences.
    let blind = start_milter(|| EomOnlyTagger);
    let report = replayed(&rec, &blind);
    let kinds: Vec<_> = report
        .differences
        .iter()
        .map(|d| (d.kind, d.command))
        .collect();
    let mut expected = vec![(DifferenceKind::Negotiation, b'O')];
    for command in *b"CMRLLLLL" {
        expected.push((DifferenceKind::Verdict, command));
    }
    assert_eq!(kinds, expected, "{report}\n{rec}");

    let reject = start("reject");
    let report = replayed(&rec, &reject);
    let kinds: Vec<_> = report.differences.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [DifferenceKind::Verdict, DifferenceKind::Modifications],
        "{report}"
    );
}
