//! Times `Engine::apply` of snapshot files (the issue 6 scale target: bench/kube_scale.py's
//! `engine_apply`, without Python).
//!
//!     cargo run --release --no-default-features --example apply_snapshot -- A.json [B.json] [rounds]
//!
//! Rounds alternate A and B (e.g. the snapshot before and after one EndpointSlice change), each
//! with the next version. Prints wall and thread-CPU milliseconds per round, then the medians.

use std::time::Instant;

/// The allocator the Python extension runs with (src/py/).
#[global_allocator]
static GLOBAL: _engine::MiMalloc = _engine::MiMalloc;

fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // utime and stime (fields 14 and 15) in clock ticks (100 Hz): coarse, so also the wall time.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 * 10.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = std::fs::read_to_string(&args[0]).expect("snapshot A");
    let b = args
        .get(1)
        .map_or_else(|| a.clone(), |p| std::fs::read_to_string(p).expect("snapshot B"));
    let rounds: usize = args.get(2).map_or(10, |r| r.parse().expect("rounds"));
    let engine = _engine::Engine::new(1).expect("engine");
    let (mut apply, mut cpu) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let json = if round % 2 == 0 { &a } else { &b };
        let (t, c) = (Instant::now(), cpu_ms());
        engine.apply(json).expect("applied");
        let (wall, cpu_used) = (t.elapsed().as_secs_f64() * 1000.0, cpu_ms() - c);
        println!("round {round}: apply {wall:.1} ms (cpu {cpu_used:.0} ms)");
        if round > 0 {
            // Round 0 builds every endpoint; the rest are what a change costs.
            apply.push(wall);
            cpu.push(cpu_used);
        }
    }
    println!(
        "median of {rounds}: apply {:.1} ms (cpu {:.0} ms), {} bytes",
        median(apply),
        median(cpu),
        a.len()
    );
}
