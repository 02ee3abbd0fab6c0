//! Runs every fuzz target body on stable, without libFuzzer: each committed seed
//! (`corpus/TARGET/*`), each saved crash (`artifacts/TARGET/*`, if any), and a
//! few thousand deterministic mutations of the seeds.
//!
//! `cargo test` in this directory; `FUZZ_MUTATIONS=N` changes the number of
//! mutations per target (default 2000).

use std::fs;
use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("decode_frame", milter_core_fuzz::decode_frame),
    ("decode_command", milter_core_fuzz::decode_command),
    ("decode_reply", milter_core_fuzz::decode_reply),
    ("filter_session", milter_core_fuzz::filter_session),
    ("client_session", milter_core_fuzz::client_session),
    ("server", milter_core_fuzz::server),
    ("recording", milter_core_fuzz::recording),
];

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = files(&root.join("corpus").join(target));
    assert!(!seeds.is_empty(), "no seed corpus for {target}");
    seeds
}

#[test]
fn seeds_and_artifacts_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        for input in seeds(name) {
            target(&input);
        }
        for input in files(&root.join("artifacts").join(name)) {
            target(&input);
        }
    }
}

/// xorshift64: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(16).min(len - i);
                input.drain(i..i + n);
            }
            4 if !other.is_empty() => {
                // Splice a piece of another seed in.
                let from = rng.below(other.len());
                let n = rng.below(64).min(other.len() - from);
                let at = rng.below(len + 1);
                input.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => {
                let at = rng.below(len + 1);
                input.truncate(at);
            }
        }
    }
}

#[test]
fn mutated_seeds_run_clean() {
    let rounds: usize = std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..rounds {
            let mut input = seeds[rng.below(seeds.len())].clone();
            let other = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, &mut input, other);
            target(&input);
        }
    }
}
