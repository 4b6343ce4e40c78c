//! Shared support for the parity tests: finding the golden vectors, reading them, the golden
//! VQ-VAE generator, and comparisons that report where they fail.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nextscale::Checkpoint;
use nextscale::burn::tensor::{Device, Int, Tensor, TensorData};

/// The golden folder: `$NEXTSCALE_GOLDEN_DIR`, else `../shared/var-golden` from the project root.
pub fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("NEXTSCALE_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/var-golden"),
    };
    assert!(
        dir.join("README.md").is_file() || dir.is_dir(),
        "golden vectors not found at {} (set NEXTSCALE_GOLDEN_DIR)",
        dir.display()
    );
    dir
}

/// Golden files whose names match `prefix*suffix`, sorted.
pub fn discover(prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("readable golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    v.sort();
    v
}

/// The depth `D` in a file name `var_d{D}_...`.
pub fn depth_of(path: &Path) -> usize {
    let n = path.file_name().unwrap().to_str().unwrap();
    n.strip_prefix("var_d")
        .and_then(|r| r.split('_').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no depth in {n}"))
}

pub fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn golden(name: &str) -> Checkpoint {
    open(&golden_dir().join(name))
}

/// The `__metadata__` map of a safetensors file.
pub fn metadata(path: &Path) -> BTreeMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn f32s(ck: &Checkpoint, key: &str) -> (Vec<usize>, Vec<f32>) {
    let t = ck.read_f32(key).unwrap_or_else(|e| panic!("{key}: {e}"));
    (t.shape, t.data)
}

pub fn i64s(ck: &Checkpoint, key: &str) -> (Vec<usize>, Vec<i64>) {
    ck.read_i64(key).unwrap_or_else(|e| panic!("{key}: {e}"))
}

pub fn float_tensor<const D: usize>(ck: &Checkpoint, key: &str, device: &Device) -> Tensor<D> {
    let (shape, data) = f32s(ck, key);
    let s: [usize; D] = shape
        .try_into()
        .unwrap_or_else(|s| panic!("{key}: rank of {s:?}"));
    Tensor::from_data(TensorData::new(data, s), device)
}

pub fn int_tensor<const D: usize>(ck: &Checkpoint, key: &str, device: &Device) -> Tensor<D, Int> {
    let (shape, data) = i64s(ck, key);
    let s: [usize; D] = shape
        .try_into()
        .unwrap_or_else(|s| panic!("{key}: rank of {s:?}"));
    Tensor::from_data(TensorData::new(data, s), device)
}

pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

pub fn host_i64<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap()
}

/// Max and mean absolute difference.
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut max = 0f32;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(!d.is_nan(), "NaN in comparison");
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len().max(1) as f64) as f32)
}

/// Asserts `max |a − b| ≤ tol` and prints the figure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> f32 {
    let (max, mean) = diff(got, want);
    println!("{what}: max-abs {max:.3e}, mean-abs {mean:.3e} (tolerance {tol:.0e})");
    assert!(max <= tol, "{what}: max-abs {max:e} exceeds {tol:e}");
    max
}

pub fn assert_exact(what: &str, got: &[i64], want: &[i64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ (first at {}: got {}, want {})",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
    println!("{what}: {} indices identical", got.len());
}

/// The small random-weight model of `nextscale::fixtures` as safetensors bytes (VAR with its
/// VQ-VAE under `vae.`).
pub fn tiny_safetensors(seed: u64) -> Vec<u8> {
    let t = nextscale::fixtures::tiny_model_tensors(seed).unwrap();
    let mut out = Vec::new();
    nextscale::state_dict::write_safetensors(&mut out, &t, None).unwrap();
    out
}
