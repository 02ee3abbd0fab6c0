//! The server: listeners, the connection pool, shutdown.
//!
//! # Shutdown, step by step
//! 1. [`ServerHandle::shutdown`] (from any thread, e.g. a signal-handling thread)
//!    stops the accept loops within [`ACCEPT_POLL`](crate::listener) (200 ms).
//! 2. Connections waiting for a new command outside a message are closed at
//!    once (their close handler runs); a connection receiving or handling a
//!    command, or inside a message, finishes that message and then closes
//!    (see `registry.rs` for how the two sides agree).
//! 3. At the deadline every connection still open is cut (abort and close
//!    handlers run as on end of input).
//! 4. [`Server::run`] returns once every worker thread has been joined; Unix
//!    socket files the server created are removed.

use crate::cache_line::CacheLine;
use crate::connection::{serve, ConnectionConfig};
use crate::context::ConnectionInfo;
use crate::handler::Milter;
use crate::hooks::Hooks;
use crate::listener::{ListenOptions, Listener, Stream, ACCEPT_POLL};
use crate::overflow::Overflow;
pub use crate::overflow::WhenFull;
use crate::pool::Pool;
use crate::read_watch::ReadWatch;
use crate::refusals::RefusalLog;
use crate::registry::{Registry, ServerStats};
use crate::socket_spec::{SocketSpec, SocketSpecError};
use crate::spin::SpinPolicy;
pub use crate::spin::DEFAULT_BUSY_POLL;
use milter_core::limits::{DEFAULT_MAX_MACRO_BYTES, DEFAULT_MAX_PAYLOAD};
use milter_core::Status;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// libmilter's default timeout for every read and write on a connection
/// (`MI_TIMEOUT`, 7210 s): the MTA paces the conversation and may hold an idle
/// connection open between messages.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(7210);

/// Default most connections served at once (each holds one thread).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default number of accepted connections that may wait for a free thread when
/// all are busy; beyond it, new connections are closed at once.
pub const DEFAULT_QUEUE: usize = 64;

/// Default stack size of a connection thread. Only the pages a handler touches
/// become resident, so 1,000 idle connections cost a few MiB, not 512 MiB.
pub const DEFAULT_STACK_SIZE: usize = 512 * 1024;

/// How long a thread without a connection stays around before it leaves.
pub const DEFAULT_IDLE_THREAD_TIMEOUT: Duration = Duration::from_secs(60);

/// An error starting or running a server.
///
/// ```
/// # use milter_blocking::{handlers, Milter};
/// # #[derive(Milter, Default)]
/// # struct Nothing;
/// # #[handlers]
/// # impl Milter for Nothing {}
/// use milter_blocking::Server;
/// let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let spec = format!("inet:{}@127.0.0.1", taken.local_addr()?.port());
/// match Server::builder().listen(&spec) {
///     // For an operator: "cannot listen on inet:PORT@127.0.0.1: ... Address already in use ..."
///     Err(e) => eprintln!("{e}"),
///     Ok(builder) => { let _server = builder.build(Nothing::default)?; }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerError {
    /// A socket spec does not parse.
    Spec(SocketSpecError),
    /// Binding or listening failed.
    Listen {
        /// The spec.
        spec: String,
        /// The cause.
        source: io::Error,
    },
    /// `build` was called without any listener.
    NoListener,
    /// Accepting connections failed and the server stopped.
    Accept(io::Error),
    /// The thread that answers connections when the server is full
    /// ([`ServerBuilder::when_full`]) could not be started.
    Overflow(io::Error),
    /// The handlers for SIGTERM and SIGINT could not be installed
    /// ([`ServerBuilder::stop_on_signals`]).
    #[cfg(feature = "signals")]
    Signals(io::Error),
    /// A timeout was set to zero, which would cut every connection at once
    /// (`None` means no timeout).
    ZeroTimeout {
        /// The builder method that got zero (`read_timeout`, `write_timeout`).
        setting: &'static str,
    },
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Spec(e) => e.fmt(f),
            ServerError::Listen { spec, source } => write!(f, "cannot listen on {spec}: {source}"),
            ServerError::NoListener => f.write_str("the server has no listener"),
            ServerError::Accept(e) => write!(f, "accepting connections failed: {e}"),
            ServerError::Overflow(e) => write!(
                f,
                "cannot start the thread that answers connections when the server is full: {e}"
            ),
            #[cfg(feature = "signals")]
            ServerError::Signals(e) => write!(f, "cannot catch SIGTERM and SIGINT: {e}"),
            ServerError::ZeroTimeout { setting } => write!(
                f,
                "{setting} is zero, which would cut every connection at once; \
                 give a positive duration, or None for no timeout"
            ),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Spec(e) => Some(e),
            ServerError::Listen { source, .. } => Some(source),
            ServerError::Accept(e) | ServerError::Overflow(e) => Some(e),
            #[cfg(feature = "signals")]
            ServerError::Signals(e) => Some(e),
            ServerError::NoListener | ServerError::ZeroTimeout { .. } => None,
        }
    }
}

/// Configures a [`Server`].
///
/// ```no_run
/// use milter_blocking::{handlers, Milter, Server};
/// use std::time::Duration;
///
/// #[derive(Milter, Default)]
/// struct Nothing;
///
/// #[handlers]
/// impl Milter for Nothing {}
///
/// # fn main() -> Result<(), milter_blocking::ServerError> {
/// let server = Server::builder()
///     .listen("inet:7357@127.0.0.1")?
///     .max_connections(256)
///     .read_timeout(Duration::from_secs(600))
///     .build(Nothing::default)?;
/// let handle = server.handle();
/// // e.g. from a signal thread: handle.shutdown(Duration::from_secs(10));
/// server.run()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ServerBuilder {
    listeners: Vec<Listener>,
    listen: ListenOptions,
    max_connections: usize,
    queue: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    stack_size: usize,
    idle_thread_timeout: Duration,
    max_payload: usize,
    max_macro_bytes: usize,
    failure_status: Status,
    shadow: bool,
    hooks: Option<Arc<dyn Hooks>>,
    when_full: WhenFull,
    busy_poll: Duration,
    busy_poll_limit: usize,
    /// Stop on SIGTERM and SIGINT, with this deadline.
    #[cfg(feature = "signals")]
    stop_on_signals: Option<Duration>,
}

impl fmt::Debug for dyn Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooks")
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            listeners: Vec::new(),
            listen: ListenOptions::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            queue: DEFAULT_QUEUE,
            read_timeout: Some(DEFAULT_TIMEOUT),
            write_timeout: Some(DEFAULT_TIMEOUT),
            stack_size: DEFAULT_STACK_SIZE,
            idle_thread_timeout: DEFAULT_IDLE_THREAD_TIMEOUT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_macro_bytes: DEFAULT_MAX_MACRO_BYTES,
            failure_status: Status::Tempfail,
            shadow: false,
            hooks: None,
            when_full: WhenFull::Close,
            busy_poll: DEFAULT_BUSY_POLL,
            busy_poll_limit: SpinPolicy::default_max_open(),
            #[cfg(feature = "signals")]
            stop_on_signals: None,
        }
    }
}

impl ServerBuilder {
    /// How long a connection polls its socket without blocking, after
    /// answering, before it blocks in `read` (default [`DEFAULT_BUSY_POLL`],
    /// 50 µs; `Duration::ZERO` turns it off). The MTA's next command usually
    /// arrives within that time, and catching it awake saves the kernel's
    /// wake-up of a sleeping thread, which on an idle CPU costs more than a
    /// stage's work. Polling happens only while at most
    /// [`busy_poll_limit`](Self::busy_poll_limit) connections are served, so a
    /// busy server never spends CPU on it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::Server::builder().busy_poll(Duration::ZERO);
    /// # let _ = builder;
    /// ```
    pub fn busy_poll(mut self, t: Duration) -> Self {
        self.busy_poll = t;
        self
    }

    /// Polls (see [`busy_poll`](Self::busy_poll)) only while at most this many
    /// connections are served; the default is the number of CPUs the process
    /// may run on less one, so that the MTA keeps a CPU of its own (and a
    /// single-CPU host never polls).
    ///
    /// ```
    /// // Never poll: every connection blocks in `read` at once.
    /// let builder = milter_blocking::Server::builder().busy_poll_limit(0);
    /// # let _ = builder;
    /// ```
    pub fn busy_poll_limit(mut self, connections: usize) -> Self {
        self.busy_poll_limit = connections;
        self
    }

    /// Listens on a libmilter-style socket spec (see [`SocketSpec`]); binds now, so
    /// errors show here and port 0 gets its real port.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::Server;
    ///
    /// // Port 0: the system picks a free port, and the server says which.
    /// let server = Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// assert_ne!(server.local_spec().to_string(), "inet:0@127.0.0.1");
    ///
    /// // A spec that does not parse is an error naming it, before anything is bound.
    /// let err = Server::builder().listen("inet:seven@127.0.0.1").unwrap_err();
    /// assert!(err.to_string().contains("inet:seven@127.0.0.1"));
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn listen(self, spec: &str) -> Result<Self, ServerError> {
        let spec: SocketSpec = spec.parse().map_err(ServerError::Spec)?;
        self.listen_spec(&spec)
    }

    /// Listens on a parsed socket spec.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::{Server, SocketSpec};
    /// use std::net::{Ipv4Addr, SocketAddr};
    ///
    /// let spec = SocketSpec::Inet(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    /// let server = Server::builder().listen_spec(&spec)?.build(Nothing::default)?;
    /// # let _ = server;
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn listen_spec(mut self, spec: &SocketSpec) -> Result<Self, ServerError> {
        let l = Listener::bind(spec, &self.listen).map_err(|source| ServerError::Listen {
            spec: spec.to_string(),
            source,
        })?;
        self.listeners.push(l);
        Ok(self)
    }

    /// Serves the sockets the service manager passed in (systemd socket
    /// activation, `LISTEN_FDS`); adds nothing when there are none. See
    /// [`take_listeners`](crate::take_listeners) and `docs/OPERATIONS.md` for a
    /// sample unit.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::Server;
    ///
    /// // Under systemd with a .socket unit, serve its sockets; run by hand, listen
    /// // on a spec of our own.
    /// let builder = Server::builder().listen_activated()?;
    /// let builder = if builder.has_listener() {
    ///     builder
    /// } else {
    ///     builder.listen("inet:0@127.0.0.1")?
    /// };
    /// let server = builder.build(Nothing::default)?;
    /// # let _ = server;
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn listen_activated(mut self) -> Result<Self, ServerError> {
        let passed = crate::activation::take_listeners().map_err(|source| ServerError::Listen {
            spec: "LISTEN_FDS".into(),
            source,
        })?;
        self.listeners.extend(passed);
        Ok(self)
    }

    /// Whether any listener was added.
    ///
    /// ```
    /// let builder = milter_blocking::Server::builder();
    /// assert!(!builder.has_listener());
    /// let builder = builder.listen("inet:0@127.0.0.1")?;
    /// assert!(builder.has_listener());
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn has_listener(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// Serves a listener made elsewhere (see [`Listener::from_tcp`],
    /// [`Listener::from_unix`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::{Listener, Server};
    /// use std::net::TcpListener;
    ///
    /// // A socket bound by the program itself (before dropping privileges, say).
    /// let socket = TcpListener::bind("127.0.0.1:0")?;
    /// let server = Server::builder()
    ///     .listener(Listener::from_tcp(socket)?)
    ///     .build(Nothing::default)?;
    /// # let _ = server;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Socket options for the listeners bound after this call (backlog, Unix
    /// socket mode/owner/group, stale socket removal).
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::{ListenOptions, Server};
    ///
    /// let dir = std::env::temp_dir().join(format!("milter-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// // The MTA's group may connect, nobody else.
    /// let options = ListenOptions {
    ///     unix_mode: Some(0o660),
    ///     ..ListenOptions::default()
    /// };
    /// let server = Server::builder()
    ///     .listen_options(options)
    ///     .listen(&format!("unix:{}", dir.join("milter.sock").display()))?
    ///     .build(Nothing::default)?;
    /// # drop(server);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn listen_options(mut self, options: ListenOptions) -> Self {
        self.listen = options;
        self
    }

    /// Most connections served at once; each holds one thread.
    ///
    /// ```
    /// // At most 200 connections, each on its own thread; 50 more may wait.
    /// let builder = milter_blocking::Server::builder().max_connections(200).queue(50);
    /// # let _ = builder;
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Accepted connections that may wait for a thread; beyond that they get
    /// what [`when_full`](Self::when_full) says (by default: closed at once,
    /// and logged), so the MTA applies its failure policy instead of waiting.
    ///
    /// ```
    /// // No waiting: when every thread is busy, a new connection is closed at once
    /// // and the MTA applies its own failure policy (Postfix: milter_default_action).
    /// let builder = milter_blocking::Server::builder().queue(0);
    /// # let _ = builder;
    /// ```
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Timeout of every read (`None`: wait forever). Default [`DEFAULT_TIMEOUT`].
    /// Zero is refused by [`build`](Self::build)
    /// ([`ServerError::ZeroTimeout`]).
    ///
    /// A connection whose MTA sends nothing for this long is closed (abort and
    /// close handlers run, the [`Hooks::timeout`] hook is called). The accept
    /// loop checks every eighth of the timeout (between 10 ms and 200 ms), so
    /// the cut comes no earlier than the timeout and at most about two checks
    /// later; for a timeout over about 200 s, at most a 1024th of it later
    /// (the default: about 7.5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// // Give up on an MTA that sends nothing for 10 minutes; never time out writes.
    /// let builder = milter_blocking::Server::builder()
    ///     .read_timeout(Duration::from_secs(600))
    ///     .write_timeout(None);
    /// # let _ = builder;
    /// ```
    pub fn read_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.read_timeout = t.into();
        self
    }

    /// Timeout of every write (`None`: wait forever). Default [`DEFAULT_TIMEOUT`].
    /// Zero is refused by [`build`](Self::build)
    /// ([`ServerError::ZeroTimeout`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::Server::builder().write_timeout(Duration::from_secs(60));
    /// # let _ = builder;
    /// ```
    pub fn write_timeout(mut self, t: impl Into<Option<Duration>>) -> Self {
        self.write_timeout = t.into();
        self
    }

    /// Stack size of connection threads. Default [`DEFAULT_STACK_SIZE`].
    ///
    /// ```
    /// // Handlers that recurse deeply (a MIME parser, say) may need more.
    /// let builder = milter_blocking::Server::builder().thread_stack_size(2 * 1024 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn thread_stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes.max(64 * 1024);
        self
    }

    /// How long an unused thread waits for work before it leaves.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = milter_blocking::Server::builder().idle_thread_timeout(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn idle_thread_timeout(mut self, t: Duration) -> Self {
        self.idle_thread_timeout = t;
        self
    }

    /// Largest packet payload accepted from the MTA, checked before buffering.
    /// Default [`DEFAULT_MAX_PAYLOAD`].
    ///
    /// ```
    /// // Refuse packets over 1 MiB (a body chunk is at most 64 KiB).
    /// let builder = milter_blocking::Server::builder().max_payload(1024 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Most bytes of macro names and values a connection holds over all its
    /// macro sets (default
    /// [`DEFAULT_MAX_MACRO_BYTES`](milter_core::limits::DEFAULT_MAX_MACRO_BYTES),
    /// 256 KiB; at most [`MAX_MACROS`](milter_core::limits::MAX_MACROS) pairs).
    /// A `D` packet beyond it is a protocol error: logged, connection closed.
    /// With `max_connections`, it bounds the memory all connections spend on
    /// macros (the sets of a message are freed when it ends).
    pub fn max_macro_bytes(mut self, bytes: usize) -> Self {
        self.max_macro_bytes = bytes;
        self
    }

    /// The answer when a handler returns an error or panics (default tempfail).
    ///
    /// ```
    /// use milter_blocking::Status;
    /// // Fail open: a milter that errors lets the message through.
    /// let builder = milter_blocking::Server::builder().failure_status(Status::Continue);
    /// # let _ = builder;
    /// ```
    pub fn failure_status(mut self, status: Status) -> Self {
        self.failure_status = status;
        self
    }

    /// Shadow mode: the milter runs fully (handlers called, decisions and
    /// modifications computed and validated), but the MTA is told continue (or
    /// accept) with no modification, and one info line per message says what
    /// would have happened. For trying a new rule on live traffic.
    ///
    /// ```
    /// // Try a new rule on live mail: decisions are logged, not sent.
    /// let trying = std::env::var_os("MILTER_SHADOW").is_some();
    /// let builder = milter_blocking::Server::builder().shadow(trying);
    /// # let _ = builder;
    /// ```
    pub fn shadow(mut self, on: bool) -> Self {
        self.shadow = on;
        self
    }

    /// Stop on SIGTERM and SIGINT while [`Server::run`] runs: the first starts
    /// a graceful shutdown with `deadline` (as [`ServerHandle::shutdown`]), a
    /// second one ends it at once. The handlers are installed when `run`
    /// starts and removed when it returns (the signals terminate the process
    /// again then, as by default). Cargo feature `signals`; without this call
    /// no signal handler is ever installed.
    ///
    /// ```no_run
    /// use milter_blocking::{Milter, Server};
    /// use std::time::Duration;
    ///
    /// #[derive(Milter, Default)]
    /// struct Nothing;
    ///
    /// #[milter_blocking::handlers]
    /// impl Milter for Nothing {}
    ///
    /// # fn main() -> Result<(), milter_blocking::ServerError> {
    /// Server::builder()
    ///     .listen("inet:7357@127.0.0.1")?
    ///     .stop_on_signals(Duration::from_secs(20))
    ///     .build(Nothing::default)?
    ///     .run()
    /// # }
    /// ```
    #[cfg(feature = "signals")]
    pub fn stop_on_signals(mut self, deadline: Duration) -> Self {
        self.stop_on_signals = Some(deadline);
        self
    }

    /// What a connection gets when every thread is busy and the queue is full
    /// (default [`WhenFull::Close`]): closed at once, so the MTA applies its
    /// own failure policy, or negotiated and answered tempfail or accept for
    /// its session by one small thread set aside for it (64 such connections
    /// may wait for it, each answered within 5 s or closed). See [`WhenFull`]
    /// for what Postfix and Sendmail do with each.
    ///
    /// ```
    /// use milter_blocking::{Server, WhenFull};
    /// let builder = Server::builder().when_full(WhenFull::Tempfail);
    /// # let _ = builder;
    /// ```
    pub fn when_full(mut self, answer: WhenFull) -> Self {
        self.when_full = answer;
        self
    }

    /// Observability hooks (see [`Hooks`]).
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::{ConnectionInfo, Hooks, Server, Stage, Status};
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// #[derive(Default)]
    /// struct Rejections(AtomicU64);
    ///
    /// impl Hooks for Rejections {
    ///     fn verdict(&self, _conn: &ConnectionInfo, _stage: Stage, status: &Status) {
    ///         if matches!(status, Status::Reject) {
    ///             self.0.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     }
    /// }
    ///
    /// let rejections = Arc::new(Rejections::default());
    /// let server = Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .hooks(rejections.clone())
    ///     .build(Nothing::default)?;
    /// # let _ = server;
    /// assert_eq!(rejections.0.load(Ordering::Relaxed), 0);
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Builds the server; `factory` makes one milter value per connection.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::{Server, ServerError};
    ///
    /// // One value per connection: here a fresh `Nothing` for each.
    /// let server = Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// # let _ = server;
    ///
    /// // Without a listener there is nothing to serve.
    /// let err = Server::builder().build(Nothing::default).unwrap_err();
    /// assert!(matches!(err, ServerError::NoListener));
    /// # Ok::<(), ServerError>(())
    /// ```
    pub fn build<M, F>(self, factory: F) -> Result<Server, ServerError>
    where
        M: Milter + 'static,
        F: Fn() -> M + Send + Sync + 'static,
    {
        if self.listeners.is_empty() {
            return Err(ServerError::NoListener);
        }
        for (setting, t) in [
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if t == Some(Duration::ZERO) {
                return Err(ServerError::ZeroTimeout { setting });
            }
        }
        let read_watch = self.read_timeout.map(|t| Arc::new(ReadWatch::new(t)));
        let config = ConnectionConfig {
            read_watch: read_watch.clone(),
            write_timeout: self.write_timeout,
            max_payload: self.max_payload,
            max_macro_bytes: self.max_macro_bytes,
            failure_status: self.failure_status,
            shadow: self.shadow,
            hooks: self.hooks.clone(),
            spin: SpinPolicy::new(self.busy_poll, self.busy_poll_limit),
        };
        let hooks = self.hooks;
        let shared = Arc::new(Shared {
            stopping: Arc::new(CacheLine(AtomicBool::new(false))),
            deadline: Mutex::new(None),
            registry: Registry::default(),
            next_id: AtomicU64::new(1),
            pool_counts: Mutex::new((0, 0)),
            hooks: hooks.clone(),
            read_watch,
        });
        let factory = Arc::new(factory);
        let start: StartFn = {
            let shared = Arc::clone(&shared);
            Arc::new(move |stream| {
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let info = ConnectionInfo {
                    id,
                    peer: stream.peer(),
                };
                let factory = Arc::clone(&factory);
                let shared = Arc::clone(&shared);
                let config = config.clone();
                let hooks = hooks.clone();
                Box::new(move || {
                    log::debug!("{info}: connection opened");
                    let opened = Instant::now();
                    // User code runs below (hooks, the factory, the milter's
                    // Drop): a panic there must not leak the registry entry (and
                    // its share of the socket) or the worker thread.
                    let served = catch_unwind(AssertUnwindSafe(|| {
                        if let Some(h) = &hooks {
                            h.connection_opened(&info);
                        }
                        let live = shared.registry.add(id, &stream);
                        let _unregister = Unregister(&shared.registry, id);
                        // A connection that waited in the queue past the start of
                        // a shutdown is between messages: close it unserved.
                        // (Checked after registering, so that a shutdown racing
                        // with this either sees it in the registry or is seen here.)
                        if shared.stopping.load(Ordering::SeqCst) {
                            log::info!(
                                "{info}: closed without serving it: the server is shutting down"
                            );
                            return;
                        }
                        let milter = factory();
                        serve(
                            stream,
                            milter,
                            info.clone(),
                            &config,
                            &live,
                            &shared.stopping,
                        );
                    }));
                    if let Err(p) = served {
                        log::error!(
                            "{info}: panic outside a stage handler (factory, hook, reset_message or drop): {}; connection closed",
                            crate::connection::panic_message(&p)
                        );
                    }
                    if let Some(h) = &hooks {
                        let _ = catch_unwind(AssertUnwindSafe(|| {
                            h.connection_closed(&info, opened.elapsed())
                        }));
                    }
                    log::debug!("{info}: connection closed");
                })
            })
        };
        Ok(Server {
            listeners: self.listeners,
            capacity: self.max_connections.saturating_add(self.queue),
            when_full: self.when_full,
            #[cfg(feature = "signals")]
            stop_on_signals: self.stop_on_signals,
            pool: Arc::new(Mutex::new(Pool::new(
                self.max_connections,
                self.queue,
                self.idle_thread_timeout,
                self.stack_size,
            ))),
            start,
            shared,
        })
    }
}

/// Removes a connection from the registry when dropped (also on unwinding).
struct Unregister<'a>(&'a Registry, u64);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

type StartFn = Arc<dyn Fn(crate::listener::Stream) -> crate::pool::Job + Send + Sync>;

#[derive(Debug)]
struct Shared {
    stopping: Arc<CacheLine<AtomicBool>>,
    deadline: Mutex<Option<Instant>>,
    registry: Registry,
    next_id: AtomicU64,
    /// (threads, idle threads), refreshed by the accept loop for stats.
    pool_counts: Mutex<(usize, usize)>,
    hooks: Option<Arc<dyn Hooks>>,
    /// The read timeout, checked by the first accept loop and the shutdown.
    read_watch: Option<Arc<ReadWatch>>,
}

impl Shared {
    /// Cuts the reads that waited past the read timeout (at most once per the
    /// watch's period; see `read_watch.rs`).
    fn check_reads(&self) {
        if let Some(w) = &self.read_watch {
            let cut = w.check(&self.registry);
            if cut > 0 {
                log::debug!("read timeout: cut {cut} connections");
            }
        }
    }
}

/// A running milter server. Build one with [`Server::builder`].
///
/// ```
/// # use milter_blocking::{handlers, Milter};
/// # #[derive(Milter, Default)]
/// # struct Nothing;
/// # #[handlers]
/// # impl Milter for Nothing {}
/// use milter_blocking::Server;
/// use std::time::Duration;
///
/// let server = Server::builder().listen("inet:0@127.0.0.1")?.build(Nothing::default)?;
/// println!("listening on {}", server.local_spec());
/// let handle = server.handle();
/// let running = std::thread::spawn(move || server.run());
/// handle.shutdown(Duration::ZERO);
/// running.join().expect("the server thread")?;
/// # Ok::<(), milter_blocking::ServerError>(())
/// ```
pub struct Server {
    listeners: Vec<Listener>,
    /// `max_connections` plus `queue`: the connections open at most.
    capacity: usize,
    when_full: WhenFull,
    /// Stop on SIGTERM and SIGINT, with this deadline.
    #[cfg(feature = "signals")]
    stop_on_signals: Option<Duration>,
    pool: Arc<Mutex<Pool>>,
    start: StartFn,
    shared: Arc<Shared>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// Controls a running server from other threads: cheap to clone.
///
/// ```
/// # use milter_blocking::{handlers, Milter};
/// # #[derive(Milter, Default)]
/// # struct Nothing;
/// # #[handlers]
/// # impl Milter for Nothing {}
/// use milter_blocking::Server;
/// use std::time::Duration;
///
/// let server = Server::builder().listen("inet:0@127.0.0.1")?.build(Nothing::default)?;
/// let handle = server.handle();
/// // A watcher thread: log the load, stop when asked.
/// let watcher = handle.clone();
/// std::thread::spawn(move || {
///     while !watcher.is_stopping() {
///         let s = watcher.stats();
///         log::debug!("{} connections open, {} threads", s.open, s.threads);
///         std::thread::sleep(Duration::from_millis(10));
///     }
/// });
/// handle.shutdown(Duration::ZERO);
/// server.run()?;
/// # Ok::<(), milter_blocking::ServerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    pool: Arc<Mutex<Pool>>,
}

impl ServerHandle {
    /// Starts a graceful shutdown: stop accepting (the listeners close within
    /// 200 ms), close connections waiting between commands, let messages in
    /// flight finish until `deadline` from now, then cut the rest. Returns at
    /// once; [`Server::run`] returns when all is done.
    ///
    /// A second call ends the drain at once: the connections still open are
    /// cut (as an operator's second SIGTERM or Ctrl-C expects).
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::Server;
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// let handle = server.handle();
    /// let running = std::thread::spawn(move || server.run());
    /// // From any thread: a signal handler's, a test's, an admin socket's.
    /// handle.shutdown(Duration::from_secs(10));
    /// running.join().expect("the server thread")?;
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn shutdown(&self, deadline: Duration) {
        if let Ok(mut d) = self.shared.deadline.lock() {
            let now = Instant::now();
            *d = Some(match *d {
                None => {
                    crate::service_notify::notify("STOPPING=1");
                    now + deadline
                }
                Some(_) => {
                    log::warn!("second stop request: cutting the connections still open");
                    now
                }
            });
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.registry.close_waiting();
    }

    /// Whether a shutdown was requested.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use std::time::Duration;
    ///
    /// let server = milter_blocking::Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// let handle = server.handle();
    /// assert!(!handle.is_stopping());
    /// handle.shutdown(Duration::ZERO);
    /// assert!(handle.is_stopping());
    /// server.run()?; // returns at once: the shutdown came first
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// How many connections are open, idle, and in each stage, right now.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// let server = milter_blocking::Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// let stats = server.handle().stats();
    /// assert_eq!(stats.open, 0);
    /// println!("{} open, {} idle, threads {}", stats.open, stats.idle, stats.threads);
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn stats(&self) -> ServerStats {
        let mut stats = self.shared.registry.stats();
        if let Ok(pool) = self.pool.try_lock() {
            stats.threads = pool.threads();
            stats.idle_threads = pool.idle();
        } else if let Ok(c) = self.shared.pool_counts.lock() {
            (stats.threads, stats.idle_threads) = *c;
        }
        stats
    }
}

impl Server {
    /// A builder with the defaults described on its methods.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// let server = milter_blocking::Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// # let _ = server;
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Where the first listener listens (with the real port when bound to 0).
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// use milter_blocking::client::Client;
    /// use milter_blocking::Server;
    ///
    /// let server = Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// let spec = server.local_spec(); // inet:PORT@127.0.0.1 with the port chosen
    /// let handle = server.handle();
    /// let running = std::thread::spawn(move || server.run());
    /// let client = Client::open(&spec)?;
    /// client.quit()?;
    /// handle.shutdown(std::time::Duration::ZERO);
    /// running.join().expect("the server thread")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_spec(&self) -> SocketSpec {
        self.listeners[0].local_spec()
    }

    /// Where every listener listens.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// // Two ports, say one for each MTA.
    /// let server = milter_blocking::Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// let specs = server.local_specs();
    /// assert_eq!(specs.len(), 2);
    /// assert_ne!(specs[0], specs[1]);
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn local_specs(&self) -> Vec<SocketSpec> {
        self.listeners.iter().map(Listener::local_spec).collect()
    }

    /// A handle to stop the server or look at it while it runs.
    ///
    /// ```
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// let server = milter_blocking::Server::builder()
    ///     .listen("inet:0@127.0.0.1")?
    ///     .build(Nothing::default)?;
    /// // Clones go to whatever threads need to stop or watch the server.
    /// let for_signals = server.handle();
    /// let for_metrics = for_signals.clone();
    /// # let _ = (for_metrics, server);
    /// # Ok::<(), milter_blocking::ServerError>(())
    /// ```
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
            pool: Arc::clone(&self.pool),
        }
    }

    /// Serves until [`ServerHandle::shutdown`]; returns after every connection
    /// thread has been joined.
    ///
    /// ```no_run
    /// # use milter_blocking::{handlers, Milter};
    /// # #[derive(Milter, Default)]
    /// # struct Nothing;
    /// # #[handlers]
    /// # impl Milter for Nothing {}
    /// fn main() -> Result<(), milter_blocking::ServerError> {
    ///     milter_blocking::Server::builder()
    ///         .listen("inet:7357@127.0.0.1")?
    ///         .build(Nothing::default)?
    ///         .run() // serves until a shutdown; see ServerHandle::shutdown
    /// }
    /// ```
    pub fn run(self) -> Result<(), ServerError> {
        #[cfg(feature = "signals")]
        let signals = match self.stop_on_signals {
            Some(deadline) => Some(
                crate::signals::SignalWatch::start(self.handle(), deadline)
                    .map_err(ServerError::Signals)?,
            ),
            None => None,
        };
        let Server {
            listeners,
            capacity,
            when_full,
            #[cfg(feature = "signals")]
                stop_on_signals: _,
            pool,
            start,
            shared,
        } = self;
        // The first accept loop also keeps the read timeout: it must wake at
        // least once per the watch's period.
        let first_poll = shared
            .read_watch
            .as_ref()
            .map_or(ACCEPT_POLL, |w| w.period().min(ACCEPT_POLL));
        for (i, l) in listeners.iter().enumerate() {
            l.set_accept_timeout(if i == 0 { first_poll } else { ACCEPT_POLL })
                .map_err(ServerError::Accept)?;
            log::info!("listening on {}", l.local_spec());
        }
        let soft_limit = crate::descriptor_limit::soft_limit();
        if let Some(warning) = crate::descriptor_limit::check(capacity, soft_limit) {
            log::warn!("{warning}");
        }
        let overflow = Overflow::start(when_full, Arc::clone(&shared.stopping))
            .map_err(ServerError::Overflow)?;
        crate::service_notify::notify("READY=1");
        // Each accept loop owns its listener and closes it as soon as it stops
        // (a Unix socket file is removed then): from the start of a shutdown,
        // new connections are refused by the kernel instead of waiting.
        let mut listeners = listeners.into_iter();
        let first = listeners.next().ok_or(ServerError::NoListener)?;
        let mut acceptors = Vec::new();
        for l in listeners {
            let pool = Arc::clone(&pool);
            let start = Arc::clone(&start);
            let shared = Arc::clone(&shared);
            let refused = Refused {
                to: overflow.sender(),
                when_full,
            };
            acceptors.push(thread::spawn(move || {
                accept_loop(&l, &pool, &start, &shared, &refused, false)
            }));
        }
        let refused = Refused {
            to: overflow.sender(),
            when_full,
        };
        let mut result = accept_loop(&first, &pool, &start, &shared, &refused, true);
        drop(first);
        for a in acceptors {
            match a.join() {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Ok(_) => {}
                Err(_) => log::error!("an accept thread panicked"),
            }
        }
        // Stop taking connections (also when an accept loop failed).
        shared.stopping.store(true, Ordering::SeqCst);
        shared.registry.close_waiting();
        let default = Instant::now() + Duration::from_secs(10);
        if let Ok(mut d) = shared.deadline.lock() {
            if d.is_none() {
                // Stopping for another reason than a shutdown request.
                crate::service_notify::notify("STOPPING=1");
                *d = Some(default);
            }
        }
        let deadline = || {
            let mut d = shared.deadline.lock().unwrap_or_else(|p| p.into_inner());
            *d.get_or_insert(default)
        };
        // Read each time: a second stop request moves it to now.
        while shared.registry.len() > 0 && Instant::now() < deadline() {
            shared.check_reads();
            thread::sleep(Duration::from_millis(10));
        }
        if shared.registry.len() > 0 {
            let closed = shared.registry.close_all();
            log::warn!("shutdown deadline reached: closed {closed} connections still open");
        }
        match pool.lock() {
            Ok(mut p) => p.join(),
            Err(p) => p.into_inner().join(),
        }
        #[cfg(feature = "signals")]
        drop(signals);
        log::info!("server stopped");
        result
    }
}

/// Where an accept loop sends the connections the pool refuses.
struct Refused {
    /// The answering thread (none: close them).
    to: Option<crossbeam_channel::Sender<Stream>>,
    when_full: WhenFull,
}

/// Accepts connections until the shutdown; with `keeps_reads`, also keeps the
/// read timeout between two accepts.
fn accept_loop(
    listener: &Listener,
    pool: &Mutex<Pool>,
    start: &StartFn,
    shared: &Shared,
    refused: &Refused,
    keeps_reads: bool,
) -> Result<(), ServerError> {
    let mut backoff = Duration::from_millis(10);
    let mut refusals = RefusalLog::new(refused.when_full.outcome());
    while !shared.stopping.load(Ordering::SeqCst) {
        if keeps_reads {
            shared.check_reads();
        }
        for line in refusals.tick(Instant::now()) {
            log::warn!("{line}");
        }
        match listener.accept() {
            Ok(Some(stream)) => {
                backoff = Duration::from_millis(10);
                let peer = stream.peer();
                let closer = stream.clone();
                let job = start(stream);
                let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
                let submitted = pool.submit(job);
                if let Ok(mut c) = shared.pool_counts.lock() {
                    *c = (pool.threads(), pool.idle());
                }
                drop(pool);
                if let Err((job, why)) = submitted {
                    drop(job);
                    crate::overflow::refuse(refused.to.as_ref(), closer);
                    if let Some(h) = &shared.hooks {
                        h.connection_refused(peer);
                    }
                    if let Some(line) = refusals.refused(Instant::now(), peer, why) {
                        log::warn!("{line}");
                    }
                }
            }
            Ok(None) => {}
            Err(e) if is_transient(&e) => {
                log::warn!("accept failed: {e}; retrying in {backoff:?}");
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                log::error!("accept failed: {e}; stopping the server");
                for line in refusals.finish(Instant::now()) {
                    log::warn!("{line}");
                }
                return Err(ServerError::Accept(e));
            }
        }
    }
    for line in refusals.finish(Instant::now()) {
        log::warn!("{line}");
    }
    Ok(())
}

/// Errors after which accepting may work again (out of file descriptors, a
/// connection reset before it was accepted, ...).
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12 | 71 | 4))
}
