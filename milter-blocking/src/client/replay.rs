//! Replaying a recording: send its MTA side to a milter and compare the answers.

use super::error::ClientError;
use super::recording::{Direction, RecordedPacket, Recording, RecordingEntry};
use super::stream::{ConnectTarget, Stream};
use milter_core::frame::{Frame, FrameDecoder};
use milter_core::{ProtocolOpts, Reply, Stage};
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

/// How long [`replay`] waits for each answer.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Answers compared.
    pub answers: usize,
    /// Where the milter answered otherwise, in order.
    pub differences: Vec<ReplayDifference>,
    /// The recording line of the command after which the milter closed the
    /// connection while an answer was due (the replay stops there).
    pub closed_at: Option<usize>,
}

impl ReplayReport {
    /// Whether the milter answered as recorded, everywhere.
    pub fn is_same(&self) -> bool {
        self.differences.is_empty() && self.closed_at.is_none()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.differences {
            writeln!(f, "{d}")?;
        }
        if let Some(line) = self.closed_at {
            writeln!(
                f,
                "line {line}: the milter closed the connection instead of answering"
            )?;
        }
        if self.is_same() {
            write!(f, "same: {} answers compared, no difference", self.answers)
        } else {
            write!(
                f,
                "differs: {} answers compared, {} differences",
                self.answers,
                self.differences.len() + usize::from(self.closed_at.is_some())
            )
        }
    }
}

/// What differs in one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DifferenceKind {
    /// The negotiation answer (version, actions, protocol options, macro lists).
    Negotiation,
    /// The verdict (continue, accept, reject, tempfail, discard, skip, a `y` reply
    /// of another kind, ...).
    Verdict,
    /// Both answered with a `y` reply, with different texts.
    ReplyText,
    /// The modifications at end of message (headers, recipients, sender, body,
    /// quarantine), in order.
    Modifications,
}

impl DifferenceKind {
    /// A short name: `negotiation`, `verdict`, `reply text`, `modifications`.
    pub fn name(self) -> &'static str {
        match self {
            DifferenceKind::Negotiation => "negotiation",
            DifferenceKind::Verdict => "verdict",
            DifferenceKind::ReplyText => "reply text",
            DifferenceKind::Modifications => "modifications",
        }
    }
}

/// One difference between the recorded and the replayed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayDifference {
    /// The recording line of the command answered (the last MTA packet before the
    /// answer).
    pub line: usize,
    /// That command's code.
    pub command: u8,
    /// What differs.
    pub kind: DifferenceKind,
    /// The recorded packets of that kind (the verdict, or the modifications).
    pub recorded: Vec<Reply>,
    /// The replayed packets of that kind.
    pub replayed: Vec<Reply>,
}

impl fmt::Display for ReplayDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |r: &[Reply]| {
            if r.is_empty() {
                "nothing".to_owned()
            } else {
                r.iter().map(describe).collect::<Vec<_>>().join(", ")
            }
        };
        write!(
            f,
            "line {}, {}: {} differs: recorded {}; replayed {}",
            self.line,
            command_name(self.command),
            self.kind.name(),
            list(&self.recorded),
            list(&self.replayed)
        )
    }
}

/// Why a replay could not be run to its end.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// The recording cannot be replayed from this line on (a packet that was not
    /// recorded, a stream that did not frame, an answer nobody asked for).
    NotReplayable {
        /// The recording line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Talking to the milter failed: connect, I/O, timeout, or a packet that does
    /// not decode ([`ClientError::kind`] says which).
    Milter(ClientError),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::NotReplayable { line, reason } => {
                write!(f, "recording line {line} cannot be replayed: {reason}")
            }
            ReplayError::Milter(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Milter(e) => Some(e),
            ReplayError::NotReplayable { .. } => None,
        }
    }
}

impl From<ClientError> for ReplayError {
    fn from(e: ClientError) -> Self {
        ReplayError::Milter(e)
    }
}

/// Replays `recording` against the milter at `target`, waiting up to
/// [`REPLAY_TIMEOUT`] for each answer.
///
/// [`replay`] connects to a milter, sends the recorded MTA packets byte for byte,
/// in the recorded groups (what the MTA sent between two answers goes in one
/// write), reads the milter's answer wherever the recording has one, and compares
/// it with the recorded answer. A [`ReplayReport`] lists where they differ:
/// the negotiation, the verdict, the reply text of a `y` answer, and the
/// modifications at end of message. Progress packets are not compared (their
/// number depends on timing).
///
/// An answer is read until its last packet: at end of message until a packet that
/// is neither a modification nor progress; elsewhere until one that is not
/// progress. Where the recording has no answer (macros, abort, a stage without
/// reply) nothing is awaited; a milter that answers there anyway shows as a
/// difference at the next answer. Where the milter now negotiates a stage away
/// (skip) it is not sent, as an MTA would not send it; where it now negotiates no
/// reply for a stage, no answer is awaited; either way a recorded answer there
/// shows as a difference with nothing replayed.
///
/// ```no_run
/// use milter_blocking::client::{replay, Recording};
///
/// // A session recorded in production with `milter-check record`:
/// let text = std::fs::read_to_string("tests/data/spam-session.milter-recording")?;
/// let recording = Recording::parse(&text)?;
/// // The milter under test, started by the test on a free port:
/// let report = replay(&recording, "inet:7357@127.0.0.1")?;
/// assert!(report.is_same(), "{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn replay(
    recording: &Recording,
    target: impl ConnectTarget,
) -> Result<ReplayReport, ReplayError> {
    replay_with_timeout(recording, target, REPLAY_TIMEOUT)
}

/// [`replay`] with another limit for connecting and for each answer.
pub fn replay_with_timeout(
    recording: &Recording,
    target: impl ConnectTarget,
    timeout: Duration,
) -> Result<ReplayReport, ReplayError> {
    let exchanges = exchanges(recording)?;
    let spec = target.to_spec()?;
    let mut stream = Stream::connect(&spec, timeout).map_err(|source| ClientError::Connect {
        spec: spec.to_string(),
        source,
    })?;
    let io = |e: io::Error, line: usize| {
        ReplayError::Milter(ClientError::from_io(
            e,
            &format!("replaying line {line}"),
            Some(timeout),
        ))
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io(e, 1))?;
    let mut report = ReplayReport {
        answers: 0,
        differences: Vec::new(),
        closed_at: None,
    };
    let mut decoder = FrameDecoder::new();
    let mut wbuf = Vec::new();
    // What the milter asked for in its negotiation answer during this replay.
    let mut live = ProtocolOpts::empty();
    for ex in &exchanges {
        wbuf.clear();
        for p in &ex.sent {
            // An MTA does not send a stage (or its macros) the milter negotiated
            // away.
            let stage_code = match p.code {
                b'D' => p.payload.first().copied().unwrap_or(0),
                c => c,
            };
            if !negotiated_away(live, stage_code, Stage::skip_flag) {
                milter_core::frame::encode_frame(&mut wbuf, p.code, &[&p.payload]);
            }
        }
        if let Err(e) = stream.write_all(&wbuf) {
            if ex.recorded.is_empty() || is_closed(&e) {
                // The milter may close after quit (or instead of answering).
                if !ex.recorded.is_empty() {
                    report.closed_at = Some(ex.line);
                }
                break;
            }
            return Err(io(e, ex.line));
        }
        if ex.recorded.is_empty() {
            continue;
        }
        if negotiated_away(live, ex.command, Stage::skip_flag)
            || negotiated_away(live, ex.command, Stage::no_reply_flag)
        {
            // No answer is due this time: the difference is that there is none.
            report.answers += 1;
            compare(ex, &[], &mut report.differences);
            continue;
        }
        match read_answer(&mut stream, &mut decoder, ex, timeout) {
            Ok(Some(replayed)) => {
                if let Some(Reply::OptNeg(o)) = replayed.first() {
                    live = o.protocol;
                }
                report.answers += 1;
                compare(ex, &replayed, &mut report.differences);
            }
            Ok(None) => {
                report.closed_at = Some(ex.line);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    stream.shutdown();
    Ok(report)
}

/// Whether the command `code` belongs to a stage whose `flag` (skip or no-reply)
/// the milter set in its negotiation answer.
fn negotiated_away(live: ProtocolOpts, code: u8, flag: fn(Stage) -> Option<ProtocolOpts>) -> bool {
    Stage::ALL
        .into_iter()
        .find(|s| s.code() == code)
        .and_then(flag)
        .is_some_and(|f| live.contains(f))
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// What the MTA sent between two answers, and the recorded answer.
#[derive(Debug)]
struct Exchange<'a> {
    sent: Vec<&'a RecordedPacket>,
    /// The line and code of the last packet sent.
    line: usize,
    command: u8,
    recorded: Vec<Reply>,
}

/// Groups the recording into exchanges.
fn exchanges(rec: &Recording) -> Result<Vec<Exchange<'_>>, ReplayError> {
    let mut out: Vec<Exchange<'_>> = Vec::new();
    for (i, entry) in rec.entries.iter().enumerate() {
        let line = i + 2;
        let not = |reason: &str| ReplayError::NotReplayable {
            line,
            reason: reason.to_owned(),
        };
        match entry {
            RecordingEntry::Packet(p) if p.direction == Direction::ToMilter => {
                match out.last_mut() {
                    Some(ex) if ex.recorded.is_empty() => {
                        ex.sent.push(p);
                        ex.line = line;
                        ex.command = p.code;
                    }
                    _ => out.push(Exchange {
                        sent: vec![p],
                        line,
                        command: p.code,
                        recorded: Vec::new(),
                    }),
                }
            }
            RecordingEntry::Packet(p) => {
                let ex = out
                    .last_mut()
                    .ok_or_else(|| not("the milter spoke before the MTA sent anything"))?;
                let reply = Reply::decode(Frame {
                    code: p.code,
                    payload: &p.payload,
                })
                .map_err(|e| not(&format!("the recorded answer does not decode: {e}")))?;
                ex.recorded.push(reply);
            }
            RecordingEntry::Oversized { .. } => {
                return Err(not(
                    "the packet was over the recorder's limit and not recorded",
                ))
            }
            RecordingEntry::Unframed { .. } => {
                return Err(not("the stream did not frame as milter packets"))
            }
            RecordingEntry::Negotiated(_) | RecordingEntry::End { .. } => {}
        }
    }
    Ok(out)
}

/// Whether `reply` is the last packet of an answer to `command`.
fn ends_answer(command: u8, reply: &Reply) -> bool {
    match reply {
        Reply::Progress => false,
        _ if command == Stage::Eom.code() => is_verdict(reply),
        _ => true,
    }
}

/// A packet that is neither a modification nor progress.
fn is_verdict(reply: &Reply) -> bool {
    !matches!(reply, Reply::Progress)
        && milter_core::Modification::from_reply(reply.clone()).is_none()
}

/// Reads one answer; `None` if the milter closed the connection first.
fn read_answer(
    stream: &mut Stream,
    decoder: &mut FrameDecoder,
    ex: &Exchange<'_>,
    timeout: Duration,
) -> Result<Option<Vec<Reply>>, ReplayError> {
    let command = ex.command;
    let during = || format!("the answer to line {} ({})", ex.line, command_name(command));
    let mut answer = Vec::new();
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                let reply = Reply::decode(frame).map_err(|e| ClientError::Protocol {
                    during: during(),
                    reason: e.to_string(),
                    bytes: Vec::new(),
                })?;
                let end = ends_answer(command, &reply);
                answer.push(reply);
                if end {
                    return Ok(Some(answer));
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ClientError::Protocol {
                    during: during(),
                    reason: e.to_string(),
                    bytes: Vec::new(),
                }
                .into())
            }
        }
        let spare = decoder.spare();
        match stream.read(spare) {
            Ok(0) => return Ok(None),
            Ok(n) => decoder.commit(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) => return Ok(None),
            Err(e) => return Err(ClientError::from_io(e, &during(), Some(timeout)).into()),
        }
    }
}

/// Splits an answer into its verdict packets and its modifications (progress
/// left out).
fn split(answer: &[Reply]) -> (Vec<Reply>, Vec<Reply>) {
    let mut verdict = Vec::new();
    let mut mods = Vec::new();
    for r in answer {
        if matches!(r, Reply::Progress) {
            continue;
        }
        if is_verdict(r) {
            verdict.push(r.clone());
        } else {
            mods.push(r.clone());
        }
    }
    (verdict, mods)
}

fn compare(ex: &Exchange<'_>, replayed: &[Reply], out: &mut Vec<ReplayDifference>) {
    let (rv, rm) = split(&ex.recorded);
    let (pv, pm) = split(replayed);
    let diff = |kind, recorded, replayed| ReplayDifference {
        line: ex.line,
        command: ex.command,
        kind,
        recorded,
        replayed,
    };
    if rv != pv {
        let kind = match (rv.as_slice(), pv.as_slice()) {
            ([Reply::OptNeg(_)], [Reply::OptNeg(_)]) => DifferenceKind::Negotiation,
            ([Reply::ReplyCode(a)], [Reply::ReplyCode(b)]) if a.first() == b.first() => {
                DifferenceKind::ReplyText
            }
            _ => DifferenceKind::Verdict,
        };
        out.push(diff(kind, rv, pv));
    }
    if rm != pm {
        out.push(diff(DifferenceKind::Modifications, rm, pm));
    }
}

/// The name of a command code, for reports.
pub(crate) fn command_name(code: u8) -> String {
    let name = match code {
        b'O' => "negotiation",
        b'A' => "abort",
        b'Q' => "quit",
        b'K' => "quit-new-connection",
        b'D' => "macros",
        _ => match Stage::ALL.into_iter().find(|s| s.code() == code) {
            Some(s) => s.name(),
            None => "unknown command",
        },
    };
    format!("{name} ({})", char::from(code).escape_default())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace("\r\n", " / ")
}

/// One reply in a line of text.
fn describe(r: &Reply) -> String {
    match r {
        Reply::OptNeg(o) => format!(
            "negotiation version {} actions 0x{:x} protocol 0x{:x}{}",
            o.version,
            o.actions.bits(),
            o.protocol.bits(),
            o.symbol_lists
                .iter()
                .map(|l| format!(" macros[{}]={:?}", l.index, lossy(&l.macros)))
                .collect::<String>()
        ),
        Reply::Continue => "continue".into(),
        Reply::Accept => "accept".into(),
        Reply::Reject => "reject".into(),
        Reply::Tempfail => "tempfail".into(),
        Reply::Discard => "discard".into(),
        Reply::Skip => "skip".into(),
        Reply::Progress => "progress".into(),
        Reply::Shutdown => "shutdown".into(),
        Reply::ReplyCode(t) => format!("reply {:?}", lossy(t)),
        Reply::AddHeader { name, value } => {
            format!("add header {}: {:?}", lossy(name), lossy(value))
        }
        Reply::InsertHeader { index, name, value } => {
            format!(
                "insert header [{index}] {}: {:?}",
                lossy(name),
                lossy(value)
            )
        }
        Reply::ChangeHeader { index, name, value } => {
            format!("change header {}[{index}]: {:?}", lossy(name), lossy(value))
        }
        Reply::AddRcpt(r) => format!("add rcpt {}", lossy(r)),
        Reply::AddRcptWithArgs { rcpt, args } => format!(
            "add rcpt {} {}",
            lossy(rcpt),
            lossy(args.as_deref().unwrap_or_default())
        ),
        Reply::DeleteRcpt(r) => format!("delete rcpt {}", lossy(r)),
        Reply::ChangeFrom { from, args } => format!(
            "change from {} {}",
            lossy(from),
            lossy(args.as_deref().unwrap_or_default())
        ),
        Reply::ReplaceBody(b) => format!("replace body ({} bytes)", b.len()),
        Reply::Quarantine(q) => format!("quarantine {:?}", lossy(q)),
        other => format!("packet {:?}", char::from(other.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(text: &str) -> Recording {
        let head = "milter-recording 1 mta=a milter=b started=0.000000\n";
        Recording::parse(&format!("{head}{text}")).unwrap()
    }

    #[test]
    fn groups_commands_until_an_answer() {
        let r = rec("> 0.000001 D C\n> 0.000001 C h\\04\\0\\0\\x19127.0.0.1\\0\n< 0.000002 c\n\
                     > 0.000003 A\n> 0.000003 E\n< 0.000004 h X\\0y\\0\n< 0.000004 p\n< 0.000004 c\n");
        let ex = exchanges(&r).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!((ex[0].sent.len(), ex[0].line, ex[0].command), (2, 3, b'C'));
        assert_eq!((ex[1].sent.len(), ex[1].line, ex[1].command), (2, 6, b'E'));
        assert_eq!(ex[1].recorded.len(), 3);
    }

    #[test]
    fn an_unrecorded_packet_cannot_be_replayed() {
        let r = rec("> 0.000001 E\n>! 0.000002 B 2000000\n");
        assert!(matches!(
            exchanges(&r),
            Err(ReplayError::NotReplayable { line: 3, .. })
        ));
        let r = rec("< 0.000001 c\n");
        assert!(matches!(
            exchanges(&r),
            Err(ReplayError::NotReplayable { line: 2, .. })
        ));
    }

    #[test]
    fn differences_are_classified() {
        let r = rec("> 0.000001 E\n< 0.000002 h X\\0y\\0\n< 0.000002 y 550 no\\0\n");
        let ex = exchanges(&r).unwrap();
        let mut out = Vec::new();
        compare(
            &ex[0],
            &[Reply::Progress, Reply::ReplyCode(b"550 other".to_vec())],
            &mut out,
        );
        let kinds: Vec<_> = out.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [DifferenceKind::ReplyText, DifferenceKind::Modifications]
        );
        assert_eq!(
            out[0].to_string(),
            "line 2, eom (E): reply text differs: recorded reply \"550 no\"; replayed reply \"550 other\""
        );
        out.clear();
        compare(
            &ex[0],
            &[
                Reply::AddHeader {
                    name: b"X".to_vec(),
                    value: b"y".to_vec(),
                },
                Reply::Continue,
            ],
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, DifferenceKind::Verdict);
    }

    #[test]
    fn progress_ends_no_answer_and_modifications_end_only_outside_eom() {
        assert!(!ends_answer(b'E', &Reply::Progress));
        assert!(!ends_answer(b'E', &Reply::Quarantine(b"q".to_vec())));
        assert!(ends_answer(b'E', &Reply::Accept));
        assert!(!ends_answer(b'R', &Reply::Progress));
        assert!(ends_answer(b'R', &Reply::Quarantine(b"q".to_vec())));
    }
}
