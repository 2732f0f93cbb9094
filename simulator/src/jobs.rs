//! Buyers' jobs: a mix of workloads with varied sizes, urgency, budgets and tokens.

use crate::rng::Rng;
use solgrid_market::gpu::{GpuModel, GpuVendor, ModelSet};
use solgrid_market::ledger::Token;
use solgrid_market::matching::Preference;
use solgrid_market::pricing::Urgency;

/// A workload kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Inference,
    FineTune,
    Training,
    Batch,
    AppleMl,
}

/// One job as a buyer submits it.
#[derive(Clone, Copy, Debug)]
pub struct JobSpec {
    pub kind: Kind,
    pub buyer: u32,
    pub vendor: Option<GpuVendor>,
    pub models: ModelSet,
    /// The model the buyer's budget is anchored at (the dearest allowed: the job
    /// is quoted at the dearest of `models`).
    pub quote_model: GpuModel,
    pub min_vram_mib: u64,
    pub gpus_per_worker: u32,
    pub workers: u32,
    pub max_duration_ms: u64,
    /// How long it really runs if nothing fails (at most `max_duration_ms`).
    pub run_ms: u64,
    pub urgency: Urgency,
    pub preference: Preference,
    pub token: Token,
    /// The budget cap per GPU-hour, micro-USD (converted to the token at quote time).
    pub budget_micro_usd: u64,
    pub min_reputation: u16,
    /// Hours the buyer waits for GPUs (or for the price to fall under the cap) before giving up.
    pub patience_hours: u32,
    pub arrival_ms: u64,
}

const HOUR: u64 = 3_600_000;

/// The accepted model with the highest reference price: a job accepting several
/// models is quoted at the dearest of them (as the operator quotes it), so a buyer
/// anchors its budget there.
fn dearest(models: &[GpuModel], reference: &dyn Fn(GpuModel) -> u64) -> GpuModel {
    *models
        .iter()
        .max_by_key(|m| reference(**m))
        .unwrap_or(&GpuModel::Rtx4090)
}

/// Draws a job. `reference(model)` is the reference price (micro-USD/GPU-hour).
pub fn draw_job(
    rng: &mut Rng,
    buyer: u32,
    arrival_ms: u64,
    usdc_share_pct: u32,
    reference: &dyn Fn(GpuModel) -> u64,
) -> JobSpec {
    use GpuModel::*;
    let kind = [
        Kind::Inference,
        Kind::FineTune,
        Kind::Training,
        Kind::Batch,
        Kind::AppleMl,
    ][rng.weighted(&[40, 22, 8, 24, 6])];
    let (models, vendor, vram_gib, gpus, workers, max_h): (
        &[GpuModel],
        Option<GpuVendor>,
        u64,
        u32,
        u32,
        u64,
    ) = match kind {
        Kind::Inference => {
            let sets: [&[GpuModel]; 3] = [
                &[Rtx3060, Rtx3070, Rtx3080, Rtx4060, Rtx4070, Rtx5070],
                &[Rtx3090, Rtx4080, Rtx4090, Rtx5080, Rtx5090],
                &[L40s, A100_40],
            ];
            let s = sets[rng.weighted(&[45, 45, 10])];
            (
                s,
                Some(GpuVendor::Nvidia),
                [8, 16, 24][rng.weighted(&[5, 3, 2])].min(
                    s.iter()
                        .map(|m| m.typical_vram_mib() / 1024)
                        .max()
                        .unwrap_or(8),
                ),
                1,
                1,
                rng.range(1, 3),
            )
        }
        Kind::FineTune => {
            let sets: [&[GpuModel]; 3] = [
                &[Rtx3090, Rtx4090, Rtx5090],
                &[A100_40, L40s],
                &[A100_80, H100],
            ];
            let s = sets[rng.weighted(&[50, 25, 25])];
            (
                s,
                Some(GpuVendor::Nvidia),
                24,
                [1, 2, 4][rng.weighted(&[40, 35, 25])],
                1,
                rng.range(2, 8),
            )
        }
        Kind::Training => {
            let sets: [&[GpuModel]; 3] = [&[H100, H200], &[A100_80, H100], &[H200]];
            let s = sets[rng.weighted(&[50, 35, 15])];
            (
                s,
                Some(GpuVendor::Nvidia),
                80,
                [4, 8][rng.weighted(&[30, 70])],
                [1, 2, 4][rng.weighted(&[60, 30, 10])],
                rng.range(4, 24),
            )
        }
        Kind::Batch => {
            let s: &[GpuModel] = &[
                Rtx3060, Rtx3070, Rtx3080, Rtx3090, Rtx4060, Rtx4070, Rtx4080, Rtx4090, Rtx5070,
                Rtx5080,
            ];
            (
                s,
                Some(GpuVendor::Nvidia),
                8,
                [1, 2][rng.weighted(&[70, 30])],
                [1, 2, 4, 8][rng.weighted(&[40, 30, 20, 10])],
                rng.range(1, 3),
            )
        }
        Kind::AppleMl => (
            &[AppleM1, AppleM2, AppleM3, AppleM4],
            Some(GpuVendor::Apple),
            8,
            1,
            1,
            rng.range(1, 2),
        ),
    };
    let max_duration_ms = max_h * HOUR;
    // Most jobs end before their limit; one in ten runs into it.
    let run_ms = if rng.chance_ppm(100_000) {
        max_duration_ms
    } else {
        max_duration_ms * rng.range(300, 990) / 1000
    };
    let urgency = Urgency::ALL[rng.weighted(&[20, 55, 20, 5])];
    let preference = [
        Preference::Cheapest,
        Preference::Balanced,
        Preference::Fastest,
    ][rng.weighted(&[40, 45, 15])];
    let token = if rng.below(100) < usdc_share_pct as u64 {
        Token::Usdc
    } else {
        Token::Io
    };
    let quote_model = dearest(models, reference);
    // Willingness to pay: 0.6x to 3x the reference of the model quoted.
    let budget_micro_usd = reference(quote_model) * rng.range(600, 3000) / 1000;
    JobSpec {
        kind,
        buyer,
        vendor,
        models: ModelSet::of(models),
        quote_model,
        min_vram_mib: vram_gib * 1024,
        gpus_per_worker: gpus,
        workers,
        max_duration_ms,
        run_ms: run_ms.max(60_000),
        urgency,
        preference,
        token,
        budget_micro_usd,
        min_reputation: [0, 300, 600][rng.weighted(&[60, 30, 10])],
        patience_hours: rng.range(1, 12) as u32,
        arrival_ms,
    }
}

impl JobSpec {
    /// GPU-hours if it runs to its natural end, in milli-GPU-hours.
    pub fn expected_milli_gpu_hours(&self) -> u64 {
        self.gpus_per_worker as u64 * self.workers as u64 * self.run_ms / (HOUR / 1000)
    }
}
