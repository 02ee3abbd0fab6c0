//! Message capture through a real server: a large body round-trips byte for
//! byte while the memory held stays within the budget.
#![allow(clippy::unwrap_used)]

use milter_blocking::capture::{CaptureBudget, CaptureOptions, MessageCapture};
use milter_blocking::client::{Client, Envelope, Message};
use milter_blocking::{Context, EomContext, HandlerResult, Header, Milter, Server, Status};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// 256 KiB for all connections of this test.
static BUDGET: CaptureBudget = CaptureBudget::new(256 * 1024);
/// The most the budget held at any point.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// A capture on [`BUDGET`], reset per message by the derive.
#[derive(Debug)]
struct Capture(MessageCapture);

impl Default for Capture {
    fn default() -> Self {
        Capture(MessageCapture::new(
            CaptureOptions::default().budget(&BUDGET),
        ))
    }
}

#[derive(Milter, Default)]
#[milter(options(header_leading_space))]
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    #[milter(per_message)]
    capture: Capture,
}

#[milter_blocking::handlers]
impl Milter for Recorder {
    fn header(&mut self, ctx: &mut Context<'_>, h: &Header<'_>) -> HandlerResult {
        self.capture.0.header(ctx, h)?;
        Ok(Status::Continue)
    }

    fn body(&mut self, _ctx: &mut Context<'_>, chunk: &[u8]) -> HandlerResult {
        self.capture.0.body(chunk)?;
        PEAK.fetch_max(BUDGET.used(), Ordering::Relaxed);
        Ok(Status::Continue)
    }

    fn eom(&mut self, _ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        let mut bytes = Vec::new();
        self.capture.0.reader().read_to_end(&mut bytes)?;
        self.seen.lock().unwrap().push(bytes);
        Ok(Status::Continue)
    }
}

#[test]
fn a_large_body_round_trips_within_the_budget() {
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let s = Arc::clone(&seen);
    let server = Server::builder()
        .listen("inet:0@127.0.0.1")
        .unwrap()
        .build(move || Recorder {
            seen: Arc::clone(&s),
            capture: Capture::default(),
        })
        .unwrap();
    let spec = server.local_spec().to_string();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    // Folded, tab-led, space-free and doubly spaced headers; a 4 MiB body with
    // every byte value but bare CR/LF.
    let mut raw = b"From: a@example.com\r\nSubject:  two\r\n spaces, folded\r\n\
X-Tab:\tvalue\r\nX-Tight:tight\r\nTo: b@example.org\r\n\r\n"
        .to_vec();
    let line: Vec<u8> = (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
    while raw.len() < 4 * 1024 * 1024 {
        raw.extend_from_slice(&line);
        raw.extend_from_slice(b"\r\n");
    }
    let large = Message::parse(&raw);
    let small = Message::parse(b"From: c@example.com\r\n\r\nsmall\r\n");
    let envelope = Envelope::new("<a@example.com>").rcpt("<b@example.org>");

    let mut client = Client::open(spec.as_str()).unwrap();
    for message in [&large, &small] {
        let t = client.send_message(&envelope, message).unwrap();
        assert!(t.verdict.is_delivered(), "{:?}", t.verdict);
    }
    client.quit().unwrap();
    handle.shutdown(Duration::from_secs(5));
    thread.join().unwrap().unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0] == raw,
        "the large message changed in the round trip"
    );
    assert_eq!(seen[1], b"From: c@example.com\r\n\r\nsmall\r\n");
    let peak = PEAK.load(Ordering::Relaxed);
    // The budget, plus the header blocks (charged whatever the limit).
    assert!(peak <= 256 * 1024 + 4096, "peak {peak}");
    assert!(peak > 128 * 1024, "peak {peak}: the budget was not used");
    assert_eq!(BUDGET.used(), 0, "memory not returned after the messages");
}
