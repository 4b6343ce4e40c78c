//! The pipeline fuzzer without instrumentation: the structure-aware mutator of
//! `fuzz/pipeline_case.rs` over the micro seeds and a pool of inputs that got far, many cases
//! per second on all cores, each under `catch_unwind`. Not part of CI (see docs/FUZZING.md).
//!
//!   cargo run --release --example fuzz_pipeline -- [EXECUTIONS] [THREADS] [SEED] [CRASH_DIR]

#[path = "../fuzz/pipeline_case.rs"]
mod case;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let crash_dir = std::path::PathBuf::from(args.get(3).cloned().unwrap_or("fuzz-crashes".into()));
    // Panics are counted and their inputs kept; their messages would drown the report.
    std::panic::set_hook(Box::new(|_| {}));
    let stages: Arc<[AtomicU64; 6]> = Arc::new(Default::default());
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let per = total / threads as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (stages, done, crash_dir) = (stages.clone(), done.clone(), crash_dir.clone());
            std::thread::spawn(move || {
                let seeds = case::seeds();
                let mut pool: Vec<Vec<u8>> = seeds.clone();
                let mut r = case::Rng::new(seed.wrapping_mul(1000) + t as u64);
                for i in 0..per {
                    let base = if r.below(10) < 7 {
                        &pool[r.below(pool.len())]
                    } else {
                        &seeds[r.below(seeds.len())]
                    };
                    let mut data = base.clone();
                    case::mutate(&mut data, &mut r);
                    match catch_unwind(AssertUnwindSafe(|| case::run(&data))) {
                        Ok(stage) => {
                            stages[stage as usize].fetch_add(1, Ordering::Relaxed);
                            // Inputs that got past the checksums breed further mutations.
                            if stage >= case::Stage::Build && data.len() < 1 << 20 {
                                if pool.len() < 512 {
                                    pool.push(data);
                                } else {
                                    let k = r.below(pool.len());
                                    pool[k] = data;
                                }
                            }
                        }
                        Err(_) => {
                            stages[5].fetch_add(1, Ordering::Relaxed);
                            let _ = std::fs::create_dir_all(&crash_dir);
                            let _ =
                                std::fs::write(crash_dir.join(format!("crash-{t}-{i}.bin")), &data);
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n % 500_000 == 0 {
                        eprintln!(
                            "{n} executions, {:.0}/s, {} crashes",
                            n as f64 / t0.elapsed().as_secs_f64(),
                            stages[5].load(Ordering::Relaxed)
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("fuzz thread");
    }
    let s: Vec<u64> = stages.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let n = done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let share = |k: u64| format!("{:.1}", 100.0 * k as f64 / n.max(1) as f64);
    println!(
        "{{\"executions\": {n}, \"seconds\": {secs:.0}, \"per_second\": {:.0}, \"threads\": {threads}, \"seed\": {seed}, \
\"refused_parsing_pct\": {}, \"refused_reading_tensors_pct\": {}, \"past_checksums_pct\": {}, \"built_pct\": {}, \"sampled_pct\": {}, \"crashes\": {}}}",
        n as f64 / secs,
        share(s[0]),
        share(s[1]),
        share(s[2] + s[3] + s[4]),
        share(s[3] + s[4]),
        share(s[4]),
        s[5]
    );
}
