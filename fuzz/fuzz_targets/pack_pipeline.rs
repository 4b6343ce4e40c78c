//! Fuzzes the whole loading path, structure-aware: packs and safetensors files mutated in
//! their headers (configuration, tensor table) and data, with every checksum fixed up, then
//! parsed, read, built into a pipeline and sampled for two scales (`fuzz/pipeline_case.rs`).
//! Any panic, overflow or out-of-bounds access is a crash.
#![no_main]

#[path = "../pipeline_case.rs"]
mod case;

use libfuzzer_sys::{fuzz_mutator, fuzz_target};

fuzz_target!(|data: &[u8]| {
    let _ = case::run(data);
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let mut r = case::Rng::new(seed as u64);
    if r.below(4) == 0 {
        // libFuzzer's own byte-level mutations, then the checksums fixed up.
        let n = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
        let mut v = data[..n].to_vec();
        case::fix_pack(&mut v);
        let n = v.len().min(max_size);
        data[..n].copy_from_slice(&v[..n]);
        return n;
    }
    let mut v = data[..size].to_vec();
    case::mutate(&mut v, &mut r);
    let n = v.len().min(max_size);
    data[..n].copy_from_slice(&v[..n]);
    n
});
