use parascan::sweep::cases::Inputs;
use parascan::sweep::config::{default_shapes, Family};
use parascan::family::{Layout, LinearProblem};
use parascan::backend::Cpu;
use parascan::PlanRequest;
use std::time::Instant;
#[test]
fn prof() {
    for f in Family::ALL {
        for sh in default_shapes(f, &[Layout::Btd]) {
            let t0 = Instant::now();
            let inp = Inputs::<f32>::generate(sh, 1 << 18, false, 1).unwrap();
            let g = t0.elapsed();
            let p = inp.problem();
            let t1 = Instant::now();
            let cpu = Cpu::new();
            let _ = cpu.plan(&p, PlanRequest::Sequential).unwrap();
            let v = t1.elapsed();
            let t2 = Instant::now();
            let plan = cpu.plan(&p, PlanRequest::Chunk(64)).unwrap();
            let _m = parascan::scan::depth::measure(1 << 18, &plan);
            let d = t2.elapsed();
            let t3 = Instant::now();
            let mut out = vec![0f32; p.output_len()];
            let mut h = vec![0f32; p.final_len()];
            cpu.scan_into(&p, PlanRequest::Sequential, &mut out, &mut h).unwrap();
            let r1 = t3.elapsed();
            let t4 = Instant::now();
            cpu.scan_into(&p, PlanRequest::Sequential, &mut out, &mut h).unwrap();
            let r2 = t4.elapsed();
            eprintln!("{} gen {:?} validate {:?} depth {:?} run1 {:?} run2 {:?}", sh.label(), g, v, d, r1, r2);
        }
    }
}
