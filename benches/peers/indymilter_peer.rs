//! The benchmark workload on indymilter (tokio, multi-thread runtime).
//!
//! Usage: `indymilter_peer inet:PORT@127.0.0.1` or `indymilter_peer unix:/path`.
//!
//! Every stage has a callback (so indymilter negotiates protocol flags 0 and
//! the MTA sends and expects a reply for every stage); each callback returns
//! continue. Body bytes are counted per message; end of message adds
//! `X-Bench: <body bytes>` and continues. Actions: ADDHDRS only.
//! The connection cap is raised from indymilter's default of 100 to 1024.
//! TCP_NODELAY is set on accepted TCP sockets by a small `Listener` wrapper.

use indymilter::{Actions, Callbacks, Config, ContextActions, Listener, Status};
use std::{
    io,
    task::{Context, Poll},
};
use tokio::{
    net::{TcpListener, TcpStream, UnixListener},
    signal::unix::{signal, SignalKind},
};

/// A TCP listener that sets TCP_NODELAY on every accepted socket.
/// indymilter writes the `h` reply and the final `c` at end of message with
/// two separate writes (one flush per reply); without TCP_NODELAY the second
/// one waits for the MTA's delayed ACK (~40 ms).
struct NoDelayTcpListener(TcpListener);

impl Listener for NoDelayTcpListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        match self.0.poll_accept(cx) {
            Poll::Ready(Ok((stream, _))) => {
                if let Err(e) = stream.set_nodelay(true) {
                    eprintln!("indymilter_peer: TCP_NODELAY: {e}");
                }
                Poll::Ready(Ok(stream))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Per-connection data: body bytes of the current message.
type Data = u64;

fn callbacks() -> Callbacks<Data> {
    Callbacks::new()
        .on_connect(|cx, _host, _addr| {
            cx.data = Some(0);
            Box::pin(async { Status::Continue })
        })
        .on_helo(|_, _| Box::pin(async { Status::Continue }))
        .on_mail(|cx, _args| {
            cx.data = Some(0);
            Box::pin(async { Status::Continue })
        })
        .on_rcpt(|_, _| Box::pin(async { Status::Continue }))
        .on_data(|_| Box::pin(async { Status::Continue }))
        .on_header(|_, _, _| Box::pin(async { Status::Continue }))
        .on_eoh(|_| Box::pin(async { Status::Continue }))
        .on_body(|cx, chunk| {
            *cx.data.get_or_insert(0) += chunk.len() as u64;
            Box::pin(async { Status::Continue })
        })
        .on_eom(|cx| {
            Box::pin(async move {
                let bytes = cx.data.replace(0).unwrap_or(0);
                match cx.actions.add_header("X-Bench", bytes.to_string()).await {
                    Ok(()) => Status::Continue,
                    Err(_) => Status::Tempfail,
                }
            })
        })
        .on_abort(|cx| {
            cx.data = Some(0);
            Box::pin(async { Status::Continue })
        })
        .on_close(|_| Box::pin(async { Status::Continue }))
        .on_unknown(|_, _| Box::pin(async { Status::Continue }))
}

async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("indymilter_peer: cannot handle SIGTERM: {e}");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let config = Config {
        max_connections: 1024,
        actions: Actions::ADD_HEADER,
        ..Default::default()
    };
    let result = if let Some(rest) = arg.strip_prefix("inet:") {
        let Some((port, host)) = rest.split_once('@') else {
            usage()
        };
        match TcpListener::bind(format!("{host}:{port}")).await {
            Ok(l) => {
                indymilter::run(
                    NoDelayTcpListener(l),
                    callbacks(),
                    config,
                    shutdown_signal(),
                )
                .await
            }
            Err(e) => Err(e),
        }
    } else if let Some(path) = arg
        .strip_prefix("unix:")
        .or_else(|| arg.strip_prefix("local:"))
    {
        let _ = std::fs::remove_file(path);
        let r = match UnixListener::bind(path) {
            Ok(l) => indymilter::run(l, callbacks(), config, shutdown_signal()).await,
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(path);
        r
    } else {
        usage()
    };
    if let Err(e) = result {
        eprintln!("indymilter_peer: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: indymilter_peer inet:PORT@127.0.0.1 | unix:/path");
    std::process::exit(2);
}
