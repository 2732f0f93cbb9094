//! Allocation policy for `GetPreferredAllocation`: keep a multi-GPU request on
//! GPUs linked by NVLink (most links first), then on one NUMA node, and always
//! include the devices the kubelet says must be included.
//!
//! Small requests are searched exhaustively (every candidate set is scored);
//! when the number of candidate sets is too large the set is grown greedily.

use crate::device::Device;
use std::cmp::Ordering;

/// Above this many candidate sets the search is greedy.
const EXHAUSTIVE_LIMIT: u128 = 20_000;

/// Why no preferred allocation can be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown device ID {0:?}")]
    UnknownDevice(String),
    #[error("must_include device {0:?} is not among the available devices")]
    MustIncludeNotAvailable(String),
    #[error("allocation size {size} is larger than the {available} available devices")]
    NotEnoughDevices { size: usize, available: usize },
}

/// How good a set of devices is, compared lexicographically: total NVLinks
/// between members first, then pairs on the same NUMA node, then a
/// preference for low enumeration indices (stable, predictable choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Score {
    links: u64,
    numa_pairs: u64,
    /// Negated sum of indices (lower indices win).
    index_penalty: u64,
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.links
            .cmp(&other.links)
            .then(self.numa_pairs.cmp(&other.numa_pairs))
            .then(other.index_penalty.cmp(&self.index_penalty))
    }
}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn pair_links(a: &Device, b: &Device) -> u64 {
    u64::from(a.links_to(&b.id).max(b.links_to(&a.id)))
}

fn same_numa(a: &Device, b: &Device) -> bool {
    matches!((a.numa_node, b.numa_node), (Some(x), Some(y)) if x == y && x >= 0)
}

fn score(set: &[&Device]) -> Score {
    let mut s = Score {
        links: 0,
        numa_pairs: 0,
        index_penalty: set.iter().map(|d| u64::from(d.index)).sum(),
    };
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            s.links += pair_links(a, b);
            if same_numa(a, b) {
                s.numa_pairs += 1;
            }
        }
    }
    s
}

fn binomial(n: usize, k: usize) -> u128 {
    let k = k.min(n.saturating_sub(k));
    let mut r: u128 = 1;
    for i in 0..k {
        r = r.saturating_mul((n - i) as u128) / ((i + 1) as u128);
        if r > EXHAUSTIVE_LIMIT * 1000 {
            return r;
        }
    }
    r
}

/// Choose `size` devices out of `available`, including every ID of
/// `must_include`. `lookup` resolves an ID to its device. The result keeps
/// `must_include` first, then the chosen devices in enumeration order.
pub fn preferred_allocation<'a>(
    lookup: impl Fn(&str) -> Option<&'a Device>,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Result<Vec<String>, PolicyError> {
    let mut avail: Vec<&Device> = Vec::with_capacity(available.len());
    for id in available {
        let d = lookup(id).ok_or_else(|| PolicyError::UnknownDevice(id.clone()))?;
        if !avail.iter().any(|x| x.id == d.id) {
            avail.push(d);
        }
    }
    let mut must: Vec<&Device> = Vec::with_capacity(must_include.len());
    for id in must_include {
        let d = lookup(id).ok_or_else(|| PolicyError::UnknownDevice(id.clone()))?;
        if !avail.iter().any(|x| x.id == d.id) {
            return Err(PolicyError::MustIncludeNotAvailable(id.clone()));
        }
        if !must.iter().any(|x| x.id == d.id) {
            must.push(d);
        }
    }
    if size > avail.len() {
        return Err(PolicyError::NotEnoughDevices {
            size,
            available: avail.len(),
        });
    }
    if must.len() >= size {
        return Ok(must.iter().map(|d| d.id.clone()).collect());
    }
    let mut rest: Vec<&Device> = avail
        .into_iter()
        .filter(|d| !must.iter().any(|m| m.id == d.id))
        .collect();
    rest.sort_by_key(|d| (d.index, d.id.clone()));
    let need = size - must.len();

    let chosen = if binomial(rest.len(), need) <= EXHAUSTIVE_LIMIT {
        exhaustive(&must, &rest, need)
    } else {
        greedy(&must, &rest, need)
    };
    let mut out: Vec<String> = must.iter().map(|d| d.id.clone()).collect();
    let mut chosen = chosen;
    chosen.sort_by_key(|d| (d.index, d.id.clone()));
    out.extend(chosen.into_iter().map(|d| d.id.clone()));
    Ok(out)
}

fn exhaustive<'a>(must: &[&'a Device], rest: &[&'a Device], need: usize) -> Vec<&'a Device> {
    let mut best: Option<(Score, Vec<usize>)> = None;
    let mut combo: Vec<usize> = (0..need).collect();
    let n = rest.len();
    let mut set: Vec<&Device> = Vec::with_capacity(must.len() + need);
    loop {
        set.clear();
        set.extend_from_slice(must);
        set.extend(combo.iter().map(|&i| rest[i]));
        let s = score(&set);
        if best.as_ref().is_none_or(|(b, _)| s > *b) {
            best = Some((s, combo.clone()));
        }
        // next combination in lexicographic order
        let mut i = need;
        loop {
            if i == 0 {
                return best
                    .map(|(_, c)| c.into_iter().map(|i| rest[i]).collect())
                    .unwrap_or_default();
            }
            i -= 1;
            if combo[i] != i + n - need {
                break;
            }
        }
        combo[i] += 1;
        for j in i + 1..need {
            combo[j] = combo[j - 1] + 1;
        }
    }
}

/// Greedy growth. Without `must_include` every candidate is tried as the seed
/// (a lone device scores nothing, so the seed decides which island is grown)
/// and the best grown set wins.
fn greedy<'a>(must: &[&'a Device], rest: &[&'a Device], need: usize) -> Vec<&'a Device> {
    if !must.is_empty() || need == 0 {
        return grow(must, rest, need);
    }
    let mut best: Option<(Score, Vec<&'a Device>)> = None;
    for (i, seed) in rest.iter().enumerate() {
        let others: Vec<&Device> = rest
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, d)| *d)
            .collect();
        let mut chosen = vec![*seed];
        chosen.extend(grow(&[*seed], &others, need - 1));
        let s = score(&chosen);
        if best.as_ref().is_none_or(|(b, _)| s > *b) {
            best = Some((s, chosen));
        }
    }
    best.map(|(_, c)| c).unwrap_or_default()
}

fn grow<'a>(must: &[&'a Device], rest: &[&'a Device], need: usize) -> Vec<&'a Device> {
    let mut set: Vec<&Device> = must.to_vec();
    let mut left: Vec<&Device> = rest.to_vec();
    let mut chosen = Vec::with_capacity(need);
    for _ in 0..need {
        let mut best: Option<(Score, usize)> = None;
        for (i, cand) in left.iter().enumerate() {
            set.push(cand);
            let s = score(&set);
            set.pop();
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, i));
            }
        }
        let Some((_, i)) = best else { break };
        let d = left.remove(i);
        set.push(d);
        chosen.push(d);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use solgrid_crds::GpuVendor;
    use std::collections::{BTreeMap, HashMap};

    fn gpu(i: u32, numa: i32) -> Device {
        Device {
            id: format!("GPU-{i}"),
            vendor: GpuVendor::Nvidia,
            model: "H100".into(),
            memory_mib: 81_559,
            uuid: Some(format!("GPU-{i}")),
            pci_bus_id: None,
            numa_node: Some(numa),
            index: i,
            links: BTreeMap::new(),
            nodes: vec![],
            attributes: BTreeMap::new(),
        }
    }

    fn link(devs: &mut [Device], a: usize, b: usize, n: u32) {
        let (ida, idb) = (devs[a].id.clone(), devs[b].id.clone());
        devs[a].links.insert(idb, n);
        devs[b].links.insert(ida, n);
    }

    fn run(
        devs: &[Device],
        avail: &[usize],
        must: &[usize],
        size: usize,
    ) -> Result<Vec<String>, PolicyError> {
        let map: HashMap<String, &Device> = devs.iter().map(|d| (d.id.clone(), d)).collect();
        let ids = |v: &[usize]| v.iter().map(|&i| devs[i].id.clone()).collect::<Vec<_>>();
        preferred_allocation(|id| map.get(id).copied(), &ids(avail), &ids(must), size)
    }

    fn ids(v: &[u32]) -> Vec<String> {
        v.iter().map(|i| format!("GPU-{i}")).collect()
    }

    #[test]
    fn four_gpus_prefer_nvlinks_and_honour_must_include() {
        // four GPUs on NUMA node 0, all available, two wanted:
        // (what, links as (a, b, NVLink count), must include, picked)
        type Case = (
            &'static str,
            &'static [(usize, usize, u32)],
            &'static [usize],
            &'static [u32],
        );
        let islands = &[(0, 1, 4), (2, 3, 1)];
        let cases: [Case; 4] = [
            (
                "an NVLinked pair beats lower indices",
                &[(1, 3, 4)],
                &[],
                &[1, 3],
            ),
            ("more links win", &[(0, 1, 2), (2, 3, 12)], &[], &[2, 3]),
            (
                "must include 3: its only link is to 2",
                islands,
                &[3],
                &[3, 2],
            ),
            (
                "must include covers the whole size",
                islands,
                &[2, 0],
                &[2, 0],
            ),
        ];
        for (what, links, must, want) in cases {
            let mut devs: Vec<Device> = (0..4).map(|i| gpu(i, 0)).collect();
            for &(a, b, n) in links {
                link(&mut devs, a, b, n);
            }
            let got = run(&devs, &[0, 1, 2, 3], must, 2);
            assert_eq!(got, Ok(ids(want)), "{what}");
        }
    }

    #[test]
    fn falls_back_to_same_numa_node() {
        let devs: Vec<Device> = vec![gpu(0, 0), gpu(1, 1), gpu(2, 0), gpu(3, 1)];
        // no links; 1 and 3 share NUMA node 1, but 0 and 2 (node 0) have lower indices
        assert_eq!(run(&devs, &[1, 2, 3], &[], 2).unwrap(), ids(&[1, 3]));
        assert_eq!(run(&devs, &[0, 1, 2, 3], &[], 2).unwrap(), ids(&[0, 2]));
    }

    #[test]
    fn eight_gpus_two_nvlink_islands() {
        // two islands of 4 fully linked GPUs: 0-3 and 4-7, on NUMA 0 and 1
        let mut devs: Vec<Device> = (0..8).map(|i| gpu(i, (i / 4) as i32)).collect();
        for island in [0usize, 4] {
            for a in island..island + 4 {
                for b in a + 1..island + 4 {
                    link(&mut devs, a, b, 2);
                }
            }
        }
        // 0 and 5 are taken: a 3-GPU request must stay in an island
        let got = run(&devs, &[1, 2, 3, 4, 6, 7], &[], 3).unwrap();
        assert!(got == ids(&[1, 2, 3]) || got == ids(&[4, 6, 7]), "{got:?}");
        assert_eq!(got, ids(&[1, 2, 3]), "ties go to lower indices");
        // must include 6 pulls the choice into the second island
        assert_eq!(
            run(&devs, &[1, 2, 3, 4, 6, 7], &[6], 3).unwrap(),
            ids(&[6, 4, 7])
        );
    }

    #[test]
    fn greedy_path_for_large_requests() {
        let mut devs: Vec<Device> = (0..64).map(|i| gpu(i, (i / 32) as i32)).collect();
        for a in 40..48 {
            for b in a + 1..48 {
                link(&mut devs, a, b, 1);
            }
        }
        let all: Vec<usize> = (0..64).collect();
        assert!(binomial(64, 8) > EXHAUSTIVE_LIMIT);
        let got = run(&devs, &all, &[], 8).unwrap();
        assert_eq!(got, ids(&[40, 41, 42, 43, 44, 45, 46, 47]));
    }

    #[test]
    fn errors_are_reported_not_guessed() {
        let devs: Vec<Device> = (0..2).map(|i| gpu(i, 0)).collect();
        let map: HashMap<String, &Device> = devs.iter().map(|d| (d.id.clone(), d)).collect();
        let r = preferred_allocation(
            |id| map.get(id).copied(),
            &["GPU-0".into(), "GPU-9".into()],
            &[],
            1,
        );
        assert_eq!(r, Err(PolicyError::UnknownDevice("GPU-9".into())));
        assert_eq!(
            run(&devs, &[0], &[1], 1),
            Err(PolicyError::MustIncludeNotAvailable("GPU-1".into()))
        );
        assert_eq!(
            run(&devs, &[0, 1], &[], 3),
            Err(PolicyError::NotEnoughDevices {
                size: 3,
                available: 2
            })
        );
    }
}
