//! Writing models back as official state dicts: a checkpoint the official code wrote, loaded
//! and written again, gives the same keys, shapes, dtypes and bits. This is what makes a
//! model trained here loadable by the official code and by `export`.

mod support;

use std::collections::BTreeSet;

use nextscale::burn::tensor::Device;
use nextscale::fixtures::GoldenVqVaeSource;
use nextscale::state_dict::{Entry, Values, write_safetensors};
use nextscale::var::Var;
use nextscale::{Checkpoint, VqVae, VqVaeConfig};
use support::*;

fn reload(entries: &[Entry]) -> Checkpoint {
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, entries, None).unwrap();
    Checkpoint::from_bytes(bytes).unwrap()
}

#[test]
fn var_state_dict_reproduces_the_official_checkpoint() {
    for path in discover("var_d", "_random.safetensors") {
        let original = open(&path);
        let keys: BTreeSet<String> = original.keys().map(str::to_string).collect();
        let (var, cfg) = Var::from_checkpoint(open(&path), None, &Device::flex()).unwrap();
        let sd = var.state_dict().unwrap();
        let ours: BTreeSet<String> = sd.iter().map(|e| e.name.clone()).collect();
        assert_eq!(ours, keys, "{}: key sets differ", path.display());
        for e in &sd {
            assert_eq!(
                Some(&e.shape[..]),
                original.shape(&e.name),
                "{}: shape",
                e.name
            );
            match &e.values {
                Values::F32(v) => {
                    let want = f32s(&original, &e.name).1;
                    let same = v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same && v.len() == want.len(), "{}: values differ", e.name);
                }
                Values::I64(v) => assert_eq!(v, &i64s(&original, &e.name).1, "{}", e.name),
            }
        }
        // And the written file loads strictly again.
        Var::from_checkpoint(reload(&sd), Some(cfg), &Device::flex()).unwrap();
    }
}

#[test]
fn vqvae_state_dict_has_the_official_keys_and_values() {
    let fp = golden("vqvae_weights_fingerprint.safetensors");
    let want_keys: BTreeSet<String> = fp
        .keys()
        .filter_map(|k| k.strip_suffix("/sum_f64").map(str::to_string))
        .collect();
    let mut src = GoldenVqVaeSource::recording();
    let cfg = VqVaeConfig::vae_ch160v4096z32();
    let vae = VqVae::load(&mut src, &cfg, &Device::flex()).unwrap();
    let record = src.record.unwrap();
    let sd = vae.state_dict(None).unwrap();
    let ours: BTreeSet<String> = sd.iter().map(|e| e.name.clone()).collect();
    assert_eq!(ours, want_keys);
    for r in &record {
        let e = sd.iter().find(|e| e.name == r.name).unwrap();
        assert_eq!(e, r, "{}: shape and values", r.name);
    }
    VqVae::from_checkpoint(reload(&sd), Some(cfg), &Device::flex()).unwrap();
}
