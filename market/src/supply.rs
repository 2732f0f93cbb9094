//! Supply of a GPU class: how much of it is allocated, and the lowest provider
//! floor, over the Active nodes of that class (ECONOMICS.md, "Dynamic pricing").
//!
//! ```text
//! gpus(class)        = Σ gpus of the Active nodes whose model is the class
//! allocated(class)   = Σ min(allocated, gpus) of those nodes
//! utilization_ppm    = floor(1,000,000 × allocated / gpus)      (0 when no GPU)
//! floor_micro_usd    = min floor of those nodes                  (0 when no node)
//! ```
//!
//! The operator's quotes, its market gauges, `kubectl solgrid quote` and the
//! simulator all read a class's supply from a [`SupplyIndex`], built once over the
//! nodes so that a quote costs O(1).

use crate::gpu::{GpuModel, ModelTable};
use crate::matching::NodePhase;
use crate::pricing::ModelSupply;
use serde::{Deserialize, Serialize};

/// One node as the supply of its GPU class sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupplyNode {
    /// The node's (dominant) model.
    pub model: GpuModel,
    pub phase: NodePhase,
    pub gpus: u32,
    /// GPUs held by jobs (more than `gpus` counts as `gpus`).
    pub allocated: u32,
    /// The provider's floor, micro-USD per GPU-hour (0: none).
    pub floor_micro_usd: u64,
}

/// The supply of one GPU class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSupply {
    /// Active nodes of the class.
    pub nodes: u32,
    pub gpus: u64,
    pub allocated: u64,
    /// Lowest floor of those nodes; `None` when there is none.
    pub floor: Option<u64>,
}

impl ClassSupply {
    /// Counts a node of this class (only an Active node is supply).
    pub fn add(&mut self, n: &SupplyNode) {
        if n.phase != NodePhase::Active {
            return;
        }
        self.nodes = self.nodes.saturating_add(1);
        self.gpus = self.gpus.saturating_add(n.gpus as u64);
        self.allocated = self
            .allocated
            .saturating_add(n.allocated.min(n.gpus) as u64);
        self.floor = Some(
            self.floor
                .map_or(n.floor_micro_usd, |f| f.min(n.floor_micro_usd)),
        );
    }

    /// Moves `gpus` GPUs between free and allocated (a placement: positive; a
    /// release: negative), never below 0 nor above the class's GPUs.
    pub fn allocate(&mut self, gpus: i64) {
        let a = (self.allocated as i128 + gpus as i128).clamp(0, self.gpus as i128);
        self.allocated = a as u64;
    }

    /// Allocated over total GPUs, ppm (floor); 0 when the class has no GPU.
    pub fn utilization_ppm(&self) -> u32 {
        (self.allocated.min(self.gpus) as u128 * 1_000_000)
            .checked_div(self.gpus as u128)
            .map_or(0, |x| x.min(1_000_000) as u32)
    }

    /// The lowest provider floor, micro-USD per GPU-hour (0 when no node).
    pub fn floor_micro_usd(&self) -> u64 {
        self.floor.unwrap_or(0)
    }
}

/// The supply of every GPU class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupplyIndex {
    by_model: ModelTable<ClassSupply>,
}

impl Default for SupplyIndex {
    fn default() -> Self {
        SupplyIndex {
            by_model: ModelTable::from_fn(|_| ClassSupply::default()),
        }
    }
}

impl SupplyIndex {
    /// One pass over the nodes.
    pub fn build(nodes: impl IntoIterator<Item = SupplyNode>) -> Self {
        let mut idx = SupplyIndex::default();
        for n in nodes {
            idx.add(&n);
        }
        idx
    }

    /// Counts one more node.
    pub fn add(&mut self, n: &SupplyNode) {
        let mut c = self.by_model.get(n.model);
        c.add(n);
        self.by_model.set(n.model, c);
    }

    /// The supply of a class.
    pub fn class(&self, model: GpuModel) -> ClassSupply {
        self.by_model.get(model)
    }

    /// `(utilization ppm, lowest floor micro-USD)` of a class; `(0, 0)` when no node has it.
    pub fn get(&self, model: GpuModel) -> (u32, u64) {
        let c = self.class(model);
        (c.utilization_ppm(), c.floor_micro_usd())
    }

    /// A class as the quote of a job accepting it reads it.
    pub fn model_supply(&self, model: GpuModel) -> ModelSupply {
        let (utilization_ppm, floor_micro_usd) = self.get(model);
        ModelSupply {
            model,
            utilization_ppm,
            floor_micro_usd,
        }
    }

    /// Places (`gpus > 0`) or releases (`gpus < 0`) GPUs of a class.
    pub fn allocate(&mut self, model: GpuModel, gpus: i64) {
        let mut c = self.by_model.get(model);
        c.allocate(gpus);
        self.by_model.set(model, c);
    }

    /// Every class with at least one Active node.
    pub fn classes(&self) -> impl Iterator<Item = (GpuModel, ClassSupply)> + '_ {
        self.by_model.iter().filter(|(_, c)| c.nodes > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(
        model: GpuModel,
        phase: NodePhase,
        gpus: u32,
        allocated: u32,
        floor: u64,
    ) -> SupplyNode {
        SupplyNode {
            model,
            phase,
            gpus,
            allocated,
            floor_micro_usd: floor,
        }
    }

    #[test]
    fn active_nodes_of_the_class_only() {
        use GpuModel::*;
        let idx = SupplyIndex::build([
            node(H100, NodePhase::Active, 8, 4, 2_000_000),
            node(H100, NodePhase::Active, 8, 2, 1_500_000),
            node(H100, NodePhase::Offline, 8, 8, 10),
            node(Rtx4090, NodePhase::Active, 1, 5, 0),
        ]);
        let c = idx.class(H100);
        assert_eq!((c.nodes, c.gpus, c.allocated), (2, 16, 6));
        assert_eq!(idx.get(H100), (375_000, 1_500_000));
        // more allocated than present counts as full
        assert_eq!(idx.get(Rtx4090), (1_000_000, 0));
        assert_eq!(idx.get(A100_80), (0, 0));
        assert_eq!(idx.classes().count(), 2);
        let m = idx.model_supply(H100);
        assert_eq!(
            (m.model, m.utilization_ppm, m.floor_micro_usd),
            (H100, 375_000, 1_500_000)
        );
        let mut idx = idx;
        idx.allocate(H100, 10);
        assert_eq!(idx.get(H100).0, 1_000_000);
        idx.allocate(H100, -100);
        assert_eq!(idx.get(H100).0, 0);
    }

    proptest! {
        #[test]
        fn utilization_bounded_and_order_free(
            nodes in proptest::collection::vec((0usize..3, 0u32..64, 0u32..80, 0u64..5_000_000, any::<bool>()), 0..40),
        ) {
            let models = [GpuModel::H100, GpuModel::Rtx4090, GpuModel::A100_80];
            let list: Vec<SupplyNode> = nodes.iter().map(|&(m, g, a, f, active)| node(
                models[m], if active { NodePhase::Active } else { NodePhase::Draining }, g, a, f,
            )).collect();
            let idx = SupplyIndex::build(list.iter().copied());
            let rev = SupplyIndex::build(list.iter().rev().copied());
            prop_assert_eq!(&idx, &rev);
            for m in models {
                let c = idx.class(m);
                let (u, floor) = idx.get(m);
                prop_assert!(u <= 1_000_000);
                prop_assert!(c.allocated <= c.gpus);
                let of_class: Vec<&SupplyNode> = list.iter()
                    .filter(|n| n.model == m && n.phase == NodePhase::Active).collect();
                prop_assert_eq!(c.nodes as usize, of_class.len());
                prop_assert_eq!(floor, of_class.iter().map(|n| n.floor_micro_usd).min().unwrap_or(0));
                // one more allocated GPU never lowers utilization
                let mut more = c;
                more.allocate(1);
                prop_assert!(more.utilization_ppm() >= u);
            }
        }
    }
}
