//! DKIM throughput of a milter, for comparing the `dkim` example with OpenDKIM
//! on the same machine and the same messages: `CONNECTIONS` connections (one
//! thread each) send one message over and over for `SECONDS`, through the
//! project's client with Postfix's profile, and every end-of-message reply is
//! checked (sign: a `DKIM-Signature` is inserted; verify: an
//! `Authentication-Results` with `dkim=pass` is inserted). Prints messages per
//! second and, given the milter's process id, its CPU time per message.
//!
//! Usage: `bench-dkim SOCKET sign|verify MESSAGE-FILE CONNECTIONS SECONDS [PID]`.
//! Sign mode connects as 127.0.0.1 (an internal client), verify mode as
//! 192.0.2.1.

use milter_blocking::client::{Client, ClientAddress, Envelope, Message, Modification, Verdict};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: bench-dkim SOCKET sign|verify MESSAGE-FILE CONNECTIONS SECONDS [PID]");
    std::process::exit(2)
}

/// User plus system CPU time of a process, from `/proc/PID/stat`, in clock
/// ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Whether the end of message did what `sign` mode expects.
fn check(sign: bool, mods: &[Modification]) -> Result<(), String> {
    let found = mods.iter().any(|m| match m {
        Modification::InsertHeader { name, value, .. } => {
            if sign {
                name.eq_ignore_ascii_case(b"DKIM-Signature")
            } else {
                name.eq_ignore_ascii_case(b"Authentication-Results")
                    && value.windows(9).any(|w| w == b"dkim=pass")
            }
        }
        Modification::AddHeader { name, value } => {
            // OpenDKIM may append rather than insert.
            !sign
                && name.eq_ignore_ascii_case(b"Authentication-Results")
                && value.windows(9).any(|w| w == b"dkim=pass")
        }
        _ => false,
    });
    if found {
        Ok(())
    } else {
        Err(format!("unexpected end of message: {mods:?}"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, mode, file, connections, seconds, rest @ ..] = &args[..] else {
        usage()
    };
    let sign = match mode.as_str() {
        "sign" => true,
        "verify" => false,
        _ => usage(),
    };
    let bytes = std::fs::read(file).unwrap_or_else(|e| {
        eprintln!("bench-dkim: {file}: {e}");
        std::process::exit(2)
    });
    let connections: usize = connections.parse().unwrap_or_else(|_| usage());
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| usage());
    let pid: Option<u32> = rest.first().map(|p| p.parse().unwrap_or_else(|_| usage()));
    let message = Arc::new(Message::parse(&bytes));
    let addr: SocketAddr = if sign {
        "127.0.0.1:40000".parse()
    } else {
        "192.0.2.1:40000".parse()
    }
    .unwrap_or_else(|_| usage());
    let envelope = Arc::new(
        Envelope::new("<alice@example.com>")
            .rcpt("<bob@example.org>")
            .client("client.example.net", ClientAddress::Ip(addr)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let ticks_before = pid.and_then(cpu_ticks);
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (spec, message, envelope) =
                (spec.clone(), Arc::clone(&message), Arc::clone(&envelope));
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || -> Result<(), String> {
                let mut c = Client::open(spec.as_str()).map_err(|e| e.to_string())?;
                while !stop.load(Ordering::Relaxed) {
                    let t = c
                        .send_message(&envelope, &message)
                        .map_err(|e| e.to_string())?;
                    if t.verdict != Verdict::Accept {
                        return Err(format!("verdict {:?}", t.verdict));
                    }
                    let eom = t.eom.ok_or("no end of message")?;
                    check(sign, &eom.modifications)?;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = c.quit();
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut failed = false;
    for t in threads {
        if let Ok(Err(e)) | Err(e) = t.join().map_err(|_| "panicked".to_string()) {
            eprintln!("bench-dkim: a connection failed: {e}");
            failed = true;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    let ticks = match (ticks_before, pid.and_then(cpu_ticks)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // Linux clock ticks are 1/100 s (USER_HZ).
    let cpu = ticks
        .map(|t| format!(" cpu {:.0} us/msg", t as f64 * 10_000.0 / n.max(1) as f64))
        .unwrap_or_default();
    println!(
        "{mode} c={connections}: {n} messages in {elapsed:.1} s: {:.0} msg/s{cpu}",
        n as f64 / elapsed
    );
    if failed {
        std::process::exit(1);
    }
}
