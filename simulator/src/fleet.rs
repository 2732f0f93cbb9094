//! The simulated fleet: regions, a realistic GPU mix, providers, stakers and buyers.

use crate::rng::Rng;
use solgrid_market::gpu::GpuModel;
use solgrid_market::matching::GeoPoint;

/// A market region: name, country, coordinates, and its share of the fleet (weight).
pub struct Region {
    pub name: &'static str,
    pub country: &'static str,
    pub at: GeoPoint,
    pub weight: u32,
}

pub const REGIONS: &[Region] = &[
    Region {
        name: "us-east",
        country: "US",
        at: GeoPoint {
            lat: 39.0,
            lon: -77.5,
        },
        weight: 20,
    },
    Region {
        name: "us-west",
        country: "US",
        at: GeoPoint {
            lat: 37.4,
            lon: -122.1,
        },
        weight: 12,
    },
    Region {
        name: "ca-central",
        country: "CA",
        at: GeoPoint {
            lat: 45.5,
            lon: -73.6,
        },
        weight: 4,
    },
    Region {
        name: "sa-east",
        country: "BR",
        at: GeoPoint {
            lat: -23.5,
            lon: -46.6,
        },
        weight: 4,
    },
    Region {
        name: "eu-west",
        country: "FR",
        at: GeoPoint {
            lat: 48.9,
            lon: 2.35,
        },
        weight: 12,
    },
    Region {
        name: "eu-central",
        country: "DE",
        at: GeoPoint {
            lat: 50.1,
            lon: 8.7,
        },
        weight: 14,
    },
    Region {
        name: "eu-north",
        country: "SE",
        at: GeoPoint {
            lat: 59.3,
            lon: 18.1,
        },
        weight: 4,
    },
    Region {
        name: "ap-northeast",
        country: "JP",
        at: GeoPoint {
            lat: 35.7,
            lon: 139.7,
        },
        weight: 8,
    },
    Region {
        name: "ap-southeast",
        country: "SG",
        at: GeoPoint {
            lat: 1.35,
            lon: 103.8,
        },
        weight: 10,
    },
    Region {
        name: "ap-south",
        country: "IN",
        at: GeoPoint {
            lat: 19.1,
            lon: 72.9,
        },
        weight: 6,
    },
    Region {
        name: "me-central",
        country: "AE",
        at: GeoPoint {
            lat: 25.2,
            lon: 55.3,
        },
        weight: 2,
    },
    Region {
        name: "af-south",
        country: "ZA",
        at: GeoPoint {
            lat: -26.2,
            lon: 28.0,
        },
        weight: 2,
    },
    Region {
        name: "oceania",
        country: "AU",
        at: GeoPoint {
            lat: -33.9,
            lon: 151.2,
        },
        weight: 2,
    },
];

/// Share of each model in the fleet (a decentralized network is mostly consumer cards).
pub fn model_weight(m: GpuModel) -> u32 {
    use GpuModel::*;
    match m {
        Rtx3060 => 8,
        Rtx3070 => 7,
        Rtx3080 => 8,
        Rtx3090 => 10,
        Rtx4060 => 5,
        Rtx4070 => 7,
        Rtx4080 => 6,
        Rtx4090 => 12,
        Rtx5070 => 3,
        Rtx5080 => 3,
        Rtx5090 => 4,
        A100_40 => 3,
        A100_80 => 4,
        H100 => 6,
        H200 => 2,
        L40s => 3,
        AppleM1 => 2,
        AppleM2 => 3,
        AppleM3 => 2,
        AppleM4 => 2,
    }
}

/// Whether a model is a data-centre card (nodes of 4–8 GPUs).
pub fn is_datacenter(m: GpuModel) -> bool {
    matches!(
        m,
        GpuModel::A100_40 | GpuModel::A100_80 | GpuModel::H100 | GpuModel::H200 | GpuModel::L40s
    )
}

/// GPUs on one node of model `m`.
pub fn draw_gpus(rng: &mut Rng, m: GpuModel) -> u32 {
    if m.vendor() == solgrid_market::GpuVendor::Apple {
        1
    } else if is_datacenter(m) {
        [8, 4, 2, 1][rng.weighted(&[60, 25, 10, 5])]
    } else {
        [1, 2, 4, 8][rng.weighted(&[50, 25, 20, 5])]
    }
}

/// Draws a model from the fleet mix.
pub fn draw_model(rng: &mut Rng) -> GpuModel {
    let weights: Vec<u32> = GpuModel::ALL.iter().map(|m| model_weight(*m)).collect();
    GpuModel::ALL[rng.weighted(&weights)]
}

/// Draws a region index.
pub fn draw_region(rng: &mut Rng) -> usize {
    let weights: Vec<u32> = REGIONS.iter().map(|r| r.weight).collect();
    rng.weighted(&weights)
}
