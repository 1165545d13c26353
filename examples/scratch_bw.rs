use parascan::backend::Cpu;
use parascan::family::{diagonal::Diagonal, Layout, LinearProblem};
use parascan::PlanRequest;
use rayon::prelude::*;
use std::time::Instant;
fn main() {
    let (b, t, d) = (16usize, 65536usize, 64usize);
    let n = b * t * d;
    let a = vec![0.9f32; n];
    let bb = vec![0.1f32; n];
    let mut out = vec![0f32; n];
    let mut last = vec![0f32; b * d];
    let src = vec![1.0f32; n * 3 / 2];
    let mut dst = vec![0.0f32; n * 3 / 2];
    for _ in 0..3 {
        let s = Instant::now();
        dst.par_chunks_mut(1 << 16).zip(src.par_chunks(1 << 16)).for_each(|(d, s)| d.copy_from_slice(s));
        let dt = s.elapsed().as_secs_f64();
        println!("copy {:.2} GB/s", (src.len() * 8) as f64 / dt / 1e9);
    }
    for layout in [Layout::Btd, Layout::Bdt] {
        let p = Diagonal { a: &a, b: &bb, h0: None, batch: b, len: t, dim: d, layout };
        for plan in [PlanRequest::Auto, PlanRequest::Chunk(4096)] {
            for _ in 0..3 {
                let s = Instant::now();
                Cpu::new().scan_into(&p, plan, &mut out, &mut last).unwrap();
                let dt = s.elapsed().as_secs_f64();
                println!("{layout} {plan} {:.2} GB/s", p.bytes_moved() as f64 / dt / 1e9);
            }
        }
    }
}
