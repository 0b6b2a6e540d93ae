//! Probe: f32 gemm throughput of the gemm crate on the trainer's shapes, per wall second and per
//! CPU second of this process (the latter is less disturbed by other processes on the machine).
use std::time::Instant;

fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1);
    let colmajor_rhs = std::env::var_os("COLMAJOR_RHS").is_some();
    let dst_t = std::env::var_os("DST_T").is_some();
    for (m, n, k) in [(512usize, 1536usize, 576usize), (512, 576, 1536), (512, 576, 576), (512, 49152, 576), (512, 576, 49152)] {
        let a = vec![1.0f32; m * k];
        let b = vec![0.5f32; k * n];
        let mut c = vec![0f32; m * n];
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        let reps = (4e10 / (2.0 * (m * n * k) as f64)).ceil() as usize;
        let (t, c0) = (Instant::now(), cpu_s());
        for _ in 0..reps {
            unsafe {
                let (rcs, rrs) = if colmajor_rhs { (k as isize, 1) } else { (1, n as isize) };
                let (dcs, drs) = if dst_t { (m as isize, 1) } else { (1, n as isize) };
                gemm::gemm(m, n, k, c.as_mut_ptr(), dcs, drs, false, a.as_ptr(), 1, k as isize, b.as_ptr(), rcs, rrs, 0.0, 1.0, false, false, false, par);
            }
        }
        let flop = 2.0 * (m * n * k * reps) as f64;
        println!("{m}x{n}x{k}: {:.1} GFLOP/s wall, {:.1} GFLOP per CPU-s", flop / t.elapsed().as_secs_f64() / 1e9, flop / (cpu_s() - c0) / 1e9);
    }
}
