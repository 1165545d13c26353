//! Problems whose inputs stay on the device while many plans run on them.
//!
//! [`KernelScan::kernel_prepare`] uploads
//! the inputs for every plan it prepares. A benchmark that times six plans
//! of a 10 GB problem would then spend most of its time on the bus, so
//! [`KernelResident::kernel_upload`] uploads a problem once (and allocates
//! its outputs once), and [`Resident::prepare`] issues any plan's launches
//! on those same buffers. Workspaces are per plan: the one of a prepared
//! plan is freed when its launch closure is dropped.
//!
//! Implemented for the families `parascan bench` times: Diagonal (both
//! layouts), PermDiagonal (`u8` permutations) and DPLR. Each plan goes
//! through the family's own planner and the shared `launch_scan_buffers`, so
//! a new plan kind of a family needs no change here.

use super::diagonal::{plan_diagonal, DiagShape, DiagonalInputs, DiagonalWorkspace, GpuPlan};
use super::dplr::{plan_dplr, DplrPlan, DplrShape, DplrWorkspace, Uploaded};
use super::face::{launch_scan_buffers, measure_depth, BindInputs, FamilyPlan, Workspace};
use super::perm_diagonal::{plan_perm_diagonal, PdGpuPlan, PdInputs, PdShape, PdWorkspace};
use super::{KernelPlanSummary, KernelScan, PreparedLaunches};
use crate::backend::launch::{DeviceBuffer, KernelRunner};
use crate::dtype::{DType, Storage};
use crate::error::Result;
use crate::family::diagonal::Diagonal;
use crate::family::dplr::{Dplr, DplrOutput};
use crate::family::perm_diagonal::PermDiagonal;
use crate::family::{Layout, LinearProblem};
use crate::scan::PlanRequest;

/// A problem that can be uploaded once and run under many plans.
pub trait KernelResident {
    /// Validates the problem, uploads its inputs, allocates its outputs and
    /// poisons them (all bits set: NaN), on `runner`.
    fn kernel_upload<R: KernelRunner>(&self, runner: &R) -> Result<Resident>;
}

/// A problem's inputs and outputs on a runner's device (see the module
/// docs). Drop it to free them.
#[derive(Debug)]
pub struct Resident {
    dtype: DType,
    family: ResidentFamily,
    /// Every output: `h`, or the DPLR readout / states.
    out: DeviceBuffer,
    /// The final states.
    h_t: DeviceBuffer,
}

/// The uploaded inputs of each family, with the sizes the planners need.
#[derive(Debug)]
enum ResidentFamily {
    Diagonal {
        shape: DiagShape,
        layout: Layout,
        inputs: DiagonalInputs,
    },
    PermDiagonal {
        shape: PdShape,
        inputs: PdInputs,
    },
    Dplr {
        shape: DplrShape,
        output: DplrOutput,
        inputs: Box<Uploaded>,
    },
}

/// A plan of the resident family and the inputs it binds.
enum FamilyPlans<'a> {
    Diagonal(GpuPlan, &'a DiagonalInputs),
    PermDiagonal(PdGpuPlan, &'a PdInputs),
    Dplr(DplrPlan, &'a Uploaded),
}

/// Allocates `elements` values of `size` bytes and poisons them.
fn poisoned<R: KernelRunner>(runner: &R, elements: usize, size: usize) -> Result<DeviceBuffer> {
    let buf = runner.alloc(elements * size)?;
    runner.fill(&buf, 0xFF)?;
    Ok(buf)
}

impl<S: Storage + bytemuck::Pod> KernelResident for Diagonal<'_, S> {
    fn kernel_upload<R: KernelRunner>(&self, runner: &R) -> Result<Resident> {
        self.validate()?;
        let shape = DiagShape::new(self.batch, self.len, self.dim);
        let family = ResidentFamily::Diagonal {
            shape,
            layout: self.layout,
            inputs: self.upload(runner)?,
        };
        Resident::new::<S, R>(runner, family, shape.elements(), shape.lanes())
    }
}

impl<S: Storage + bytemuck::Pod> KernelResident for PermDiagonal<'_, S, u8> {
    fn kernel_upload<R: KernelRunner>(&self, runner: &R) -> Result<Resident> {
        self.validate()?;
        let shape = PdShape::new(self.batch, self.len, self.n);
        let family = ResidentFamily::PermDiagonal {
            shape,
            inputs: self.upload(runner)?,
        };
        Resident::new::<S, R>(runner, family, shape.elements(), shape.states())
    }
}

impl<S: Storage + bytemuck::Pod> KernelResident for Dplr<'_, S> {
    fn kernel_upload<R: KernelRunner>(&self, runner: &R) -> Result<Resident> {
        self.validate()?;
        let shape = DplrShape::of(self);
        let outputs = shape.out_elements(self.output);
        let family = ResidentFamily::Dplr {
            shape,
            output: self.output,
            inputs: Box::new(Uploaded::new(runner, self)?),
        };
        Resident::new::<S, R>(runner, family, outputs, shape.state_elements())
    }
}

impl Resident {
    /// Uploaded inputs of storage type `S` with poisoned outputs: `outputs`
    /// values and `states` final states.
    fn new<S: Storage, R: KernelRunner>(
        runner: &R,
        family: ResidentFamily,
        outputs: usize,
        states: usize,
    ) -> Result<Self> {
        let size = std::mem::size_of::<S>();
        Ok(Resident {
            dtype: S::DTYPE,
            family,
            out: poisoned(runner, outputs, size)?,
            h_t: poisoned(runner, states, size)?,
        })
    }

    /// Storage type of inputs and outputs.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Plans `request` for a device with `sm_count` SMs (nothing launched).
    pub fn plan(&self, sm_count: usize, request: PlanRequest) -> Result<KernelPlanSummary> {
        Ok(match self.family_plan(sm_count, request, false)? {
            FamilyPlans::Diagonal(plan, _) => plan.summary(),
            FamilyPlans::PermDiagonal(plan, _) => plan.summary(),
            FamilyPlans::Dplr(plan, _) => plan.summary(),
        })
    }

    /// The family's plan of `request` in either direction, with the
    /// resident inputs it binds.
    fn family_plan(
        &self,
        sm: usize,
        request: PlanRequest,
        reverse: bool,
    ) -> Result<FamilyPlans<'_>> {
        let dtype = self.dtype;
        Ok(match &self.family {
            ResidentFamily::Diagonal {
                shape,
                layout,
                inputs,
            } => {
                let plan = plan_diagonal(*shape, *layout, dtype, request, sm)?;
                FamilyPlans::Diagonal(directed(plan, reverse, GpuPlan::reversed)?, inputs)
            }
            ResidentFamily::PermDiagonal { shape, inputs } => {
                let plan = plan_perm_diagonal(*shape, dtype, request, sm)?;
                FamilyPlans::PermDiagonal(directed(plan, reverse, PdGpuPlan::reversed)?, inputs)
            }
            ResidentFamily::Dplr {
                shape,
                output,
                inputs,
            } => {
                let plan = plan_dplr(*shape, *output, dtype, request, sm)?;
                FamilyPlans::Dplr(directed(plan, reverse, DplrPlan::reversed)?, inputs)
            }
        })
    }

    /// Plans `request` on `runner`, reserves the plan's scratch, and returns
    /// a closure that issues the plan's launches on the resident buffers
    /// without synchronizing (as
    /// [`KernelScan::kernel_prepare`]
    /// does on fresh ones).
    pub fn prepare<'r, R: KernelRunner>(
        &'r self,
        runner: &'r R,
        request: PlanRequest,
    ) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)> {
        self.prepare_directed(runner, request, false)
    }

    fn prepare_directed<'r, R: KernelRunner>(
        &'r self,
        runner: &'r R,
        request: PlanRequest,
        reverse: bool,
    ) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)> {
        let (out, h_t) = (&self.out, &self.h_t);
        match self.family_plan(runner.sm_count(), request, reverse)? {
            FamilyPlans::Diagonal(plan, inputs) => prepared(runner, plan, move || {
                BindInputs::<GpuPlan>::bind(inputs, out, h_t)
            }),
            FamilyPlans::PermDiagonal(plan, inputs) => {
                prepared(runner, plan, move || inputs.bind(out, h_t))
            }
            FamilyPlans::Dplr(plan, inputs) => {
                prepared(runner, plan, move || inputs.bind(out, h_t))
            }
        }
    }

    /// The plan's depth measured on the family's depth-counting kernels
    /// (the largest counter over all outputs; allocates and downloads one
    /// `u32` per output, so it costs about one more pass over the outputs).
    pub fn measure_depth<R: KernelRunner>(&self, runner: &R, request: PlanRequest) -> Result<u64> {
        self.measure_depth_directed(runner, request, false)
    }

    fn measure_depth_directed<R: KernelRunner>(
        &self,
        runner: &R,
        request: PlanRequest,
        reverse: bool,
    ) -> Result<u64> {
        match self.family_plan(runner.sm_count(), request, reverse)? {
            FamilyPlans::Diagonal(plan, _) => {
                measure_depth(runner, &mut DiagonalWorkspace::new(), &plan)
            }
            FamilyPlans::PermDiagonal(plan, _) => {
                measure_depth(runner, &mut PdWorkspace::new(), &plan)
            }
            FamilyPlans::Dplr(plan, _) => measure_depth(runner, &mut DplrWorkspace::new(), &plan),
        }
    }

    /// [`Resident::prepare`] for the reverse scan (right to left, the `_rev_`
    /// kernels of every family) on the same buffers: the scan of a backward
    /// pass. Returns the reverse plan's summary (its `kind` says `reverse`).
    pub fn prepare_reverse<'r, R: KernelRunner>(
        &'r self,
        runner: &'r R,
        request: PlanRequest,
    ) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)> {
        let (mut summary, run) = self.prepare_directed(runner, request, true)?;
        summary.kind = format!("{} reverse", summary.kind);
        summary.depth_key = format!("{} reverse", summary.depth_key);
        Ok((summary, run))
    }

    /// [`Resident::measure_depth`] of the reverse plan (the `_rev_` `_depth`
    /// kernels).
    pub fn measure_depth_reverse<R: KernelRunner>(
        &self,
        runner: &R,
        request: PlanRequest,
    ) -> Result<u64> {
        self.measure_depth_directed(runner, request, true)
    }

    /// Poisons every output and the final states (all bits set: NaN), so
    /// a run that forgets one shows up as non-finite.
    pub fn poison<R: KernelRunner>(&self, runner: &R) -> Result<()> {
        runner.fill(&self.out, 0xFF)?;
        runner.fill(&self.h_t, 0xFF)
    }

    /// Number of outputs (`h`, or the DPLR readout / states), not counting
    /// the final states.
    pub fn output_elements(&self) -> usize {
        match &self.family {
            ResidentFamily::Diagonal { shape, .. } => shape.elements(),
            ResidentFamily::PermDiagonal { shape, .. } => shape.elements(),
            ResidentFamily::Dplr { shape, output, .. } => shape.out_elements(*output),
        }
    }

    /// Downloads the final states `h_T`, widened to f64 (a cheap check that
    /// the last run wrote finite values).
    pub fn final_states<R: KernelRunner>(&self, runner: &R) -> Result<Vec<f64>> {
        let h_t = &self.h_t;
        runner.synchronize()?;
        match self.dtype {
            DType::F32 => download_widened::<f32, R>(runner, h_t),
            DType::F64 => download_widened::<f64, R>(runner, h_t),
            DType::Bf16 => download_widened::<half::bf16, R>(runner, h_t),
            DType::F16 => download_widened::<half::f16, R>(runner, h_t),
        }
    }
}

fn download_widened<S: Storage + bytemuck::Pod, R: KernelRunner>(
    runner: &R,
    buf: &DeviceBuffer,
) -> Result<Vec<f64>> {
    let mut host = vec![S::default(); buf.len_bytes() / std::mem::size_of::<S>()];
    runner.download(buf, &mut host)?;
    Ok(host.into_iter().map(Storage::to_f64).collect())
}

/// `plan` for a forward scan, or `reversed(plan)` for a reverse one.
fn directed<P>(plan: P, reverse: bool, reversed: fn(P) -> Result<P>) -> Result<P> {
    if reverse {
        reversed(plan)
    } else {
        Ok(plan)
    }
}

/// Reserves `plan`'s scratch on `runner` and returns its summary and a
/// closure that issues its launches on the buffers `bufs` names (each call
/// checks them again, as every safe launch does).
fn prepared<'r, P, R>(
    runner: &'r R,
    plan: P,
    bufs: impl Fn() -> P::Buffers<'r> + 'r,
) -> Result<(KernelPlanSummary, PreparedLaunches<'r>)>
where
    P: FamilyPlan + 'r,
    R: KernelRunner,
{
    let mut ws = Workspace::new();
    ws.reserve(runner, plan.scratch(false)?)?;
    let summary = plan.summary();
    let run = move || launch_scan_buffers(runner, &mut ws, &plan, bufs());
    Ok((summary, Box::new(run)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::emu::EmuBackend;
    use crate::kernels::KernelScan;

    /// Every plan on resident buffers gives the same final states as the
    /// host convenience call.
    #[test]
    fn resident_runs_match_kernel_scan() {
        let emu = EmuBackend::default();
        let (batch, len, dim) = (2, 300, 3);
        let a: Vec<f32> = (0..batch * len * dim)
            .map(|i| 0.5 + 0.4 * ((i * 7 % 13) as f32 / 13.0))
            .collect();
        let b: Vec<f32> = (0..batch * len * dim)
            .map(|i| ((i * 5 % 11) as f32 / 11.0) - 0.5)
            .collect();
        for layout in [Layout::Btd, Layout::Bdt] {
            let p = Diagonal {
                a: &a,
                b: &b,
                h0: None,
                batch,
                len,
                dim,
                layout,
            };
            let resident = p.kernel_upload(&emu).unwrap();
            assert_eq!(resident.output_elements(), batch * len * dim);
            for request in [
                PlanRequest::Sequential,
                PlanRequest::Auto,
                PlanRequest::Chunk(16),
            ] {
                let (summary, mut run) = resident.prepare(&emu, request).unwrap();
                assert_eq!(summary, p.kernel_plan(emu.sm_count(), request).unwrap());
                run().unwrap();
                drop(run);
                let got = resident.final_states(&emu).unwrap();
                let want = p.kernel_scan(&emu, request).unwrap().h_last;
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - f64::from(*w)).abs() < 1e-5, "{layout:?} {request}");
                }
                assert_eq!(
                    resident.measure_depth(&emu, request).unwrap(),
                    summary.depth_formula
                );
            }
        }
    }
}
