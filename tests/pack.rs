//! nextscale packs: an f32 pack is the same model as its checkpoint; every scheme loads;
//! damaged packs are errors that say what is wrong.

mod support;

use std::collections::BTreeMap;

use nextscale::burn::tensor::Device;
use nextscale::fixtures::{tiny_configs, tiny_model_tensors};
use nextscale::pack::{Pack, Storage, write_pack};
use nextscale::readback::block_on;
use nextscale::sampler::NoHooks;
use nextscale::{Error, Pipeline, SampleOptions};
use support::tiny_safetensors;

fn tiny_pack(storage: Storage) -> Vec<u8> {
    let (var, vae) = tiny_configs();
    let tensors: Vec<_> = tiny_model_tensors(0)
        .unwrap()
        .into_iter()
        .filter_map(nextscale::state_dict::Entry::into_f32)
        .map(|(k, s, v)| {
            let st = if s.len() >= 2 { storage } else { Storage::F32 };
            (k, s, v, st)
        })
        .collect();
    write_pack(
        &var,
        &vae,
        Some((0..10).map(|i| format!("class {i}")).collect()),
        BTreeMap::new(),
        &tensors,
    )
    .unwrap()
}

fn tokens(p: &Pipeline, top_k: usize) -> Vec<Vec<u32>> {
    let o = SampleOptions {
        cfg: 3.0,
        top_k,
        top_p: 0.9,
        seed: 5,
        more_smooth: false,
    };
    block_on(p.generate(&[1, 7], &o, &mut NoHooks))
        .unwrap()
        .tokens
}

#[test]
fn f32_pack_is_the_same_model_as_the_checkpoint() {
    let d = Device::flex();
    let a = Pipeline::from_bytes(tiny_safetensors(0), &d).unwrap();
    let b = Pipeline::from_bytes(tiny_pack(Storage::F32), &d).unwrap();
    assert_eq!(a.var_config(), b.var_config());
    assert_eq!(tokens(&a, 1), tokens(&b, 1));
    assert_eq!(tokens(&a, 50), tokens(&b, 50));
}

#[test]
fn every_scheme_loads_and_shrinks_the_file() {
    let d = Device::flex();
    let f32_len = tiny_pack(Storage::F32).len();
    for (s, max_ratio) in [
        (Storage::F16, 0.51),
        (Storage::Q8, 0.28),
        (Storage::Q4, 0.16),
    ] {
        let bytes = tiny_pack(s);
        let ratio = bytes.len() as f64 / f32_len as f64;
        assert!(ratio <= max_ratio, "{s:?}: {ratio}");
        let p = Pipeline::from_bytes(bytes, &d).unwrap();
        assert_eq!(tokens(&p, 1).concat().len(), 2 * 155);
    }
}

#[test]
fn damaged_packs_are_rejected_with_reasons() {
    let d = Device::flex();
    let good = tiny_pack(Storage::Q8);
    let err = |b: Vec<u8>| {
        Pipeline::from_bytes(b, &d)
            .err()
            .expect("must fail")
            .to_string()
    };
    // A flipped weight byte: the checksum names the tensor.
    let (header, data) = nextscale::pack::read_header(&good).unwrap().unwrap();
    let head = header
        .tensors
        .iter()
        .find(|t| t.name == "head.weight")
        .unwrap();
    let mut b = good.clone();
    b[data + head.offset + head.length / 2] ^= 0x40;
    let m = err(b);
    assert!(m.contains("`head.weight` is corrupt (checksum"), "{m}");
    let n = good.len();
    // Truncated anywhere: header or data.
    for cut in [3, 15, 40, 1000, n / 2, n - 1] {
        let m = err(good[..cut].to_vec());
        assert!(
            m.contains("nextscale pack") || m.contains("safetensors"),
            "cut {cut}: {m}"
        );
    }
    // Another version.
    let mut b = good.clone();
    b[8] = 9;
    assert!(err(b).contains("unsupported pack version 9"));
    // A header that lies about a tensor's length.
    let mut b = good.clone();
    let hlen = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let h = String::from_utf8(b[16..16 + hlen].to_vec()).unwrap();
    let h2 = h.replacen("\"length\":", "\"length\":1", 1);
    assert_eq!(h2.len(), h.len() + 1);
    b.splice(12..16, ((hlen + 1) as u32).to_le_bytes());
    b.splice(16..16 + hlen, h2.into_bytes());
    let m = err(b);
    assert!(m.contains("need") || m.contains("truncated"), "{m}");
    // Not a pack at all, and an empty file.
    assert!(matches!(
        Pack::from_bytes(b"NXSPACK\0garbage".to_vec()),
        Err(Error::Format { .. })
    ));
    assert!(Pipeline::from_bytes(Vec::new(), &d).is_err());
}

/// The regression corpus (written from the spec by `fuzz/make_corpus.py`, plus anything the
/// fuzzer ever found): every file gives a pack or an error, never a panic.
#[test]
fn regression_corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/pack");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let _ = nextscale::pack::read_header(&bytes);
        match Pack::from_bytes(bytes) {
            Ok(p) => {
                let reads: Vec<_> = p.header.tensors.iter().map(|t| p.read(&t.name)).collect();
                if name.starts_with("valid") {
                    for (t, r) in p.header.tensors.iter().zip(&reads) {
                        let v = r
                            .as_ref()
                            .unwrap_or_else(|e| panic!("{name}: {}: {e}", t.name));
                        assert_eq!(v.len(), 70);
                        // Every storage decodes the same values within its own precision.
                        let want = |k: usize| {
                            ((k * 37
                                + ["t.f32", "t.f16", "t.q8", "t.q4"]
                                    .iter()
                                    .position(|s| *s == t.name)
                                    .unwrap()
                                    * 11)
                                % 23) as f32
                                / 8.0
                                - 11.0 / 8.0
                        };
                        let tol = match t.storage {
                            Storage::F32 => 0.0,
                            Storage::F16 => 1e-3,
                            Storage::Q8 => 0.006,
                            Storage::Q4 => 0.11,
                        };
                        for (k, x) in v.iter().enumerate() {
                            assert!(
                                (x - want(k)).abs() <= tol,
                                "{name} {} [{k}]: {x} vs {}",
                                t.name,
                                want(k)
                            );
                        }
                    }
                } else {
                    assert!(
                        reads.iter().any(Result::is_err),
                        "{name} should not read cleanly"
                    );
                }
            }
            Err(e) => assert!(!name.starts_with("valid"), "{name}: {e}"),
        }
        n += 1;
    }
    assert!(n >= 10, "corpus has {n} files");
}

/// Version 2: the pack carries its recommended sampling settings and class names into the
/// pipeline; version 1 packs still load with the official defaults; a pack that requires a
/// feature this library lacks, or carries bad settings, is refused with a message.
#[test]
fn recommended_settings_and_class_names_travel_in_the_pack() {
    use nextscale::pack::{PackExtras, write_pack_with};
    use nextscale::sampler::Recommended;
    let d = Device::flex();
    let (var, vae) = tiny_configs();
    let tensors: Vec<_> = tiny_model_tensors(0)
        .unwrap()
        .into_iter()
        .filter_map(nextscale::state_dict::Entry::into_f32)
        .map(|(k, s, v)| (k, s, v, Storage::F32))
        .collect();
    let names: Vec<String> = (0..10).map(|i| format!("digit {i}")).collect();
    let rec = Recommended {
        cfg: 3.0,
        top_k: 50,
        top_p: 0.9,
        prompt: None,
        class: Some(7),
    };
    let extras = PackExtras {
        sampling: Some(rec.clone()),
        ..PackExtras::default()
    };
    let bytes = write_pack_with(
        &var,
        &vae,
        Some(names.clone()),
        BTreeMap::new(),
        extras,
        &tensors,
    )
    .unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let p = Pipeline::from_bytes(bytes.clone(), &d).unwrap();
    assert_eq!(p.recommended(), Some(&rec));
    assert_eq!(p.default_options(), rec.options(0));
    assert_eq!(p.class_names(), Some(names.as_slice()));
    assert_eq!(p.class_name(7), Some("digit 7"));
    assert_eq!(p.class_name(10), Some("unconditional"));

    // A version 1 pack (the corpus' minimal one is written from the spec) still parses.
    let v1 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/pack/valid-minimal.nsp"),
    )
    .unwrap();
    assert_eq!(v1[8], 1);
    assert!(Pack::from_bytes(v1).unwrap().header.sampling.is_none());
    // Without settings the pipeline falls back to the official defaults.
    let plain = Pipeline::from_bytes(tiny_pack(Storage::F32), &d).unwrap();
    assert_eq!(plain.default_options(), SampleOptions::default());

    // Rewrite the header: a required feature this library does not know; bad settings.
    let rewrite = |f: &dyn Fn(&str) -> String| {
        let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let (h, data) = nextscale::pack::read_header(&bytes).unwrap().unwrap();
        let json = f(&serde_json::to_string(&h).unwrap());
        let start = (16 + json.len()).div_ceil(64) * 64;
        let mut b = bytes[..8].to_vec();
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(json.as_bytes());
        b.resize(start, 0);
        b.extend_from_slice(&bytes[data..]);
        let _ = hlen;
        Pipeline::from_bytes(b, &d)
            .err()
            .expect("must fail")
            .to_string()
    };
    let m = rewrite(&|h| h.replacen("\"tensors\":", "\"requires\":[\"lora-v7\"],\"tensors\":", 1));
    assert!(
        m.contains("needs features this version of nextscale lacks (lora-v7)"),
        "{m}"
    );
    let m = rewrite(&|h| h.replacen("\"cfg\":3.0", "\"cfg\":-2.0", 1));
    assert!(m.contains("cfg must be a finite number"), "{m}");
    let m = rewrite(&|h| h.replacen("\"class\":7", "\"class\":11", 1));
    assert!(m.contains("recommended class 11 is out of range"), "{m}");
    let m = rewrite(&|h| h.replacen("\"class\":7", "\"class\":7,\"prompt\":\"a cat\"", 1));
    assert!(m.contains("does not take prompts"), "{m}");
}
