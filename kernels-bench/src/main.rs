//! The native side of the kernel benchmark: runs every workload `--reps N` times (default 5) on
//! this thread and prints the checksums and times as JSON on stdout. `cargo xtask bench` runs
//! it with the workspace release profile, like the native agent is built.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use kernels_bench::WORKLOADS;
use serde_json::json;

const USAGE: &str = "usage: kernels-bench [--reps N]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps = match args.as_slice() {
        [] => 5,
        [flag, n] if flag == "--reps" => match n.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("kernels-bench: --reps takes a positive number\n{USAGE}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for (index, workload) in WORKLOADS.iter().enumerate() {
        let mut seconds = Vec::new();
        let mut checksum = 0;
        for _ in 0..reps {
            let started = Instant::now();
            // black_box: the workload is picked at run time, as in the WASM export.
            checksum = black_box(kernels_bench::run(black_box(index)).expect("index in range"));
            seconds.push(started.elapsed().as_secs_f64());
        }
        rows.push(json!({
            "kernel": workload.kernel,
            "name": workload.name,
            "checksum": checksum.to_string(),
            "seconds": seconds,
        }));
    }
    println!("{}", json!({ "workloads": rows }));
    ExitCode::SUCCESS
}
