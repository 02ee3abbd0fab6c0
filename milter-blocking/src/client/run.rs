//! Sending a whole message through every stage, as an MTA does.

use super::eom::{Applied, ApplyRules, EomResult};
use super::message::{postfix_header_cut, Address, Envelope, Message};
use super::{Client, ClientError, Decision, Profile, Response};
use milter_core::{ProtocolOpts, Stage};
use std::fmt;

/// One command sent by [`Client::send_message`] and its response.
///
/// ```
/// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
/// # #[derive(Milter, Default)]
/// # #[milter(actions(add_header))]
/// # struct Judge;
/// # #[handlers]
/// # impl Milter for Judge {
/// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
/// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
/// #         if from.address == b"<spammer@example.org>" {
/// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
/// #         }
/// #         Ok(Status::Continue)
/// #     }
/// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
/// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
/// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
/// #         ctx.add_header("X-Checked", "yes")?;
/// #         Ok(Status::Continue)
/// #     }
/// # }
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// use milter_blocking::client::{Client, Envelope, Message};
/// use milter_blocking::Stage;
/// let mut client = Client::open(&spec)?;
/// let envelope = Envelope::new("alice@example.org").rcpt("bob@example.com");
/// let transcript = client.send_message(&envelope, &Message::parse(b"Subject: hi\r\n\r\nHello.\r\n"))?;
/// for step in &transcript.steps {
///     println!("{} #{}: {}", step.stage, step.index, step.response);
/// }
/// assert_eq!(transcript.steps.last().map(|s| s.stage), Some(Stage::Eom));
/// client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// Which one of the stage: the recipient's index in the envelope, the header's
    /// index in the message, the body chunk's number (from 0); 0 for the others.
    pub index: usize,
    /// What the milter answered.
    pub response: Response,
}

/// The outcome of a message as the SMTP client would see it.
///
/// ```
/// use milter_blocking::client::Verdict;
/// use milter_blocking::Stage;
/// let v = Verdict::Reject { stage: Stage::Rcpt, reply: Some(b"550 5.1.1 No such user".to_vec()) };
/// assert_eq!(v.name(), "reject");
/// assert!(!v.is_delivered());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// The message is delivered (with the modifications, if the milter continued
    /// through end of message).
    Accept,
    /// The message is accepted and then held (Postfix) or quarantined (Sendmail),
    /// with this reason.
    Quarantine(Vec<u8>),
    /// The message (or, at connect or HELO, the session) is refused permanently.
    Reject {
        /// Where.
        stage: Stage,
        /// The milter's SMTP reply text, if it gave one.
        reply: Option<Vec<u8>>,
    },
    /// The message (or session) is refused temporarily.
    Tempfail {
        /// Where.
        stage: Stage,
        /// The milter's SMTP reply text, if it gave one.
        reply: Option<Vec<u8>>,
    },
    /// The message is accepted and silently dropped.
    Discard {
        /// Where.
        stage: Stage,
    },
    /// The milter asked the MTA to shut the SMTP session down (`4`, 421).
    Shutdown {
        /// Where.
        stage: Stage,
    },
}

impl Verdict {
    /// A short name: `accept`, `quarantine`, `reject`, `tempfail`, `discard`,
    /// `shutdown`.
    ///
    /// ```
    /// use milter_blocking::client::Verdict;
    /// assert_eq!(Verdict::Accept.name(), "accept");
    /// ```
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Quarantine(_) => "quarantine",
            Verdict::Reject { .. } => "reject",
            Verdict::Tempfail { .. } => "tempfail",
            Verdict::Discard { .. } => "discard",
            Verdict::Shutdown { .. } => "shutdown",
        }
    }

    /// Whether the message is queued (accepted, possibly quarantined).
    ///
    /// ```
    /// use milter_blocking::client::Verdict;
    /// use milter_blocking::Stage;
    /// assert!(Verdict::Quarantine(b"review".to_vec()).is_delivered());
    /// assert!(!Verdict::Discard { stage: Stage::Eom }.is_delivered());
    /// ```
    pub fn is_delivered(&self) -> bool {
        matches!(self, Verdict::Accept | Verdict::Quarantine(_))
    }

    /// The verdict a final decision at `stage` means (`None` for continue and
    /// skip).
    ///
    /// ```
    /// use milter_blocking::client::{Decision, Verdict};
    /// use milter_blocking::Stage;
    /// assert_eq!(Verdict::from_decision(Stage::Mail, &Decision::Continue), None);
    /// assert_eq!(
    ///     Verdict::from_decision(Stage::Mail, &Decision::Reply(b"451 4.7.1 Later".to_vec())),
    ///     Some(Verdict::Tempfail { stage: Stage::Mail, reply: Some(b"451 4.7.1 Later".to_vec()) })
    /// );
    /// ```
    pub fn from_decision(stage: Stage, d: &Decision) -> Option<Verdict> {
        Some(match d {
            Decision::Continue | Decision::Skip => return None,
            Decision::Accept => Verdict::Accept,
            Decision::Reject => Verdict::Reject { stage, reply: None },
            Decision::Tempfail => Verdict::Tempfail { stage, reply: None },
            Decision::Reply(t) if t.first() == Some(&b'5') => Verdict::Reject {
                stage,
                reply: Some(t.clone()),
            },
            Decision::Reply(t) => Verdict::Tempfail {
                stage,
                reply: Some(t.clone()),
            },
            Decision::Discard => Verdict::Discard { stage },
            Decision::Shutdown => Verdict::Shutdown { stage },
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Quarantine(r) => write!(f, "quarantine ({})", String::from_utf8_lossy(r)),
            Verdict::Reject { stage, reply } | Verdict::Tempfail { stage, reply } => {
                write!(f, "{} at {stage}", self.name())?;
                if let Some(r) = reply {
                    write!(f, ": {}", String::from_utf8_lossy(r).replace("\r\n", " / "))?;
                }
                Ok(())
            }
            Verdict::Discard { stage } | Verdict::Shutdown { stage } => {
                write!(f, "{} at {stage}", self.name())
            }
        }
    }
}

/// What [`Client::send_message`] did: every step, the end-of-message result (if
/// the message got that far) and the verdict.
///
/// ```
/// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
/// # #[derive(Milter, Default)]
/// # #[milter(actions(add_header))]
/// # struct Judge;
/// # #[handlers]
/// # impl Milter for Judge {
/// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
/// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
/// #         if from.address == b"<spammer@example.org>" {
/// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
/// #         }
/// #         Ok(Status::Continue)
/// #     }
/// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
/// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
/// #     }
/// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
/// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
/// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
/// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
/// #         ctx.add_header("X-Checked", "yes")?;
/// #         Ok(Status::Continue)
/// #     }
/// # }
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// use milter_blocking::client::{Client, Envelope, Message, Verdict};
/// let mut client = Client::open(&spec)?;
/// let envelope = Envelope::new("alice@example.org")
///     .rcpt("nobody@example.com")
///     .rcpt("bob@example.com");
/// let t = client.send_message(&envelope, &Message::parse(b"Subject: hi\r\n\r\nHello.\r\n"))?;
/// assert_eq!(t.verdict, Verdict::Accept);
/// assert_eq!(t.accepted_rcpts, [1]); // nobody@ was refused, the message went on
/// assert!(t.eom.as_ref().is_some_and(|e| e.has_added_header("X-Checked", "yes")));
/// client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The commands sent, in order, with their responses.
    pub steps: Vec<Step>,
    /// The end-of-message result, if end of message was sent.
    pub eom: Option<EomResult>,
    /// The outcome.
    pub verdict: Verdict,
    /// The indexes (in the envelope) of the recipients the milter did not refuse.
    pub accepted_rcpts: Vec<usize>,
    /// Whether an abort (`A`) was sent after the transaction.
    pub aborted: bool,
}

impl Transcript {
    fn new() -> Transcript {
        Transcript {
            steps: Vec::new(),
            eom: None,
            verdict: Verdict::Accept,
            accepted_rcpts: Vec::new(),
            aborted: false,
        }
    }

    fn push(&mut self, stage: Stage, index: usize, response: &Response) {
        self.steps.push(Step {
            stage,
            index,
            response: response.clone(),
        });
    }

    /// The response of the first step of `stage`.
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// use milter_blocking::client::{Client, Envelope, Message};
    /// use milter_blocking::Stage;
    /// let mut client = Client::open(&spec)?;
    /// let envelope = Envelope::new("spammer@example.org").rcpt("bob@example.com");
    /// let t = client.send_message(&envelope, &Message::parse(b"Subject: buy\r\n\r\nnow\r\n"))?;
    /// assert_eq!(t.response(Stage::Mail).and_then(|r| r.reply_code()), Some(550));
    /// assert_eq!(t.response(Stage::Data), None); // never got that far
    /// client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn response(&self, stage: Stage) -> Option<&Response> {
        self.steps
            .iter()
            .find(|s| s.stage == stage)
            .map(|s| &s.response)
    }

    /// The message and envelope the MTA would queue, `None` if it would not queue
    /// any: the accepted recipients only, and the end-of-message modifications
    /// applied with `rules` (see [`EomResult::apply_with`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// use milter_blocking::client::{ApplyRules, Client, Envelope, Message};
    /// let mut client = Client::open(&spec)?;
    /// let envelope = Envelope::new("alice@example.org").rcpt("bob@example.com");
    /// let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// let t = client.send_message(&envelope, &message)?;
    /// let queued = t.delivered(ApplyRules::Postfix, &message, &envelope).expect("delivered");
    /// assert_eq!(queued.message.header("X-Checked"), Some(&b"yes"[..]));
    /// client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delivered(
        &self,
        rules: ApplyRules,
        message: &Message,
        envelope: &Envelope,
    ) -> Option<Applied> {
        if !self.verdict.is_delivered() {
            return None;
        }
        let mut env = envelope.clone();
        env.recipients = self
            .accepted_rcpts
            .iter()
            .filter_map(|&i| envelope.recipients.get(i).cloned())
            .collect::<Vec<Address>>();
        Some(match &self.eom {
            Some(eom) => eom.apply_with(rules, message, &env),
            None => Applied {
                message: message.clone(),
                envelope: env,
                quarantine: None,
            },
        })
    }
}

impl Client {
    /// Sends a whole message through every stage, as the imitated MTA would.
    ///
    /// - If no session is open (no [`Client::connect`] yet, or after
    ///   [`Client::quit_new_connection`]): connect with the envelope's client, then
    ///   HELO if the envelope has one. A final decision there applies to the whole
    ///   session: this and every later message on the session get that verdict
    ///   without anything being sent.
    /// - MAIL, then each RCPT: a refused recipient is left out and the message goes
    ///   on; accept at RCPT ends the milter's part (the remaining recipients are
    ///   accepted without asking it); when every recipient is refused the message
    ///   is refused.
    /// - DATA, each header (unfolded as Postfix sends them: one leading space
    ///   removed unless `HDR_LEADSPC` was negotiated, folds as LF + white space;
    ///   the Postfix profiles cut a header to 60,000 bytes as Postfix does, see
    ///   [`Message::as_postfix_stores_it`]),
    ///   end of headers, the body in chunks of at most 65535 bytes (skip stops the
    ///   body), end of message.
    /// - The first final decision ends the message. Then the Postfix profiles send
    ///   abort (as Postfix does after every transaction) unless Postfix closed the
    ///   connection (a shutdown); Stalwart never does; the others send abort only
    ///   if the milter is still inside the message (all recipients refused, or a
    ///   discard at RCPT), as Sendmail does.
    /// - Postfix: a quarantine before end of message holds the message: no more
    ///   envelope commands are sent (the rest of the recipients are accepted
    ///   without asking), the content still is, and the verdict is quarantine
    ///   unless end of message refuses the message.
    /// - Stalwart: the run of a milter configured at the DATA stage on a
    ///   connection of its own (so only on a fresh client): accept before end of
    ///   message means continue, a refused recipient refuses the message, header
    ///   values are trimmed, no ESMTP arguments, no abort.
    ///
    /// Errors end the exchange; the steps so far are lost with it.
    ///
    /// ```no_run
    /// use milter_blocking::client::{Client, Envelope, Message, Verdict};
    /// let mut c = Client::open("unix:/run/milter.sock")?;
    /// let msg = Message::parse(b"Subject: hi\r\n\r\nbody\r\n");
    /// let t = c.send_message(&Envelope::new("a@example.org").rcpt("b@example.com"), &msg)?;
    /// assert_eq!(t.verdict, Verdict::Accept);
    /// # Ok::<(), milter_blocking::client::ClientError>(())
    /// ```
    ///
    /// ```
    /// # use milter_blocking::{handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter, Status};
    /// # #[derive(Milter, Default)]
    /// # #[milter(actions(add_header))]
    /// # struct Judge;
    /// # #[handlers]
    /// # impl Milter for Judge {
    /// #     fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
    /// #         if host == b"reject.example" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn helo(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn mail(&mut self, _: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> HandlerResult {
    /// #         if from.address == b"<spammer@example.org>" {
    /// #             return Ok(Status::reply(550, Some("5.7.1"), "Sender blocked")?);
    /// #         }
    /// #         Ok(Status::Continue)
    /// #     }
    /// #     fn rcpt(&mut self, _: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) -> Status {
    /// #         if rcpt.address == b"<nobody@example.com>" { Status::Reject } else { Status::Continue }
    /// #     }
    /// #     fn data(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn header(&mut self, _: &mut Context<'_>, _: &Header<'_>) -> Status { Status::Continue }
    /// #     fn eoh(&mut self, _: &mut Context<'_>) -> Status { Status::Continue }
    /// #     fn body(&mut self, _: &mut Context<'_>, _: &[u8]) -> Status { Status::Continue }
    /// #     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    /// #         ctx.add_header("X-Checked", "yes")?;
    /// #         Ok(Status::Continue)
    /// #     }
    /// # }
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Judge::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// use milter_blocking::client::{Client, Envelope, Message, Verdict};
    /// use milter_blocking::Stage;
    /// let mut client = Client::open(&spec)?;
    /// // One connection, several messages, as an MTA sends them on one SMTP session.
    /// let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// let ok = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// assert_eq!(ok.verdict, Verdict::Accept);
    /// let spam = client.send_message(&Envelope::new("spammer@example.org").rcpt("bob@example.com"), &message)?;
    /// assert_eq!(
    ///     spam.verdict,
    ///     Verdict::Reject { stage: Stage::Mail, reply: Some(b"550 5.7.1 Sender blocked".to_vec()) }
    /// );
    /// client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_message(
        &mut self,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<Transcript, ClientError> {
        if self.profile == Profile::Stalwart && self.session_started {
            return Err(ClientError::misuse(
                "Stalwart opens a new milter connection for every run: open a new client",
            ));
        }
        let mut t = Transcript::new();
        if let Some(v) = &self.session_verdict {
            t.verdict = v.clone();
            if v.is_delivered() {
                t.accepted_rcpts = (0..envelope.recipients.len()).collect();
            }
            return Ok(t);
        }
        if !self.session_started {
            let r = self.connect(&envelope.client_name, &envelope.client_addr)?;
            t.push(Stage::Connect, 0, &r);
            if self.session_decision(&mut t, Stage::Connect, &r, envelope) {
                return Ok(t);
            }
            if let Some(helo) = &envelope.helo {
                let r = self.helo(helo)?;
                t.push(Stage::Helo, 0, &r);
                if self.session_decision(&mut t, Stage::Helo, &r, envelope) {
                    return Ok(t);
                }
            }
        }
        self.transaction(&mut t, envelope, message)?;
        let abort = match self.profile {
            p if p.is_postfix() => true,
            Profile::Stalwart => false,
            _ => self.in_message,
        };
        if abort && !self.closed_by_mta() {
            self.abort()?;
            t.aborted = true;
        }
        Ok(t)
    }

    /// Sends the run of a milter configured at `stage` only, as Stalwart does on
    /// a milter connection of its own for each stage it is configured for: the
    /// session and envelope up to that stage replayed, then nothing more (the
    /// caller quits). `stage` is [`Stage::Connect`] (Stalwart sends HELO with an
    /// empty name then, as it knows none yet), [`Stage::Helo`], [`Stage::Mail`],
    /// [`Stage::Rcpt`] (every recipient of `envelope`: pass the recipients given
    /// so far) or [`Stage::Data`] and later (the whole message: as
    /// [`Client::send_message`]). Only on a fresh client.
    ///
    /// ```no_run
    /// use milter_blocking::client::{Client, Envelope, Message, Profile};
    /// use milter_blocking::Stage;
    /// let env = Envelope::new("a@example.org").rcpt("b@example.com");
    /// let mut c = Client::builder().profile(Profile::Stalwart).open("inet:11332@127.0.0.1")?;
    /// let t = c.send_run(Stage::Mail, &env, &Message::new())?;
    /// println!("{}", t.verdict);
    /// c.quit()?;
    /// # Ok::<(), milter_blocking::client::ClientError>(())
    /// ```
    pub fn send_run(
        &mut self,
        stage: Stage,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<Transcript, ClientError> {
        if stage >= Stage::Data {
            return self.send_message(envelope, message);
        }
        if self.session_started {
            return Err(ClientError::misuse(
                "a run for one stage needs a milter connection of its own: open a new client",
            ));
        }
        let mut t = Transcript::new();
        self.run_until(&mut t, stage, envelope)?;
        if t.verdict.is_delivered() {
            t.accepted_rcpts = (0..envelope.recipients.len()).collect();
        }
        Ok(t)
    }

    /// The commands of [`Client::send_run`] before DATA.
    fn run_until(
        &mut self,
        t: &mut Transcript,
        stage: Stage,
        envelope: &Envelope,
    ) -> Result<(), ClientError> {
        let r = self.connect(&envelope.client_name, &envelope.client_addr)?;
        t.push(Stage::Connect, 0, &r);
        if self.session_decision(t, Stage::Connect, &r, envelope) {
            return Ok(());
        }
        let helo = match stage {
            Stage::Connect => "",
            _ => envelope.helo.as_deref().unwrap_or_default(),
        };
        let r = self.helo(helo)?;
        t.push(Stage::Helo, 0, &r);
        if self.session_decision(t, Stage::Helo, &r, envelope) || stage <= Stage::Helo {
            return Ok(());
        }
        let r = self.mail(self.envelope_address(&envelope.sender).as_bytes())?;
        t.push(Stage::Mail, 0, &r);
        if self.message_final(t, Stage::Mail, &r) || stage == Stage::Mail {
            return Ok(());
        }
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            let r = self.rcpt(self.envelope_address(rcpt).as_bytes())?;
            t.push(Stage::Rcpt, i, &r);
            if self.message_final(t, Stage::Rcpt, &r) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// An envelope address as the MTA passes it on: Stalwart lowercases it.
    fn envelope_address<'a>(&self, a: &'a Address) -> std::borrow::Cow<'a, str> {
        if self.profile == Profile::Stalwart {
            std::borrow::Cow::Owned(a.address.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(&a.address)
        }
    }

    /// The verdict a decision at `stage` means for this MTA (`None`: go on).
    fn verdict_at(&self, stage: Stage, d: &Decision) -> Option<Verdict> {
        // Stalwart takes accept before end of message as continue.
        if self.profile == Profile::Stalwart && stage != Stage::Eom && *d == Decision::Accept {
            return None;
        }
        Verdict::from_decision(stage, d)
    }

    /// Records a session-level decision; true if the session is over.
    fn session_decision(
        &mut self,
        t: &mut Transcript,
        stage: Stage,
        r: &Response,
        envelope: &Envelope,
    ) -> bool {
        let Some(v) = r.decision().and_then(|d| self.verdict_at(stage, d)) else {
            return false;
        };
        if v.is_delivered() {
            t.accepted_rcpts = (0..envelope.recipients.len()).collect();
        }
        self.session_verdict = Some(v.clone());
        t.verdict = v;
        true
    }

    fn transaction(
        &mut self,
        t: &mut Transcript,
        envelope: &Envelope,
        message: &Message,
    ) -> Result<(), ClientError> {
        // Stalwart sends no ESMTP arguments.
        let stalwart = self.profile == Profile::Stalwart;
        fn args(a: &Address, stalwart: bool) -> &[String] {
            if stalwart {
                &[]
            } else {
                &a.args
            }
        }
        let r = self.mail_with_args(
            self.envelope_address(&envelope.sender).as_bytes(),
            args(&envelope.sender, stalwart),
        )?;
        t.push(Stage::Mail, 0, &r);
        if let Some(v) = r.decision().and_then(|d| self.verdict_at(Stage::Mail, d)) {
            if v.is_delivered() {
                t.accepted_rcpts = (0..envelope.recipients.len()).collect();
            }
            t.verdict = v;
            return Ok(());
        }
        let mut refusal: Option<Verdict> = None;
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            let r =
                self.rcpt_with_args(self.envelope_address(rcpt).as_bytes(), args(rcpt, stalwart))?;
            t.push(Stage::Rcpt, i, &r);
            let verdict = r.decision().and_then(|d| self.verdict_at(Stage::Rcpt, d));
            if verdict.is_none() {
                t.accepted_rcpts.push(i);
            }
            match verdict {
                None => {}
                // Stalwart: a refused recipient ends the run, and the message.
                Some(v @ (Verdict::Reject { .. } | Verdict::Tempfail { .. })) if stalwart => {
                    t.accepted_rcpts.clear();
                    t.verdict = v;
                    return Ok(());
                }
                Some(Verdict::Accept) => {
                    t.accepted_rcpts.extend(i..envelope.recipients.len());
                    t.verdict = Verdict::Accept;
                    return Ok(());
                }
                // A permanent refusal outweighs a temporary one.
                Some(v @ (Verdict::Reject { .. } | Verdict::Tempfail { .. }))
                    if !matches!(refusal, Some(Verdict::Reject { .. })) =>
                {
                    refusal = Some(v);
                }
                Some(Verdict::Reject { .. } | Verdict::Tempfail { .. }) => {}
                Some(v) => {
                    t.verdict = v;
                    return Ok(());
                }
            }
        }
        if t.accepted_rcpts.is_empty() {
            t.verdict = refusal.unwrap_or(Verdict::Reject {
                stage: Stage::Rcpt,
                reply: None,
            });
            return Ok(());
        }
        let r = self.data()?;
        t.push(Stage::Data, 0, &r);
        if self.message_final(t, Stage::Data, &r) {
            return Ok(());
        }
        let leading_space = self
            .negotiated
            .protocol
            .contains(ProtocolOpts::HEADER_LEADING_SPACE);
        for (i, h) in message.headers.iter().enumerate() {
            // Postfix sends headers as it stored them: cut to 60,000 bytes.
            let h = if self.profile.is_postfix() {
                postfix_header_cut(h)
            } else {
                std::borrow::Cow::Borrowed(h)
            };
            let r = if stalwart {
                self.header(h.name.trim_ascii(), h.value_trimmed())?
            } else {
                self.header(&h.name, h.value_for_milter(leading_space))?
            };
            t.push(Stage::Header, i, &r);
            if self.message_final(t, Stage::Header, &r) {
                return Ok(());
            }
        }
        let r = self.eoh()?;
        t.push(Stage::Eoh, 0, &r);
        if self.message_final(t, Stage::Eoh, &r) {
            return Ok(());
        }
        for (i, chunk) in message.body_chunks().enumerate() {
            let r = self.body(chunk)?;
            t.push(Stage::Body, i, &r);
            if self.message_final(t, Stage::Body, &r) {
                return Ok(());
            }
            if matches!(r, Response::Skipped | Response::Replied(Decision::Skip)) {
                break;
            }
        }
        if self.silenced() {
            // Sendmail, after a skip before the content: the milter is out of
            // the message, which goes on without it.
            t.verdict = Verdict::Accept;
            return Ok(());
        }
        let eom = self.eom()?;
        t.steps.push(Step {
            stage: Stage::Eom,
            index: 0,
            response: Response::Replied(eom.decision.clone()),
        });
        t.verdict = match Verdict::from_decision(Stage::Eom, &eom.decision) {
            None | Some(Verdict::Accept) => match eom.quarantine().or(self.held.as_deref()) {
                Some(q) => Verdict::Quarantine(q.to_vec()),
                None => Verdict::Accept,
            },
            Some(v) => v,
        };
        t.eom = Some(eom);
        Ok(())
    }

    /// Records a final decision for the message; true if the message is over.
    fn message_final(&mut self, t: &mut Transcript, stage: Stage, r: &Response) -> bool {
        match r.decision().and_then(|d| self.verdict_at(stage, d)) {
            Some(v) => {
                t.verdict = v;
                true
            }
            None => false,
        }
    }
}
