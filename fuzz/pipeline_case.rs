//! One case of the pipeline fuzzer, shared by the libFuzzer target
//! (`fuzz/fuzz_targets/pack_pipeline.rs`) and the uninstrumented driver
//! (`examples/fuzz_pipeline.rs`): seeds (micro packs in every storage and a safetensors
//! file), a structure-aware mutator that edits the header (configuration, shapes, storages,
//! offsets) or the data and then fixes every checksum up, and the case itself: parse, read
//! every tensor, build the pipeline, sample the first scales. Whatever the bytes, it must
//! return a stage or an error; a panic is a bug.

use std::collections::BTreeMap;

use nextscale::burn::tensor::Device;
use nextscale::pack::{Pack, Storage, write_pack};
use nextscale::sampler::{NoHooks, SampleOptions};
use nextscale::{Condition, PatchNums, Pipeline, VarConfig, VqVaeConfig};

/// How far a case got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Refused while parsing the container.
    Parse,
    /// Parsed, refused while reading the tensors (checksums, decoding).
    Tensors,
    /// Every tensor read; refused while building the pipeline.
    Build,
    /// Built; refused while sampling.
    Sample,
    /// Sampled the first scales.
    Sampled,
}

pub fn micro_configs() -> (VarConfig, VqVaeConfig) {
    let pn = PatchNums(vec![1, 2]);
    let var = VarConfig {
        depth: 1,
        embed_dim: 8,
        num_heads: 1,
        mlp_ratio: 2.0,
        vocab_size: 8,
        cvae: 4,
        num_classes: 2,
        norm_eps: 1e-6,
        patch_nums: pn.clone(),
        text_dim: 0,
    };
    let vae = VqVaeConfig {
        vocab_size: 8,
        z_channels: 4,
        ch: 32,
        ch_mult: vec![1],
        num_res_blocks: 1,
        in_channels: 3,
        using_sa: false,
        using_mid_sa: false,
        share_quant_resi: 1,
        quant_resi: 0.5,
        beta: 0.25,
        patch_nums: pn,
    };
    (var, vae)
}

/// Valid inputs: the micro model as f32, f16, q8 and q4 packs, and as safetensors.
pub fn seeds() -> Vec<Vec<u8>> {
    let (var, vae) = micro_configs();
    let tensors = nextscale::fixtures::model_tensors(&var, &vae, 1).expect("micro model");
    let mut out = Vec::new();
    for s in [Storage::F32, Storage::F16, Storage::Q8, Storage::Q4] {
        let t: Vec<_> = tensors
            .iter()
            .filter_map(|e| Some((e.name.clone(), e.shape.clone(), e.f32_values()?.to_vec(), s)))
            .collect();
        out.push(write_pack(&var, &vae, None, BTreeMap::new(), &t).expect("micro pack"));
    }
    let mut st = Vec::new();
    nextscale::state_dict::write_safetensors(&mut st, &tensors, None).expect("micro safetensors");
    out.push(st);
    out
}

/// Runs one case. Errors are expected; the stage says how far the bytes got.
pub fn run(data: &[u8]) -> Stage {
    let device = Device::flex();
    let pipe = if Pack::is_pack(data) {
        let Ok(pack) = Pack::from_bytes(data.to_vec()) else {
            return Stage::Parse;
        };
        for t in &pack.header.tensors {
            if pack.read(&t.name).is_err() {
                return Stage::Tensors;
            }
        }
        match Pipeline::from_pack(pack, &device) {
            Ok(p) => p,
            Err(_) => return Stage::Build,
        }
    } else {
        let Ok(ck) = nextscale::Checkpoint::from_bytes(data.to_vec()) else {
            return Stage::Parse;
        };
        match Pipeline::from_checkpoints(ck, None, &device) {
            Ok(p) => p,
            Err(_) => return Stage::Build,
        }
    };
    let opts = SampleOptions {
        cfg: 2.0,
        top_k: 4,
        top_p: 0.9,
        seed: 3,
        more_smooth: false,
    };
    let Ok(mut s) = pipe.start_with(&[Condition::Class(0)], &opts) else {
        return Stage::Sample;
    };
    for _ in 0..2 {
        match nextscale::readback::block_on(s.step(&mut NoHooks)) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return Stage::Sample,
        }
    }
    Stage::Sampled
}

/// A small deterministic generator for the mutator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [i64; 14] = [
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    31,
    32,
    255,
    65_536,
    1 << 31,
    1 << 32,
    i64::MAX,
];

fn mutate_value(v: &mut serde_json::Value, r: &mut Rng) {
    use serde_json::Value;
    match v {
        Value::Number(_) => {
            *v = match r.below(4) {
                0 => Value::from(INTERESTING[r.below(INTERESTING.len())]),
                1 => Value::from(-(r.below(1000) as i64)),
                2 => serde_json::json!(1e300),
                _ => Value::from(r.below(64)),
            }
        }
        Value::String(s) => {
            *s = [
                "f32", "f16", "q8", "q4", "", "q3", "bf16", "vae.x", "blocks.0",
            ][r.below(9)]
            .to_string()
        }
        Value::Bool(b) => *b = !*b,
        Value::Null => *v = Value::from(1),
        Value::Array(a) => match r.below(4) {
            0 if !a.is_empty() => {
                a.remove(r.below(a.len()));
            }
            1 if !a.is_empty() => {
                let x = a[r.below(a.len())].clone();
                a.push(x);
            }
            2 => a.clear(),
            _ => {
                if !a.is_empty() {
                    let i = r.below(a.len());
                    mutate_value(&mut a[i], r);
                }
            }
        },
        Value::Object(o) => {
            if o.is_empty() {
                return;
            }
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = &keys[r.below(keys.len())];
            if r.below(8) == 0 {
                o.remove(k);
            } else {
                mutate_value(o.get_mut(k).expect("key"), r);
            }
        }
    }
}

/// A leaf deep in the value, reached by random steps (so that nested fields get mutated).
fn mutate_deep(v: &mut serde_json::Value, r: &mut Rng, depth: usize) {
    use serde_json::Value;
    if depth == 0 || r.below(3) == 0 {
        return mutate_value(v, r);
    }
    match v {
        Value::Array(a) if !a.is_empty() => {
            let i = r.below(a.len());
            mutate_deep(&mut a[i], r, depth - 1)
        }
        Value::Object(o) if !o.is_empty() => {
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = keys[r.below(keys.len())].clone();
            mutate_deep(o.get_mut(&k).expect("key"), r, depth - 1)
        }
        _ => mutate_value(v, r),
    }
}

/// Rewrites every tensor's CRC-32 to match its bytes (where they lie inside the file), so
/// that mutations reach the code behind the checksums.
pub fn fix_pack(data: &mut Vec<u8>) {
    if data.len() < 16 || !Pack::is_pack(data) {
        return;
    }
    let hlen = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes")) as usize;
    let Some(json) = data.get(16..16 + hlen) else {
        return;
    };
    let Ok(mut h) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let start = (16 + hlen).div_ceil(64) * 64;
    if let Some(ts) = h.get_mut("tensors").and_then(|t| t.as_array_mut()) {
        for t in ts {
            let off = t.get("offset").and_then(|x| x.as_u64()).unwrap_or(u64::MAX) as usize;
            let len = t.get("length").and_then(|x| x.as_u64()).unwrap_or(u64::MAX) as usize;
            let range = start
                .checked_add(off)
                .and_then(|a| Some(a..a.checked_add(len)?));
            if let Some(bytes) = range.and_then(|r| data.get(r)) {
                t["crc32"] = serde_json::Value::from(crc32fast::hash(bytes));
            }
        }
    }
    set_header(data, &h);
}

fn set_header(data: &mut Vec<u8>, h: &serde_json::Value) {
    let hlen = u32::from_le_bytes(data[12..16].try_into().expect("4 bytes")) as usize;
    let old_start = (16 + hlen).div_ceil(64) * 64;
    let body = data.get(old_start..).unwrap_or(&[]).to_vec();
    let json = serde_json::to_vec(h).expect("json");
    let start = (16 + json.len()).div_ceil(64) * 64;
    data.truncate(12);
    data.extend_from_slice(&(json.len() as u32).to_le_bytes());
    data.extend_from_slice(&json);
    data.resize(start, 0);
    data.extend_from_slice(&body);
}

/// One to four structure-aware edits, then the checksums fixed up.
pub fn mutate(data: &mut Vec<u8>, r: &mut Rng) {
    for _ in 0..1 + r.below(4) {
        let pack = Pack::is_pack(data) && data.len() >= 16;
        match r.below(10) {
            // The header: configuration, tensor table (shapes, storages, offsets), extras.
            0..=5 => {
                let (start, hlen) = if pack {
                    (
                        16,
                        u32::from_le_bytes(data[12..16].try_into().expect("4")) as usize,
                    )
                } else if data.len() >= 8 {
                    (
                        8,
                        u64::from_le_bytes(data[0..8].try_into().expect("8")).min(1 << 20) as usize,
                    )
                } else {
                    (0, 0)
                };
                let Some(json) = data.get(start..start + hlen) else {
                    continue;
                };
                let Ok(mut h) = serde_json::from_slice::<serde_json::Value>(json) else {
                    continue;
                };
                mutate_deep(&mut h, r, 5);
                if pack {
                    set_header(data, &h);
                } else {
                    let json = serde_json::to_vec(&h).expect("json");
                    let body = data[start + hlen..].to_vec();
                    data.clear();
                    data.extend_from_slice(&(json.len() as u64).to_le_bytes());
                    data.extend_from_slice(&json);
                    data.extend_from_slice(&body);
                }
            }
            // The data: flipped bytes, NaN and huge floats.
            6 | 7 => {
                if data.is_empty() {
                    continue;
                }
                let i = r.below(data.len());
                data[i] = match r.below(4) {
                    0 => data[i] ^ (1 << r.below(8)),
                    1 => 0xff,
                    2 => 0x7f,
                    _ => r.next() as u8,
                };
            }
            // Truncate or extend.
            8 => {
                let n = data.len();
                data.truncate(r.below(n + 1));
            }
            _ => {
                let n = r.below(256);
                data.extend((0..n).map(|_| r.next() as u8));
            }
        }
    }
    if r.below(8) != 0 {
        fix_pack(data);
    }
}
