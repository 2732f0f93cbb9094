//! GPU vendors and models known to the market, and small fixed-size tables keyed by
//! model (reference prices, stake multipliers, relative speed) that are cheap on the
//! scheduler's hot path: an array index, no hashing, no allocation.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A GPU vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    Nvidia,
    Apple,
}

impl fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Apple => "apple",
        })
    }
}

macro_rules! models {
    ($( $variant:ident => $name:literal, $vendor:ident, $vram:literal ;)*) => {
        /// A GPU model (class) the market prices. Serialized as its canonical name
        /// (`rtx-4090`, `h100`, `apple-m2`, ...); [`GpuModel::parse`] also accepts
        /// the names NVML and the Apple DRM driver report.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum GpuModel { $($variant,)* }

        impl GpuModel {
            /// Every model, in table order.
            pub const ALL: &'static [GpuModel] = &[$(GpuModel::$variant,)*];
            /// Number of models.
            pub const COUNT: usize = [$(GpuModel::$variant,)*].len();

            /// The canonical name, e.g. `rtx-4090`.
            pub const fn name(self) -> &'static str {
                match self { $(GpuModel::$variant => $name,)* }
            }
            /// The vendor.
            pub const fn vendor(self) -> GpuVendor {
                match self { $(GpuModel::$variant => GpuVendor::$vendor,)* }
            }
            /// Typical memory of the model, MiB (Apple: typical unified memory given to the GPU).
            pub const fn typical_vram_mib(self) -> u64 {
                match self { $(GpuModel::$variant => $vram,)* }
            }
        }
    };
}

models! {
    Rtx3060 => "rtx-3060", Nvidia, 12288;
    Rtx3070 => "rtx-3070", Nvidia, 8192;
    Rtx3080 => "rtx-3080", Nvidia, 10240;
    Rtx3090 => "rtx-3090", Nvidia, 24576;
    Rtx4060 => "rtx-4060", Nvidia, 8192;
    Rtx4070 => "rtx-4070", Nvidia, 12288;
    Rtx4080 => "rtx-4080", Nvidia, 16384;
    Rtx4090 => "rtx-4090", Nvidia, 24576;
    Rtx5070 => "rtx-5070", Nvidia, 12288;
    Rtx5080 => "rtx-5080", Nvidia, 16384;
    Rtx5090 => "rtx-5090", Nvidia, 32768;
    A100_40 => "a100-40gb", Nvidia, 40960;
    A100_80 => "a100-80gb", Nvidia, 81920;
    H100 => "h100", Nvidia, 81920;
    H200 => "h200", Nvidia, 143360;
    L40s => "l40s", Nvidia, 46080;
    AppleM1 => "apple-m1", Apple, 8192;
    AppleM2 => "apple-m2", Apple, 16384;
    AppleM3 => "apple-m3", Apple, 24576;
    AppleM4 => "apple-m4", Apple, 32768;
}

impl GpuModel {
    /// The model's index in [`GpuModel::ALL`] and in every [`ModelTable`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Recognises a model from a canonical name (`rtx-4090`) or a driver's name
    /// (`NVIDIA GeForce RTX 4090`, `NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-40GB`,
    /// `Apple M2 Max`). Case- and punctuation-insensitive. `None` if unknown.
    pub fn parse(s: &str) -> Option<GpuModel> {
        // Normalise: lowercase alphanumerics only, at most 64 of them (no allocation).
        let mut buf = [0u8; 64];
        let mut n = 0;
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() && n < buf.len() {
                buf[n] = b.to_ascii_lowercase();
                n += 1;
            }
        }
        let t = std::str::from_utf8(&buf[..n]).ok()?;
        let has = |p: &str| t.contains(p);
        if let Some(m) = GpuModel::ALL.iter().find(|m| {
            let name = m.name().as_bytes();
            let mut j = 0;
            name.iter().filter(|b| b.is_ascii_alphanumeric()).all(|b| {
                let ok = j < n && buf[j] == *b;
                j += 1;
                ok
            }) && j == n
        }) {
            return Some(*m);
        }
        if has("apple") || t.starts_with('m') && t.len() <= 8 {
            for (p, m) in [
                ("m4", GpuModel::AppleM4),
                ("m3", GpuModel::AppleM3),
                ("m2", GpuModel::AppleM2),
                ("m1", GpuModel::AppleM1),
            ] {
                if has(p) {
                    return Some(m);
                }
            }
            return None;
        }
        if has("h200") {
            return Some(GpuModel::H200);
        }
        if has("h100") {
            return Some(GpuModel::H100);
        }
        if has("l40s") {
            return Some(GpuModel::L40s);
        }
        if has("a100") {
            return Some(if has("80g") {
                GpuModel::A100_80
            } else {
                GpuModel::A100_40
            });
        }
        for m in GpuModel::ALL
            .iter()
            .filter(|m| m.name().starts_with("rtx-"))
        {
            if has(&m.name()[4..]) {
                return Some(*m);
            }
        }
        None
    }
}

impl fmt::Display for GpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model name that [`GpuModel::parse`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GPU model {0:?}")]
pub struct UnknownModel(pub String);

impl FromStr for GpuModel {
    type Err = UnknownModel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GpuModel::parse(s).ok_or_else(|| UnknownModel(s.to_string()))
    }
}

impl Serialize for GpuModel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GpuModel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GpuModel::parse(&s).ok_or_else(|| serde::de::Error::custom(UnknownModel(s)))
    }
}

/// A set of models (a bitset): a job's allowed models. Empty means "any".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelSet(u32);

impl ModelSet {
    pub const EMPTY: ModelSet = ModelSet(0);

    pub fn of(models: &[GpuModel]) -> ModelSet {
        models.iter().fold(ModelSet(0), |s, m| s.with(*m))
    }
    pub const fn with(self, m: GpuModel) -> ModelSet {
        ModelSet(self.0 | (1 << m as u32))
    }
    pub const fn contains(self, m: GpuModel) -> bool {
        self.0 & (1 << m as u32) != 0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Empty (any model) or containing `m`.
    pub const fn allows(self, m: GpuModel) -> bool {
        self.is_empty() || self.contains(m)
    }
    pub fn iter(self) -> impl Iterator<Item = GpuModel> {
        GpuModel::ALL
            .iter()
            .copied()
            .filter(move |m| self.contains(*m))
    }
}

impl Serialize for ModelSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for ModelSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ModelSet::of(&Vec::<GpuModel>::deserialize(d)?))
    }
}

impl fmt::Display for ModelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("any");
        }
        for (i, m) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(m.name())?;
        }
        Ok(())
    }
}

/// GPU groups of an inventory's model strings: `(model, count)` for the models the
/// market knows, in order of first appearance, and the number of GPUs of unknown models.
pub fn model_groups<'a>(models: impl IntoIterator<Item = &'a str>) -> (Vec<(GpuModel, u32)>, u32) {
    let mut groups: Vec<(GpuModel, u32)> = Vec::new();
    let mut unknown = 0u32;
    for m in models {
        match GpuModel::parse(m) {
            Some(model) => match groups.iter_mut().find(|(g, _)| *g == model) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => groups.push((model, 1)),
            },
            None => unknown = unknown.saturating_add(1),
        }
    }
    (groups, unknown)
}

/// The dominant model of an inventory's groups (most GPUs; ties by table order).
pub fn dominant_model(groups: &[(GpuModel, u32)]) -> Option<(GpuModel, u32)> {
    groups
        .iter()
        .copied()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// A value per model, stored as an array indexed by [`GpuModel::index`].
/// Serialized as a map from canonical model name to value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelTable<T>(pub [T; GpuModel::COUNT]);

impl<T: Copy> ModelTable<T> {
    /// Builds a table from a function of the model.
    pub fn from_fn(f: impl Fn(GpuModel) -> T) -> Self {
        ModelTable(std::array::from_fn(|i| f(GpuModel::ALL[i])))
    }
    pub fn get(&self, m: GpuModel) -> T {
        self.0[m.index()]
    }
    pub fn set(&mut self, m: GpuModel, v: T) {
        self.0[m.index()] = v;
    }
    pub fn iter(&self) -> impl Iterator<Item = (GpuModel, T)> + '_ {
        GpuModel::ALL.iter().map(|m| (*m, self.get(*m)))
    }
}

impl<T: Copy + Serialize> Serialize for ModelTable<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(m, v)| (m.name(), v)))
    }
}

/// Deserializes a partial map `{model name: value}` over `base`: models the map
/// leaves out keep their value in `base`. Use from a `deserialize_with` function.
pub fn deserialize_overlay<'de, D, T>(d: D, base: ModelTable<T>) -> Result<ModelTable<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Copy + Deserialize<'de>,
{
    let map = std::collections::BTreeMap::<String, T>::deserialize(d)?;
    let mut t = base;
    for (k, v) in map {
        let m = GpuModel::parse(&k).ok_or_else(|| serde::de::Error::custom(UnknownModel(k)))?;
        t.set(m, v);
    }
    Ok(t)
}

/// Relative compute speed per model, in per-mille of an RTX 4090 (used for the
/// `fastest` preference and for proof-of-work speed checks; not money).
pub fn default_speed_permille() -> ModelTable<u32> {
    use GpuModel::*;
    ModelTable::from_fn(|m| match m {
        Rtx3060 => 220,
        Rtx3070 => 310,
        Rtx3080 => 450,
        Rtx3090 => 540,
        Rtx4060 => 230,
        Rtx4070 => 440,
        Rtx4080 => 730,
        Rtx4090 => 1000,
        Rtx5070 => 520,
        Rtx5080 => 850,
        Rtx5090 => 1300,
        A100_40 => 1150,
        A100_80 => 1250,
        H100 => 2400,
        H200 => 2700,
        L40s => 1100,
        AppleM1 => 60,
        AppleM2 => 100,
        AppleM3 => 150,
        AppleM4 => 200,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_driver_names() {
        let cases = [
            ("NVIDIA GeForce RTX 4090", GpuModel::Rtx4090),
            ("rtx-4090", GpuModel::Rtx4090),
            ("NVIDIA GeForce RTX 3060 Ti", GpuModel::Rtx3060),
            ("NVIDIA H100 80GB HBM3", GpuModel::H100),
            ("NVIDIA H200", GpuModel::H200),
            ("NVIDIA A100-SXM4-40GB", GpuModel::A100_40),
            ("NVIDIA A100 80GB PCIe", GpuModel::A100_80),
            ("a100-80gb", GpuModel::A100_80),
            ("NVIDIA L40S", GpuModel::L40s),
            ("Apple M2 Max", GpuModel::AppleM2),
            ("apple-m4", GpuModel::AppleM4),
            ("M3 Pro", GpuModel::AppleM3),
            ("NVIDIA GeForce RTX 5090", GpuModel::Rtx5090),
        ];
        for (s, m) in cases {
            assert_eq!(GpuModel::parse(s), Some(m), "{s}");
        }
        assert_eq!(GpuModel::parse("Radeon RX 7900"), None);
        assert_eq!(GpuModel::parse(""), None);
        for m in GpuModel::ALL {
            assert_eq!(GpuModel::parse(m.name()), Some(*m));
        }
    }

    #[test]
    fn groups_and_dominant_model() {
        let (g, unknown) = model_groups([
            "NVIDIA GeForce RTX 4070",
            "NVIDIA H100 80GB HBM3",
            "x",
            "h100",
        ]);
        assert_eq!(g, vec![(GpuModel::Rtx4070, 1), (GpuModel::H100, 2)]);
        assert_eq!(unknown, 1);
        assert_eq!(dominant_model(&g), Some((GpuModel::H100, 2)));
        // a tie goes to the model first in the table
        let tie = [(GpuModel::H100, 1), (GpuModel::Rtx3060, 1)];
        assert_eq!(dominant_model(&tie), Some((GpuModel::Rtx3060, 1)));
        assert_eq!(dominant_model(&[]), None);
    }

    #[test]
    fn model_set_and_serde() {
        let s = ModelSet::of(&[GpuModel::H100, GpuModel::A100_80]);
        assert!(s.contains(GpuModel::H100) && !s.contains(GpuModel::Rtx4090));
        assert!(ModelSet::EMPTY.allows(GpuModel::Rtx4090));
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"["a100-80gb","h100"]"#);
        assert_eq!(serde_json::from_str::<ModelSet>(&j).unwrap(), s);
        assert_eq!(serde_json::to_string(&GpuModel::L40s).unwrap(), r#""l40s""#);
    }
}
