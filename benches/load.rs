//! A fixed amount of the benchmark's load against one milter, for profilers:
//! `CONNECTIONS` connections (one thread each), each sending `MESSAGES` messages
//! of `BODY_BYTES` (default 4096) through the benchmark's sequence, every reply
//! checked. Prints the messages sent, the time taken and the rate.
//!
//! Usage: `bench-load SOCKET CONNECTIONS MESSAGES [BODY_BYTES]`, for example
//! against a milter under `valgrind --tool=callgrind`, twice with different
//! `MESSAGES`, to count the instructions of a message without those of setting
//! up a connection.

use milter_benches as load;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: Option<usize>| -> usize {
        match (args.get(i), default) {
            (Some(a), _) => a.parse().unwrap_or_else(|_| usage()),
            (None, Some(d)) => d,
            (None, None) => usage(),
        }
    };
    let Some(spec) = args.first().cloned() else {
        usage()
    };
    let (connections, messages, body_bytes) =
        (number(1, None), number(2, None), number(3, Some(4096)));
    let body = Arc::new(load::body(body_bytes));
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let (spec, body) = (spec.clone(), Arc::clone(&body));
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> Result<(), String> {
                    let mut c = load::open(&spec, i)?;
                    let message = load::Message::new(&body);
                    (0..messages).try_for_each(|_| message.send(&mut c))
                })
                .unwrap_or_else(|e| {
                    eprintln!("bench-load: cannot start a load thread: {e}");
                    std::process::exit(1)
                })
        })
        .collect();
    let mut failed = false;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("bench-load: a connection failed: {e}");
                failed = true;
            }
            Err(_) => {
                eprintln!("bench-load: a load thread panicked");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    let elapsed = started.elapsed();
    let total = connections * messages;
    println!(
        "{total} messages over {connections} connections in {elapsed:?} ({:.0} messages/s)",
        total as f64 / elapsed.as_secs_f64()
    );
}

fn usage() -> ! {
    eprintln!("usage: bench-load SOCKET CONNECTIONS MESSAGES [BODY_BYTES]");
    std::process::exit(64)
}
