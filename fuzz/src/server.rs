//! The real `milter-blocking` server, fed fuzzed bytes as an MTA's side of one
//! connection over a Unix socket: it must never panic (a panic hook turns any panic
//! into an abort, which the fuzzer reports), and after the input ends it must close
//! the connection promptly (a hang fails the run).

use milter_blocking::{
    handlers, ConnectAddr, Context, EnvelopeAddr, EomContext, HandlerResult, Header, Milter,
    Server, Status,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Handles every stage; the input steers which decisions and modifications it
/// makes, so that the fuzzer reaches every path of the server.
#[derive(Milter, Default)]
#[milter(
    actions(
        add_header,
        change_header,
        add_rcpt,
        add_rcpt_with_args,
        delete_rcpt,
        change_from,
        change_body,
        quarantine
    ),
    options(skip),
    macros(connect = "{j} {daemon_name}", mail = "{i}", eom = "{i} {msg_id}")
)]
struct Steered {
    #[milter(per_message)]
    headers: u32,
}

fn pick(bytes: &[u8]) -> Status {
    match bytes.first().copied().unwrap_or(0) % 16 {
        0 => Status::Reject,
        1 => Status::Tempfail,
        2 => Status::Discard,
        3 => Status::Accept,
        4 => Status::Skip,
        5 => Status::reply(550, Some("5.7.1"), "fuzz 100%").unwrap_or(Status::Reject),
        _ => Status::Continue,
    }
}

#[handlers]
impl Milter for Steered {
    fn connect(&mut self, _: &mut Context<'_>, host: &[u8], _: ConnectAddr<'_>) -> Status {
        pick(host)
    }
    fn helo(&mut self, _: &mut Context<'_>, name: &[u8]) -> Status {
        pick(name)
    }
    fn mail(&mut self, _: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> Status {
        pick(a.address)
    }
    fn rcpt(&mut self, _: &mut Context<'_>, a: &EnvelopeAddr<'_>) -> Status {
        pick(a.bare())
    }
    fn data(&mut self, ctx: &mut Context<'_>) -> Status {
        pick(ctx.queue_id().unwrap_or("").as_bytes())
    }
    fn header(&mut self, _: &mut Context<'_>, h: &Header<'_>) -> Status {
        self.headers += 1;
        pick(h.value)
    }
    fn eoh(&mut self, _: &mut Context<'_>) -> Status {
        Status::Continue
    }
    fn body(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> Status {
        pick(chunk)
    }
    fn eom(&mut self, ctx: &mut EomContext<'_, Self>) -> HandlerResult {
        ctx.progress()?;
        ctx.add_header("X-Fuzz", self.headers.to_string())?;
        ctx.set_header("Subject", "fuzzed")?;
        ctx.delete_all_headers("X-Drop")?;
        ctx.prepend_header("X-Top", "1")?;
        ctx.add_rcpt("<added@fuzz.test>")?;
        ctx.add_rcpt_with_args("<args@fuzz.test>", "NOTIFY=NEVER")?;
        ctx.delete_rcpt("<removed@fuzz.test>")?;
        ctx.change_from("<from@fuzz.test>", Some("RET=HDRS"))?;
        ctx.replace_body(vec![b'x'; 70_000])?;
        ctx.quarantine("fuzz")?;
        Ok(pick(&[self.headers as u8]))
    }
    fn unknown(&mut self, _: &mut Context<'_>, line: &[u8]) -> Status {
        pick(line)
    }
}

/// The server, started once per process.
fn socket() -> &'static PathBuf {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        // Any panic is a bug here (the milter above never panics): abort so that
        // the fuzzer sees it, whichever thread it happens on.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
        let dir = std::env::temp_dir().join(format!("milter-fuzz-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("milter.sock");
        let server = Server::builder()
            .read_timeout(Duration::from_secs(5))
            .write_timeout(Duration::from_secs(5))
            .listen(&format!("unix:{}", path.display()))
            .expect("listen")
            .build(Steered::default)
            .expect("server");
        std::thread::spawn(move || server.run());
        path
    })
}

/// One input: the first byte sets how many bytes go per write (1–256), the rest
/// is written to the server as the MTA's stream, then the write side is closed and
/// everything the server sends is read until it closes.
pub fn server(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut conn = UnixStream::connect(socket()).expect("the server accepts connections");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Read concurrently so that a server writing a lot never blocks on us.
    let mut reader = conn.try_clone().expect("clone");
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    for piece in stream.chunks(usize::from(split) + 1) {
        if conn.write_all(piece).is_err() {
            break; // the server closed the connection: fine
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
    match drain.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the server neither answered nor closed within 10 s: {e}"),
        Err(_) => panic!("reader thread panicked"),
    }
}
