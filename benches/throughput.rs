//! Throughput of milter implementations under the same load, side by side.
//!
//! `cargo bench -p milter-benches --bench throughput` runs the whole grid
//! (concurrency 1, 4, 32, 256 × unix socket and TCP loopback × small and large
//! messages) with every implementation interleaved, several repetitions, and prints a
//! table of medians and of ratios to the floor (each repetition's ratio of two runs
//! made side by side; the median and the range over repetitions). `cargo test --benches` runs it once,
//! briefly, on a small grid, so that it cannot rot. Environment:
//! `BENCH_SECONDS` (per measurement, default 2), `BENCH_REPS` (default 3),
//! `BENCH_ONLY` (comma-separated implementation names), `BENCH_C` (concurrencies,
//! default `1,4,32,256`), `BENCH_PROFILES` (`small,large`), `BENCH_TRANSPORTS`
//! (`unix,tcp`), `BENCH_OUT` (also write the table to this file), `BENCH_VERBOSE`
//! (print every measurement, not only the medians), `BENCH_EXTRA`
//! (`NAME=PROGRAM,...`: more milters to measure, each run as `PROGRAM SOCKET-SPEC`
//! and given the same workload; PROGRAM may name one of this package's programs,
//! `bench-ours`, `bench-floor` or `bench-indymilter`, which is then the one cargo
//! built for this run, wherever `CARGO_TARGET_DIR` puts it). Run under
//! `taskset -c 0` to pin every process to one core: that removes the cost of waking
//! threads on the other CPU and shows the CPU cost per message.
//!
//! Load: the project's client, C connections with one thread each; per connection
//! connect and helo once, then messages back to back: mail, rcpt, data, 10 headers,
//! eoh, the body in chunks of at most 65535 bytes, eom, and abort as Postfix does,
//! with Postfix's macros. Every reply is checked; at end of message the milter must
//! add exactly `X-Bench: <body bytes>`. Any other answer fails the run.

use milter_benches as load;
use milter_blocking::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Unix,
    Tcp,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    Small,
    Large,
}

impl Size {
    fn body(self) -> Vec<u8> {
        load::body(match self {
            Size::Small => 4 * 1024,
            Size::Large => 1024 * 1024,
        })
    }
}

struct Implementation {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

/// One measurement.
#[derive(Clone, Debug)]
struct Sample {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    messages: u64,
    /// CPU time the milter process spent per message.
    cpu_per_message: Option<CpuTime>,
}

/// This package's milter programs, by name, as cargo built them for this bench
/// (inside `CARGO_TARGET_DIR` when that is set).
const PEERS: [(&str, &str); 3] = [
    ("bench-ours", env!("CARGO_BIN_EXE_bench-ours")),
    ("bench-floor", env!("CARGO_BIN_EXE_bench-floor")),
    ("bench-indymilter", env!("CARGO_BIN_EXE_bench-indymilter")),
];

/// The program a name stands for: one of [`PEERS`], else the name as a path.
fn program(name: &str) -> PathBuf {
    let built = PEERS.iter().find(|(peer, _)| *peer == name);
    PathBuf::from(built.map_or(name, |(_, path)| path))
}

fn implementations(work: &Path) -> Vec<Implementation> {
    let mut list = vec![
        Implementation {
            name: "ours",
            program: program("bench-ours"),
            args: vec![],
        },
        Implementation {
            name: "ours-lean",
            program: program("bench-ours"),
            args: vec!["--lean".into()],
        },
        Implementation {
            name: "ours-no-poll",
            program: program("bench-ours"),
            args: vec!["--no-busy-poll".into()],
        },
        Implementation {
            name: "floor",
            program: program("bench-floor"),
            args: vec![],
        },
        Implementation {
            name: "indymilter",
            program: program("bench-indymilter"),
            args: vec![],
        },
    ];
    match build_libmilter(work) {
        Ok(program) => list.push(Implementation {
            name: "libmilter",
            program,
            args: vec![],
        }),
        Err(why) => println!("libmilter: not measured ({why})"),
    }
    // Any other milter program taking a socket spec as its one argument.
    if let Ok(extra) = std::env::var("BENCH_EXTRA") {
        for item in extra.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((name, path)) => list.push(Implementation {
                    name: Box::leak(name.trim().to_string().into_boxed_str()),
                    program: program(path.trim()),
                    args: vec![],
                }),
                None => println!("BENCH_EXTRA: {item:?} is not NAME=PROGRAM; ignored"),
            }
        }
    }
    if let Ok(only) = std::env::var("BENCH_ONLY") {
        let only: Vec<&str> = only.split(',').map(str::trim).collect();
        list.retain(|i| only.contains(&i.name));
    }
    list
}

/// Builds the libmilter peer with the system C compiler, if libmilter is installed.
fn build_libmilter(work: &Path) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/libmilter_bench.c");
    if !Path::new("/usr/include/libmilter/mfapi.h").exists() {
        return Err("libmilter headers not installed (Debian package libmilter-dev)".into());
    }
    let out = work.join("libmilter_bench");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .args(["-lmilter", "-lpthread"])
        .status()
        .map_err(|e| format!("running cc: {e}"))?;
    if !status.success() {
        return Err(format!("cc failed: {status}"));
    }
    Ok(out)
}

/// Pause between two measurements.
const SETTLE: Duration = Duration::from_millis(300);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Running {
    child: Child,
    spec: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(imp: &Implementation, transport: Transport, work: &Path, n: usize) -> Running {
    let spec = match transport {
        Transport::Tcp => format!("inet:{}@127.0.0.1", free_port()),
        Transport::Unix => {
            let p = work.join(format!("{}-{n}.sock", imp.name));
            let _ = std::fs::remove_file(&p);
            format!("unix:{}", p.display())
        }
    };
    let child = Command::new(&imp.program)
        .args(&imp.args)
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", imp.name));
    let running = Running { child, spec };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::open(running.spec.as_str()).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} did not start listening",
            imp.name
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// Runs the load on one running implementation; `Err` if any connection failed.
fn measure(spec: &str, pid: u32, conns: usize, size: Size, seconds: f64) -> Result<Sample, String> {
    let body = Arc::new(size.body());
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(conns + 1));
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let spec = spec.to_string();
            let body = Arc::clone(&body);
            let stop = Arc::clone(&stop);
            let barrier = Arc::clone(&barrier);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || connection(&spec, i, &body, &stop, &barrier))
                .expect("load thread")
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let cpu_before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(format!("a load connection failed: {e}")),
            Err(_) => failure = Some("a load thread panicked".to_string()),
        }
    }
    let cpu_after = cpu_time(pid);
    if let Some(f) = failure {
        return Err(f);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_per_message = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if !latencies.is_empty() => {
            let n = latencies.len() as u32;
            Some(CpuTime {
                user: a.user.saturating_sub(b.user) / n,
                system: a.system.saturating_sub(b.system) / n,
            })
        }
        _ => None,
    };
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    Ok(Sample {
        per_second: latencies.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        messages: latencies.len() as u64,
        cpu_per_message,
    })
}

/// One load connection: messages back to back until `stop`; returns per-message
/// latencies.
fn connection(
    spec: &str,
    index: usize,
    body: &[u8],
    stop: &AtomicBool,
    barrier: &Barrier,
) -> Result<Vec<Duration>, String> {
    let prepared = load::open(spec, index);
    barrier.wait();
    let mut c = prepared?;
    let message = load::Message::new(body);
    let mut latencies = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        message.send(&mut c)?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

/// The ratio of `imp`'s throughput to `floor`'s in every repetition that
/// measured both: the two ran side by side, within seconds of each other, so
/// that a slow minute of the machine weighs on both alike.
fn paired_ratios(imp: &[(usize, Sample)], floor: &[(usize, Sample)]) -> Vec<f64> {
    imp.iter()
        .filter_map(|(rep, s)| {
            let f = floor.iter().find(|(r, _)| r == rep)?;
            (f.1.per_second > 0.0).then(|| s.per_second / f.1.per_second)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// CPU time (user and system, all threads, living and exited) a process has
/// used, from `/proc/PID/stat` (in clock ticks of 1/100 s, Linux's `USER_HZ`).
fn cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| -> Option<Duration> {
        Some(Duration::from_millis(
            fields.get(i)?.parse::<u64>().ok()? * 10,
        ))
    };
    Some(CpuTime {
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

/// CPU time of a process, in user space and in the kernel.
#[derive(Clone, Copy, Debug, Default)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Our server holding `n` idle connections (negotiated, connected, HELO done).
fn idle_memory(imp: &Implementation, work: &Path, n: usize) -> (u64, u64) {
    let running = start(imp, Transport::Unix, work, 9999);
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(running.child.id()).unwrap_or(0);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(load::open(&running.spec, i).expect("idle connection"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(running.child.id()).unwrap_or(0);
    drop(clients);
    (before, after)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 2.0 } else { 0.3 });
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if full { 3 } else { 1 });
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    let work = std::env::temp_dir().join(format!("milter-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let imps = implementations(&work);
    let grid: Vec<(usize, Transport, Size)> = if full {
        let list = |var: &str, all: &str| std::env::var(var).unwrap_or_else(|_| all.to_string());
        let conns: Vec<usize> = list("BENCH_C", "1,4,32,256")
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let mut g = Vec::new();
        for size in [Size::Small, Size::Large] {
            if !list("BENCH_PROFILES", "small,large").contains(&format!("{size:?}").to_lowercase())
            {
                continue;
            }
            for transport in [Transport::Unix, Transport::Tcp] {
                if !list("BENCH_TRANSPORTS", "unix,tcp")
                    .contains(&format!("{transport:?}").to_lowercase())
                {
                    continue;
                }
                for &c in &conns {
                    g.push((c, transport, size));
                }
            }
        }
        g
    } else {
        vec![
            (4, Transport::Unix, Size::Small),
            (4, Transport::Tcp, Size::Small),
        ]
    };

    // Rows are printed as each point finishes; the header first, so that what is
    // printed is a Markdown table (with BENCH_VERBOSE, the whole table is printed
    // again at the end, away from the per-run lines).
    let header = concat!(
        "| profile | transport | C | implementation | msgs/s | p50 | p99 | CPU/msg | × floor | range |\n",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    print!("{header}");
    let mut table = String::from(header);
    let mut n = 0;
    for (conns, transport, size) in grid {
        // Per implementation: (repetition, sample) of every run that succeeded.
        let mut results: Vec<Vec<(usize, Sample)>> = vec![Vec::new(); imps.len()];
        for rep in 0..reps {
            for k in 0..imps.len() {
                // Interleave, rotating the order each repetition.
                let i = (k + rep) % imps.len();
                n += 1;
                let running = start(&imps[i], transport, &work, n);
                let outcome = measure(&running.spec, running.child.id(), conns, size, seconds);
                drop(running);
                // Let the machine settle (the stopped process's sockets and memory
                // released) so that it does not weigh on the next measurement.
                std::thread::sleep(SETTLE);
                match outcome {
                    Ok(s) if s.messages > 0 => {
                        if verbose {
                            println!(
                                "  {size:?}/{transport:?}/C={conns} rep {rep}: {} {:.0} msgs/s, CPU/msg {:?} user + {:?} system",
                                imps[i].name,
                                s.per_second,
                                s.cpu_per_message.unwrap_or_default().user,
                                s.cpu_per_message.unwrap_or_default().system,
                            );
                        }
                        results[i].push((rep, s))
                    }
                    outcome => {
                        let why = match outcome {
                            Err(e) => e,
                            Ok(_) => "no message completed".to_string(),
                        };
                        // Our server must never fail; a peer's failure is a result.
                        assert!(!imps[i].name.starts_with("ours"), "{}: {why}", imps[i].name);
                        println!(
                            "{} failed at {size:?}/{transport:?}/C={conns} (repetition {rep}): {why}",
                            imps[i].name
                        );
                    }
                }
            }
        }
        let medians: Vec<Option<(f64, Sample)>> = results
            .iter()
            .map(|r| {
                if r.is_empty() {
                    return None;
                }
                let m = median(r.iter().map(|(_, s)| s.per_second).collect());
                let pick = r
                    .iter()
                    .map(|(_, s)| s)
                    .min_by(|a, b| {
                        (a.per_second - m)
                            .abs()
                            .partial_cmp(&(b.per_second - m).abs())
                            .unwrap_or(std::cmp::Ordering::Equal)
                    })
                    .cloned()
                    .expect("a sample");
                Some((m, pick))
            })
            .collect();
        let floor = imps.iter().position(|i| i.name == "floor");
        for (k, (imp, result)) in imps.iter().zip(&medians).enumerate() {
            let Some((m, s)) = result else {
                let line = format!(
                    "| {size:?} | {transport:?} | {conns} | {} | failed every repetition | | | | | |\n",
                    imp.name
                );
                print!("{line}");
                table.push_str(&line);
                continue;
            };
            let (ratio, range) = match floor.map(|f| paired_ratios(&results[k], &results[f])) {
                Some(r) if !r.is_empty() => {
                    let (lo, hi) = r
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                    (format!("{:.2}", median(r)), format!("{lo:.2}–{hi:.2}"))
                }
                _ => ("-".to_string(), "-".to_string()),
            };
            let cpu = results[k]
                .iter()
                .filter_map(|(_, s)| s.cpu_per_message)
                .map(|c| (c.user + c.system).as_secs_f64() * 1e6)
                .collect::<Vec<f64>>();
            let cpu = if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0} µs", median(cpu))
            };
            let line = format!(
                "| {:?} | {:?} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} |\n",
                size,
                transport,
                conns,
                imp.name,
                m,
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3,
                cpu,
                ratio,
                range
            );
            print!("{line}");
            table.push_str(&line);
        }
    }
    if let Some(ours) = imps.iter().find(|i| i.name == "ours") {
        let n = if full { 1000 } else { 50 };
        let (before, after) = idle_memory(ours, &work, n);
        let line = format!(
            "\nours: resident memory {:.1} MiB at start, {:.1} MiB holding {n} idle connections\n",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
        print!("{line}");
        table.push_str(&line);
    }
    if verbose {
        print!("\n{table}");
    }
    if let Ok(path) = std::env::var("BENCH_OUT") {
        let _ = std::fs::write(path, &table);
    }
    let _ = std::fs::remove_dir_all(&work);
    println!("\nthroughput: 1 passed, 0 failed");
}
