//! What handlers see besides their arguments: macros, connection facts, and at end
//! of message the modification calls.

use crate::action;
use milter_core::filter::FilterSession;
use milter_core::{ActionError, Actions, MacroStore, Negotiated, Stage};
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;
use std::net::SocketAddr;

/// Facts about the milter connection (the MTA's side of the socket).
///
/// ```
/// use milter_blocking::ConnectionInfo;
/// let tcp = ConnectionInfo { id: 7, peer: Some("127.0.0.1:40312".parse().unwrap()) };
/// assert_eq!(tcp.to_string(), "#7 127.0.0.1:40312");
/// let unix = ConnectionInfo { id: 8, peer: None };
/// assert_eq!(unix.to_string(), "#8 unix");
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// A number unique within the server's lifetime, for logs.
    pub id: u64,
    /// The MTA's address: an IP socket address, or `None` for Unix sockets.
    pub peer: Option<SocketAddr>,
}

impl fmt::Display for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(p) => write!(f, "#{} {p}", self.id),
            None => write!(f, "#{} unix", self.id),
        }
    }
}

macro_rules! macro_accessors {
    () => {
        /// The value of a macro in scope (`"i"` and `"{i}"` are the same name).
        ///
        /// ```
        /// # use milter_blocking::{handlers, Milter};
        /// # #[derive(Milter, Default)] #[milter(macros(connect = "{client_addr}"))] struct M;
        /// # #[handlers] impl Milter for M {
        /// fn connect(&mut self, ctx: &mut milter_blocking::Context<'_>, _host: &[u8], _addr: milter_blocking::ConnectAddr<'_>) {
        ///     // Raw bytes: a macro need not be UTF-8. "j" and "{j}" name the same macro.
        ///     let addr: Option<&[u8]> = ctx.macro_value("{client_addr}");
        ///     # let _ = addr;
        /// }
        /// # }
        /// ```
        pub fn macro_value(&self, name: &str) -> Option<&[u8]> {
            self.macros().get(name)
        }

        /// The value of a macro as text, if it is UTF-8.
        ///
        /// ```
        /// # use milter_blocking::{handlers, Milter, Status};
        /// # #[derive(Milter, Default)] #[milter(macros(helo = "{tls_version}"))] struct M;
        /// # #[handlers] impl Milter for M {
        /// fn helo(&mut self, ctx: &mut milter_blocking::Context<'_>, _name: &[u8]) -> Status {
        ///     // Postfix and Sendmail send {tls_version} once the session uses TLS.
        ///     if ctx.macro_str("{tls_version}").is_none() {
        ///         return Status::reply(530, Some("5.7.0"), "Must issue a STARTTLS command first")
        ///             .unwrap_or(Status::Reject);
        ///     }
        ///     Status::Continue
        /// }
        /// # }
        /// ```
        pub fn macro_str(&self, name: &str) -> Option<&str> {
            self.macro_value(name)
                .and_then(|v| std::str::from_utf8(v).ok())
        }

        /// The queue id (macro `i`), when the MTA sent it.
        ///
        /// ```
        /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
        ///
        /// #[derive(Milter, Default)]
        /// #[milter(actions(add_header))]
        /// struct QueueId;
        ///
        /// #[handlers]
        /// impl Milter for QueueId {
        ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ///         // Log lines with the queue id let an operator find the message in
        ///         // the MTA's log.
        ///         let id = ctx.queue_id().unwrap_or("unknown").to_string();
        ///         log::info!("{}: queue id {id}: stamped", ctx.connection());
        ///         ctx.add_header("X-Queue-Id", id)?;
        ///         Ok(Status::Continue)
        ///     }
        /// }
        /// # use milter_blocking::client::{Client, Envelope, Message};
        /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(QueueId::default)?;
        /// # let (spec, handle) = (server.local_spec(), server.handle());
        /// # let running = std::thread::spawn(move || server.run());
        /// # let mut client = Client::builder().open(&spec)?;
        /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
        /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
        /// # let eom = transcript.eom.as_ref().expect("end of message");
        /// // The client makes up a queue id, as the MTA would.
        /// assert_eq!(eom.added_header("X-Queue-Id"), Some(client.queue_id().as_bytes()));
        /// # client.quit()?;
        /// # handle.shutdown(std::time::Duration::ZERO);
        /// # running.join().expect("the server thread")?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn queue_id(&self) -> Option<&str> {
            self.macro_str("i")
        }

        /// All macros in scope.
        ///
        /// ```
        /// # use milter_blocking::{handlers, Milter};
        /// # #[derive(Milter, Default)] struct M;
        /// # #[handlers] impl Milter for M {
        /// fn mail(&mut self, ctx: &mut milter_blocking::Context<'_>, _from: &milter_blocking::EnvelopeAddr<'_>) {
        ///     // Every macro in scope, for a debug log.
        ///     for (name, value) in ctx.macros().iter() {
        ///         log::debug!("{}={}", String::from_utf8_lossy(name), String::from_utf8_lossy(value));
        ///     }
        /// }
        /// # }
        /// ```
        pub fn macros(&self) -> &MacroStore {
            self.session_ref().macros()
        }

        /// The negotiated parameters.
        ///
        /// ```
        /// # use milter_blocking::{handlers, Milter, Status};
        /// # #[derive(Milter, Default)] struct M;
        /// # #[handlers] impl Milter for M {
        /// fn connect(&mut self, ctx: &mut milter_blocking::Context<'_>, _host: &[u8], _addr: milter_blocking::ConnectAddr<'_>) -> Status {
        ///     if let Some(n) = ctx.negotiated() {
        ///         log::debug!("{}: protocol version {}, actions {:?}", ctx.connection(), n.version, n.actions);
        ///     }
        ///     Status::Continue
        /// }
        /// # }
        /// ```
        pub fn negotiated(&self) -> Option<&Negotiated> {
            self.session_ref().negotiated()
        }

        /// The milter connection.
        ///
        /// ```
        /// # use milter_blocking::{handlers, Milter};
        /// # #[derive(Milter, Default)] struct M;
        /// # #[handlers] impl Milter for M {
        /// fn close(&mut self, ctx: &mut milter_blocking::Context<'_>) {
        ///     // "#12 127.0.0.1:40312", or "#12 unix": the same prefix as the server's own lines.
        ///     log::debug!("{}: closed", ctx.connection());
        /// }
        /// # }
        /// ```
        pub fn connection(&self) -> &ConnectionInfo {
            self.conn
        }
    };
}

/// The context of every stage but end of message.
///
/// ```
/// use milter_blocking::{handlers, Context, EnvelopeAddr, Milter, Status};
///
/// /// Refuses mail from senders that did not log in.
/// #[derive(Milter, Default)]
/// #[milter(macros(mail = "{auth_authen}"))]
/// struct LoggedInOnly;
///
/// #[handlers]
/// impl Milter for LoggedInOnly {
///     fn mail(&mut self, ctx: &mut Context<'_>, from: &EnvelopeAddr<'_>) -> Status {
///         match ctx.macro_str("{auth_authen}") {
///             Some(user) => {
///                 let from = String::from_utf8_lossy(from.address);
///                 log::info!("{}: {user} sends as {from}", ctx.connection());
///                 Status::Continue
///             }
///             None => Status::Reject,
///         }
///     }
/// }
/// # use milter_blocking::client::{Client, Envelope, Message, Verdict};
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(LoggedInOnly::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// # let envelope = Envelope::new("alice@example.org").rcpt("bob@example.com");
/// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
/// # let mut anonymous = Client::open(&spec)?;
/// # assert!(matches!(anonymous.send_message(&envelope, &message)?.verdict, Verdict::Reject { .. }));
/// # anonymous.quit()?;
/// # let mut alice = Client::builder().macro_value("{auth_authen}", "alice").open(&spec)?;
/// # assert_eq!(alice.send_message(&envelope, &message)?.verdict, Verdict::Accept);
/// # alice.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Context<'a> {
    session: &'a FilterSession,
    conn: &'a ConnectionInfo,
    stage: Option<Stage>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        session: &'a FilterSession,
        conn: &'a ConnectionInfo,
        stage: Option<Stage>,
    ) -> Self {
        Context {
            session,
            conn,
            stage,
        }
    }

    fn session_ref(&self) -> &FilterSession {
        self.session
    }

    /// The stage being handled (`None` for abort and close).
    ///
    /// ```
    /// use milter_blocking::{handlers, Context, Milter, Stage};
    ///
    /// #[derive(Milter, Default)]
    /// struct Tracer;
    ///
    /// #[handlers]
    /// impl Milter for Tracer {
    ///     fn abort(&mut self, ctx: &mut Context<'_>) {
    ///         assert_eq!(ctx.stage(), None);
    ///     }
    ///     fn helo(&mut self, ctx: &mut Context<'_>, _name: &[u8]) {
    ///         assert_eq!(ctx.stage(), Some(Stage::Helo));
    ///     }
    /// }
    /// ```
    pub fn stage(&self) -> Option<Stage> {
        self.stage
    }

    macro_accessors!();
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("connection", self.conn)
            .field("stage", &self.stage)
            .finish()
    }
}

/// Flush the modification packets to the MTA once this much is buffered, so a
/// large replacement body streams instead of sitting in memory.
pub(crate) const FLUSH_THRESHOLD: usize = 256 * 1024;

/// An error from a modification call.
///
/// ```
/// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, ModifyError, Status};
///
/// #[derive(Milter, Default)]
/// #[milter(optional_actions(quarantine))]
/// struct Hold;
///
/// #[handlers]
/// impl Milter for Hold {
///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
///         match ctx.quarantine("needs review") {
///             Ok(()) => Ok(Status::Continue),
///             // The MTA did not offer quarantine: refuse for now instead.
///             Err(ModifyError::Action(e)) => {
///                 log::warn!("{}: {e}", ctx.connection());
///                 Ok(Status::Tempfail)
///             }
///             // The connection is gone: nothing to answer.
///             Err(e) => Err(e.into()),
///         }
///     }
/// }
/// # use milter_blocking::client::{Client, Envelope, Message};
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Hold::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// # let mut client = Client::builder().offer({ let mut o = milter_blocking::client::Profile::Postfix.offer(); o.actions.remove(milter_blocking::Actions::QUARANTINE); o }).open(&spec)?;
/// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
/// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
/// # let eom = transcript.eom.as_ref().expect("end of message");
/// use milter_blocking::client::Verdict;
/// assert!(matches!(transcript.verdict, Verdict::Tempfail { .. }));
/// # client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ModifyError {
    /// The call is not allowed (action not negotiated, bad argument, ...).
    Action(ActionError),
    /// Writing to the MTA failed; the connection is lost.
    Io(std::io::Error),
}

impl fmt::Display for ModifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModifyError::Action(e) => e.fmt(f),
            // A write that runs into the write timeout comes back from the socket
            // as "Resource temporarily unavailable" (EAGAIN): name it.
            ModifyError::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                write!(
                    f,
                    "writing modifications to the MTA timed out (the server's write timeout): \
                     the MTA did not read them in time"
                )
            }
            ModifyError::Io(e) => write!(f, "writing modifications to the MTA failed: {e}"),
        }
    }
}

impl std::error::Error for ModifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModifyError::Action(e) => Some(e),
            ModifyError::Io(e) => Some(e),
        }
    }
}

impl From<ActionError> for ModifyError {
    fn from(e: ActionError) -> Self {
        ModifyError::Action(e)
    }
}

/// The context at end of message: everything [`Context`] offers, plus the
/// modification calls.
///
/// `M` is the milter's type: a modification compiles only when `M` declares
/// the action it needs (see [`action`](crate::action)). An optional action the
/// MTA did not offer fails the call at run time with a typed error naming the
/// action; nothing is then sent.
///
/// ```
/// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
///
/// #[derive(Milter, Default)]
/// #[milter(actions(add_header), optional_actions(quarantine))]
/// struct Tag;
///
/// #[handlers]
/// impl Milter for Tag {
///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
///         ctx.add_header("X-Checked", "yes")?;
///         // An optional action: call it only when the MTA offered it.
///         if ctx.actions().contains(milter_blocking::Actions::QUARANTINE) {
///             ctx.quarantine("held for review")?;
///         }
///         Ok(Status::Continue)
///     }
/// }
/// # use milter_blocking::client::{Client, Envelope, Message};
/// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Tag::default)?;
/// # let (spec, handle) = (server.local_spec(), server.handle());
/// # let running = std::thread::spawn(move || server.run());
/// # let mut client = Client::builder().open(&spec)?;
/// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
/// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
/// # let eom = transcript.eom.as_ref().expect("end of message");
/// assert!(eom.has_added_header("X-Checked", "yes"));
/// assert_eq!(eom.quarantine(), Some(&b"held for review"[..]));
/// # client.quit()?;
/// # handle.shutdown(std::time::Duration::ZERO);
/// # running.join().expect("the server thread")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EomContext<'a, M: ?Sized> {
    session: &'a mut FilterSession,
    conn: &'a ConnectionInfo,
    writer: &'a mut dyn Write,
    observer: &'a mut crate::hooks::Observer,
    headers: &'a mut crate::header_index::HeaderIndex,
    /// Set by the first failed write: the connection is lost, every later call
    /// fails at once instead of waiting out the write timeout again.
    lost: &'a mut Option<std::io::ErrorKind>,
    milter: PhantomData<fn(&M)>,
}

impl<'a, M: ?Sized> EomContext<'a, M> {
    pub(crate) fn new(
        session: &'a mut FilterSession,
        conn: &'a ConnectionInfo,
        writer: &'a mut dyn Write,
        observer: &'a mut crate::hooks::Observer,
        headers: &'a mut crate::header_index::HeaderIndex,
        lost: &'a mut Option<std::io::ErrorKind>,
    ) -> Self {
        EomContext {
            session,
            conn,
            writer,
            observer,
            headers,
            lost,
            milter: PhantomData,
        }
    }

    fn check_lost(&self) -> Result<(), ModifyError> {
        match *self.lost {
            Some(kind) => Err(ModifyError::Io(std::io::Error::new(
                kind,
                "the connection to the MTA was lost earlier in this end of message",
            ))),
            None => Ok(()),
        }
    }

    fn session_ref(&self) -> &FilterSession {
        self.session
    }

    macro_accessors!();

    /// The actions the milter may use on this connection.
    ///
    /// ```
    /// # use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    /// # #[derive(Milter, Default)] #[milter(optional_actions(change_body))] struct M;
    /// # #[handlers] impl Milter for M {
    /// fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///     if ctx.actions().contains(milter_blocking::Actions::CHANGE_BODY) {
    ///         ctx.replace_body("The body was removed.\r\n")?;
    ///     } else {
    ///         log::warn!("{}: the MTA does not let us replace the body", ctx.connection());
    ///     }
    ///     Ok(Status::Continue)
    /// }
    /// # }
    /// ```
    pub fn actions(&self) -> Actions {
        self.session.actions()
    }

    /// Runs one modification past the observer (shadow mode suppresses it) and
    /// through the session, then streams the output if enough is buffered.
    fn modify(
        &mut self,
        call: &'static str,
        detail: impl FnOnce() -> String,
        apply: impl FnOnce(&mut FilterSession) -> Result<(), ActionError>,
    ) -> Result<(), ModifyError> {
        self.check_lost()?;
        if !self.observer.modification(self.conn, call, detail) {
            // Shadow mode: validate as usual, send nothing.
            let mark = self.session.output().len();
            let checked = apply(self.session);
            self.session.truncate_output(mark);
            return checked.map_err(ModifyError::from);
        }
        apply(self.session)?;
        if self.session.output().len() >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ModifyError> {
        self.check_lost()?;
        let written = self
            .writer
            .write_all(self.session.output())
            .and_then(|()| self.writer.flush());
        // Written or not, this output is done with: a partial write cannot be
        // resumed, and keeping it would grow the buffer with every later call.
        self.session.clear_output();
        if let Err(e) = written {
            *self.lost = Some(e.kind());
            return Err(ModifyError::Io(e));
        }
        Ok(())
    }

    /// Appends a header at the end of the header block.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header))]
    /// struct Stamp;
    ///
    /// #[handlers]
    /// impl Milter for Stamp {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.add_header("X-Filtered-By", "stamp")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Stamp::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert!(eom.has_added_header("X-Filtered-By", "stamp"));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::AddHeader,
    {
        let () = <M as action::AddHeader>::DECLARED;
        let value = value.as_ref();
        self.modify(
            "add_header",
            || format!("{name}: {}", String::from_utf8_lossy(value)),
            |s| s.add_header(name.as_bytes(), value),
        )?;
        self.headers.adjust(name.as_bytes(), 1);
        Ok(())
    }

    /// Inserts a header at position `index` (0 puts it at the very top; other
    /// positions count headers the milter never saw and differ between MTAs).
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header))]
    /// struct Trace;
    ///
    /// #[handlers]
    /// impl Milter for Trace {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         // Second from the top: below the MTA's own Received.
    ///         ctx.insert_header(1, "X-Trace", "checked")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Trace::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// use milter_blocking::client::Modification;
    /// assert_eq!(
    ///     eom.modifications,
    ///     [Modification::InsertHeader { index: 1, name: b"X-Trace".to_vec(), value: b"checked".to_vec() }]
    /// );
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn insert_header(
        &mut self,
        index: u32,
        name: &str,
        value: impl AsRef<[u8]>,
    ) -> Result<(), ModifyError>
    where
        M: action::AddHeader,
    {
        let () = <M as action::AddHeader>::DECLARED;
        let value = value.as_ref();
        self.modify(
            "insert_header",
            || format!("[{index}] {name}: {}", String::from_utf8_lossy(value)),
            |s| s.insert_header(index, name.as_bytes(), value),
        )?;
        self.headers.adjust(name.as_bytes(), 1);
        Ok(())
    }

    /// Replaces the value of the `index`-th (1-based, names compared ignoring
    /// case) header called `name`. Where there is no such occurrence, both MTAs
    /// add the header instead.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(change_header))]
    /// struct Tagger;
    ///
    /// #[handlers]
    /// impl Milter for Tagger {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.change_header("Subject", 1, "[checked] hi")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Tagger::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.header_changes("Subject"), [(1, &b"[checked] hi"[..])]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn change_header(
        &mut self,
        name: &str,
        index: u32,
        value: impl AsRef<[u8]>,
    ) -> Result<(), ModifyError>
    where
        M: action::ChangeHeader,
    {
        let () = <M as action::ChangeHeader>::DECLARED;
        let value = value.as_ref();
        check_index("change_header", index)?;
        if value.is_empty() {
            return Err(ModifyError::Action(ActionError::InvalidArgument {
                call: "change_header",
                reason: "an empty value deletes the header: use delete_header",
            }));
        }
        self.modify(
            "change_header",
            || format!("{name}[{index}]: {}", String::from_utf8_lossy(value)),
            |s| s.change_header(name.as_bytes(), index, value),
        )
    }

    /// Deletes the `index`-th (1-based) header called `name`. To delete several
    /// occurrences, delete the highest index first (Postfix renumbers after a
    /// delete, Sendmail does not), or use [`EomContext::delete_all_headers`].
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(change_header))]
    /// struct Unspam;
    ///
    /// #[handlers]
    /// impl Milter for Unspam {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         // The second X-Spam first: Postfix renumbers after a delete.
    ///         ctx.delete_header("X-Spam", 2)?;
    ///         ctx.delete_header("X-Spam", 1)?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Unspam::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\nX-Spam: yes\r\nX-Spam: maybe\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// // A delete is a change to an empty value.
    /// assert_eq!(eom.header_changes("X-Spam"), [(2, &b""[..]), (1, &b""[..])]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_header(&mut self, name: &str, index: u32) -> Result<(), ModifyError>
    where
        M: action::ChangeHeader,
    {
        let () = <M as action::ChangeHeader>::DECLARED;
        check_index("delete_header", index)?;
        self.modify(
            "delete_header",
            || format!("{name}[{index}]"),
            |s| s.change_header(name.as_bytes(), index, b""),
        )?;
        self.headers.adjust(name.as_bytes(), -1);
        Ok(())
    }

    /// How many headers called `name` the message has, counting the ones the
    /// milter saw and the ones its own calls added or deleted; `None` when the
    /// milter does not see headers (no header handler: the MTA was asked not to
    /// send them), and for a message whose header names add up to more than
    /// 64 KiB (some 4,000 headers) or that the milter's own calls changed more
    /// than 1,024 times (tracking more would let a hostile message make the milter
    /// hold any amount of memory).
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header))]
    /// struct Count;
    ///
    /// #[handlers]
    /// impl Milter for Count {
    ///     // A header handler (here returning nothing, so the MTA need not wait)
    ///     // makes the MTA send the headers, and the context count them.
    ///     fn header(&mut self, _ctx: &mut milter_blocking::Context<'_>, _h: &milter_blocking::Header<'_>) {}
    ///
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         let n = ctx.header_count("X-Spam").unwrap_or(0);
    ///         ctx.add_header("X-Spam-Headers", n.to_string())?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Count::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\nX-Spam: yes\r\nX-Spam: maybe\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert!(eom.has_added_header("X-Spam-Headers", "2"));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn header_count(&self, name: &str) -> Option<u32> {
        self.headers.count(name.as_bytes())
    }

    /// Makes the message have exactly one header `name: value`, whatever it had:
    /// deletes the extra occurrences from the last down (the order that is right
    /// in both MTAs), changes the first, or adds the header when there is none.
    /// Without header tracking (see [`EomContext::header_count`]) it changes the
    /// first occurrence, which both MTAs turn into an add when there is none.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header, change_header))]
    /// struct Verdict;
    ///
    /// #[handlers]
    /// impl Milter for Verdict {
    ///     // A header handler (here returning nothing, so the MTA need not wait)
    ///     // makes the MTA send the headers, and the context count them.
    ///     fn header(&mut self, _ctx: &mut milter_blocking::Context<'_>, _h: &milter_blocking::Header<'_>) {}
    ///
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         // Whatever X-Spam headers came in, one goes out.
    ///         ctx.set_header("X-Spam", "no")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Verdict::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\nX-Spam: yes\r\nX-Spam: maybe\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// let delivered = eom.apply(&message, &Envelope::new("a@example.org"));
    /// assert_eq!(delivered.message.header_all("X-Spam"), [&b"no"[..]]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::ChangeHeader + action::AddHeader,
    {
        let value = value.as_ref();
        match self.header_count(name) {
            Some(0) => self.add_header(name, value),
            Some(n) => {
                for index in (2..=n).rev() {
                    self.delete_header(name, index)?;
                }
                self.change_header(name, 1, value)
            }
            None => self.change_header(name, 1, value),
        }
    }

    /// Deletes every header called `name` the message has (last first). Needs
    /// header tracking; without it, only the first occurrence is deleted and the
    /// call says how many it removed: 1.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(change_header))]
    /// struct Strip;
    ///
    /// #[handlers]
    /// impl Milter for Strip {
    ///     // A header handler (here returning nothing, so the MTA need not wait)
    ///     // makes the MTA send the headers, and the context count them.
    ///     fn header(&mut self, _ctx: &mut milter_blocking::Context<'_>, _h: &milter_blocking::Header<'_>) {}
    ///
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         let removed = ctx.delete_all_headers("X-Spam")?;
    ///         log::debug!("{}: removed {removed} X-Spam headers", ctx.connection());
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Strip::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\nX-Spam: yes\r\nX-Spam: maybe\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// let delivered = eom.apply(&message, &Envelope::new("a@example.org"));
    /// assert!(delivered.message.header("X-Spam").is_none());
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_all_headers(&mut self, name: &str) -> Result<u32, ModifyError>
    where
        M: action::ChangeHeader,
    {
        let n = self.header_count(name).unwrap_or(1);
        for index in (1..=n).rev() {
            self.delete_header(name, index)?;
        }
        Ok(n)
    }

    /// Puts a header at the very top of the message, above the MTA's own
    /// `Received:` (insert at index 0, which both MTAs honour that way).
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header))]
    /// struct Top;
    ///
    /// #[handlers]
    /// impl Milter for Top {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.prepend_header("Authentication-Results", "mx.example.com; none")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Top::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// let delivered = eom.apply(&message, &Envelope::new("a@example.org"));
    /// assert_eq!(delivered.message.headers[0].name, b"Authentication-Results");
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prepend_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::AddHeader,
    {
        self.insert_header(0, name, value)
    }

    /// Adds a recipient.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_rcpt))]
    /// struct Archive;
    ///
    /// #[handlers]
    /// impl Milter for Archive {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.add_rcpt("<archive@example.com>")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Archive::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.added_rcpts(), [&b"<archive@example.com>"[..]]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_rcpt(&mut self, rcpt: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::AddRcpt,
    {
        let () = <M as action::AddRcpt>::DECLARED;
        let rcpt = rcpt.as_ref();
        self.modify(
            "add_rcpt",
            || String::from_utf8_lossy(rcpt).into_owned(),
            |s| s.add_rcpt(rcpt),
        )
    }

    /// Adds a recipient with ESMTP arguments (`"NOTIFY=NEVER ORCPT=rfc822;a@b"`).
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_rcpt_with_args))]
    /// struct Archive;
    ///
    /// #[handlers]
    /// impl Milter for Archive {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         // No delivery status notifications for the copy.
    ///         ctx.add_rcpt_with_args("<archive@example.com>", "NOTIFY=NEVER")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Archive::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.added_rcpts(), [&b"<archive@example.com>"[..]]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_rcpt_with_args(
        &mut self,
        rcpt: impl AsRef<[u8]>,
        args: &str,
    ) -> Result<(), ModifyError>
    where
        M: action::AddRcptWithArgs,
    {
        let () = <M as action::AddRcptWithArgs>::DECLARED;
        let rcpt = rcpt.as_ref();
        let args = (!args.is_empty()).then_some(args.as_bytes());
        self.modify(
            "add_rcpt_with_args",
            || {
                format!(
                    "{} {}",
                    String::from_utf8_lossy(rcpt),
                    String::from_utf8_lossy(args.unwrap_or_default())
                )
            },
            |s| s.add_rcpt_with_args(rcpt, args),
        )
    }

    /// Removes a recipient; pass the address exactly as the MTA gave it in RCPT.
    ///
    /// ```
    /// use milter_blocking::{handlers, Context, EnvelopeAddr, EomContext, HandlerResult, Milter, Status};
    ///
    /// /// Redirects mail for sales@ to the team.
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_rcpt, delete_rcpt))]
    /// struct Redirect {
    ///     /// The recipient as the MTA gave it in RCPT.
    ///     #[milter(per_message)]
    ///     sales: Option<Vec<u8>>,
    /// }
    ///
    /// #[handlers]
    /// impl Milter for Redirect {
    ///     fn rcpt(&mut self, _ctx: &mut Context<'_>, rcpt: &EnvelopeAddr<'_>) {
    ///         if milter_blocking::bare_address(rcpt.address).eq_ignore_ascii_case(b"sales@example.com") {
    ///             self.sales = Some(rcpt.address.to_vec());
    ///         }
    ///     }
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         if let Some(sales) = &self.sales {
    ///             ctx.delete_rcpt(sales)?;
    ///             ctx.add_rcpt("<team-sales@example.com>")?;
    ///         }
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Redirect::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("sales@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.deleted_rcpts(), [&b"<sales@example.com>"[..]]);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn delete_rcpt(&mut self, rcpt: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::DeleteRcpt,
    {
        let () = <M as action::DeleteRcpt>::DECLARED;
        let rcpt = rcpt.as_ref();
        self.modify(
            "delete_rcpt",
            || String::from_utf8_lossy(rcpt).into_owned(),
            |s| s.delete_rcpt(rcpt),
        )
    }

    /// Changes the envelope sender, with optional ESMTP arguments.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(change_from))]
    /// struct Bounces;
    ///
    /// #[handlers]
    /// impl Milter for Bounces {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.change_from("<bounces@example.com>", None)?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Bounces::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.new_sender(), Some(&b"<bounces@example.com>"[..]));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn change_from(
        &mut self,
        from: impl AsRef<[u8]>,
        args: Option<&str>,
    ) -> Result<(), ModifyError>
    where
        M: action::ChangeFrom,
    {
        let () = <M as action::ChangeFrom>::DECLARED;
        let from = from.as_ref();
        let args = args.filter(|a| !a.is_empty()).map(str::as_bytes);
        self.modify(
            "change_from",
            || String::from_utf8_lossy(from).into_owned(),
            |s| s.change_from(from, args),
        )
    }

    /// Appends `chunk` to the replacement body. Call it as often as needed to
    /// stream a large body (it is written to the MTA as it goes); make no other
    /// modification in between. Calling it once with an empty slice sets an
    /// empty body.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(change_body))]
    /// struct Footer;
    ///
    /// #[handlers]
    /// impl Milter for Footer {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         // Streamed: each call may write to the MTA.
    ///         ctx.replace_body("Hello.\r\n")?;
    ///         ctx.replace_body("-- \r\nScanned.\r\n")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Footer::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.new_body().as_deref(), Some(&b"Hello.\r\n-- \r\nScanned.\r\n"[..]));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replace_body(&mut self, chunk: impl AsRef<[u8]>) -> Result<(), ModifyError>
    where
        M: action::ChangeBody,
    {
        let () = <M as action::ChangeBody>::DECLARED;
        let chunk = chunk.as_ref();
        // Stream a large slice in pieces, flushing as we go, so that the output
        // buffer never holds more than about FLUSH_THRESHOLD (it keeps its
        // capacity for the rest of the connection).
        let mut pieces = chunk.chunks(milter_core::limits::MAX_BODY_CHUNK);
        let first = pieces.next().unwrap_or_default();
        self.modify(
            "replace_body",
            || format!("{} bytes", chunk.len()),
            |s| s.replace_body(first),
        )?;
        if self.observer.shadow {
            return Ok(());
        }
        for piece in pieces {
            self.session.replace_body(piece)?;
            if self.session.output().len() >= FLUSH_THRESHOLD {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Quarantines the message (Postfix: hold queue) with a reason.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(quarantine))]
    /// struct Hold;
    ///
    /// #[handlers]
    /// impl Milter for Hold {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         ctx.quarantine("attachment needs review")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Hold::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// use milter_blocking::client::Verdict;
    /// assert_eq!(transcript.verdict, Verdict::Quarantine(b"attachment needs review".to_vec()));
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quarantine(&mut self, reason: &str) -> Result<(), ModifyError>
    where
        M: action::Quarantine,
    {
        let () = <M as action::Quarantine>::DECLARED;
        self.modify(
            "quarantine",
            || reason.to_string(),
            |s| s.quarantine(reason.as_bytes()),
        )
    }

    /// Tells the MTA the milter is still working, now (resets its read timer).
    /// Call it at least every few seconds from a slow handler: Sendmail's default
    /// read timeout is 10 s.
    ///
    /// ```
    /// use milter_blocking::{handlers, EomContext, HandlerResult, Milter, Status};
    ///
    /// #[derive(Milter, Default)]
    /// #[milter(actions(add_header))]
    /// struct Slow;
    ///
    /// #[handlers]
    /// impl Milter for Slow {
    ///     fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
    ///         for _part in 0..3 {
    ///             // ... a slow check of one part ...
    ///             ctx.progress()?;
    ///         }
    ///         ctx.add_header("X-Scanned", "3 parts")?;
    ///         Ok(Status::Continue)
    ///     }
    /// }
    /// # use milter_blocking::client::{Client, Envelope, Message};
    /// # let server = milter_blocking::Server::builder().listen("inet:0@127.0.0.1")?.build(Slow::default)?;
    /// # let (spec, handle) = (server.local_spec(), server.handle());
    /// # let running = std::thread::spawn(move || server.run());
    /// # let mut client = Client::builder().open(&spec)?;
    /// # let message = Message::parse(b"Subject: hi\r\n\r\nHello.\r\n");
    /// # let transcript = client.send_message(&Envelope::new("alice@example.org").rcpt("bob@example.com"), &message)?;
    /// # let eom = transcript.eom.as_ref().expect("end of message");
    /// assert_eq!(eom.progress, 3);
    /// # client.quit()?;
    /// # handle.shutdown(std::time::Duration::ZERO);
    /// # running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn progress(&mut self) -> Result<(), ModifyError> {
        self.check_lost()?;
        self.session.progress()?;
        self.flush()
    }
}

/// Header indexes are 1-based: refuse 0 rather than rely on both MTAs reading it
/// as 1.
fn check_index(call: &'static str, index: u32) -> Result<(), ModifyError> {
    if index == 0 {
        return Err(ModifyError::Action(ActionError::InvalidArgument {
            call,
            reason: "header indexes are 1-based (1 is the first occurrence)",
        }));
    }
    Ok(())
}

impl<M: ?Sized> fmt::Debug for EomContext<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EomContext")
            .field("connection", self.conn)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::ModifyError;
    use std::io;

    #[test]
    fn a_write_timeout_is_named_as_a_timeout() {
        let os = ModifyError::Io(io::Error::from_raw_os_error(11)); // EAGAIN
        assert_eq!(
            os.to_string(),
            "writing modifications to the MTA timed out (the server's write timeout): \
             the MTA did not read them in time"
        );
        let timed_out = ModifyError::Io(io::Error::from(io::ErrorKind::TimedOut));
        assert!(timed_out.to_string().contains("timed out"), "{timed_out}");
        let reset = ModifyError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(
            reset
                .to_string()
                .starts_with("writing modifications to the MTA failed: "),
            "{reset}"
        );
    }
}
