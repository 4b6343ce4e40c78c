//! LoRA: PEFT's names and layout, the merge `W + (alpha / r) · B A` computed independently in
//! PyTorch layout, unmerged = merged outputs, and LoRA packs (required feature, applied at
//! load, new classes in the class table).

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use nextscale::fixtures::{tiny_configs, tiny_model_tensors};
use nextscale::pack::{Pack, PackExtras, Storage, write_pack_with};
use nextscale::params::RandomInit;
use nextscale::state_dict::{Entry, Values, parameters, write_safetensors};
use nextscale::var::lora::{LoraConfig, LoraTarget, tensor_names};
use nextscale::{Checkpoint, Pipeline, Var};

fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

fn cfg() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![
            LoraTarget::Qkv,
            LoraTarget::Proj,
            LoraTarget::Fc1,
            LoraTarget::Fc2,
            LoraTarget::AdaLin,
        ],
    }
}

/// Non-zero LoRA tensors for the tiny VAR, PyTorch layout, keyed by their state-dict names.
fn lora_entries(var: &nextscale::VarConfig, cfg: &LoraConfig) -> Vec<Entry> {
    let c = var.embed_dim;
    let hidden = (c as f64 * var.mlp_ratio) as usize;
    let dims = |t: LoraTarget| match t {
        LoraTarget::Qkv => (c, 3 * c),
        LoraTarget::Proj => (c, c),
        LoraTarget::Fc1 => (c, hidden),
        LoraTarget::Fc2 => (hidden, c),
        LoraTarget::AdaLin => (c, 6 * c),
    };
    let mut out = Vec::new();
    let mut seed = 1;
    for i in 0..var.depth {
        for &t in &cfg.targets {
            let (din, dout) = dims(t);
            let r = cfg.rank;
            let p = format!("blocks.{i}.{}", t.key());
            out.push(Entry::f32(
                format!("{p}.lora_A.weight"),
                vec![r, din],
                lcg(seed, r * din, 0.2),
            ));
            out.push(Entry::f32(
                format!("{p}.lora_B.weight"),
                vec![dout, r],
                lcg(seed + 1, dout * r, 0.2),
            ));
            seed += 2;
        }
    }
    out
}

fn checkpoint(entries: &[Entry]) -> Checkpoint {
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, entries, None).unwrap();
    Checkpoint::from_bytes(bytes).unwrap()
}

fn values(e: &Entry) -> &[f32] {
    match &e.values {
        Values::F32(v) => v,
        Values::I64(_) => panic!("f32 expected"),
    }
}

fn by_name(entries: Vec<Entry>) -> BTreeMap<String, Entry> {
    entries.into_iter().map(|e| (e.name.clone(), e)).collect()
}

fn tiny_var(d: &Device) -> Var {
    let (vc, _) = tiny_configs();
    Var::load(&mut RandomInit::new(0), &vc, d).unwrap()
}

#[test]
fn lora_uses_peft_names_and_merges_as_w_plus_scaled_b_a() {
    let d = Device::flex();
    let (vc, _) = tiny_configs();
    let cfg = cfg();
    let lora = lora_entries(&vc, &cfg);
    let base = by_name(parameters(&tiny_var(&d)).unwrap());
    let with = tiny_var(&d)
        .attach_lora(&cfg, &mut checkpoint(&lora), &d)
        .unwrap();
    assert!(with.has_lora());

    // Read back under PEFT's names and PyTorch layout, exactly as given.
    let got = by_name(parameters(&with).unwrap());
    let names = tensor_names(&cfg, vc.depth);
    assert_eq!(names.len(), lora.len());
    for e in &lora {
        assert!(names.contains(&e.name), "{}", e.name);
        let g = &got[&e.name];
        assert_eq!(g.shape, e.shape, "{}", e.name);
        assert_eq!(values(g), values(e), "{}", e.name);
    }

    // Merged: W[o, i] + (alpha / r) · Σ_k B[o, k] A[k, i], computed here in PyTorch layout.
    let merged = by_name(parameters(&with.clone().merge_lora()).unwrap());
    let s = cfg.alpha / cfg.rank as f32;
    let lora = by_name(lora);
    for i in 0..vc.depth {
        for t in &cfg.targets {
            let p = format!("blocks.{i}.{}", t.key());
            let w = &base[&format!("{p}.weight")];
            let (a, b) = (
                &lora[&format!("{p}.lora_A.weight")],
                &lora[&format!("{p}.lora_B.weight")],
            );
            let (dout, din, r) = (w.shape[0], w.shape[1], cfg.rank);
            let m = values(&merged[&format!("{p}.weight")]);
            let mut worst = 0f32;
            for o in 0..dout {
                for j in 0..din {
                    let mut acc = 0f32;
                    for k in 0..r {
                        acc += values(b)[o * r + k] * values(a)[k * din + j];
                    }
                    let want = values(w)[o * din + j] + s * acc;
                    worst = worst.max((m[o * din + j] - want).abs());
                }
            }
            assert!(worst < 1e-5, "{p}: merged weight off by {worst}");
            assert!(!merged.contains_key(&format!("{p}.lora_A.weight")));
        }
    }

    // Unmerged and merged give the same logits (teacher-forced, every scale).
    let l = vc.patch_nums.total_tokens();
    let x = Tensor::<3>::from_data(
        TensorData::new(lcg(9, 2 * (l - 1) * vc.cvae, 1.0), [2, l - 1, vc.cvae]),
        &d,
    );
    let cond = with.class_embedding(with.labels(&[3, 7], &d).unwrap());
    let a = with.forward_teacher_cond(cond.clone(), x.clone(), None);
    let merged_var = with.clone().merge_lora();
    assert!(!merged_var.has_lora());
    let b = merged_var.forward_teacher_cond(cond, x, None);
    let diff = (a - b).abs().max().into_scalar::<f32>();
    assert!(diff < 1e-3, "unmerged vs merged logits differ by {diff}");
}

#[test]
fn fresh_lora_changes_nothing() {
    let d = Device::flex();
    let (vc, _) = tiny_configs();
    let base = by_name(parameters(&tiny_var(&d)).unwrap());
    let merged = tiny_var(&d)
        .attach_lora(&cfg(), &mut RandomInit::new(5), &d)
        .unwrap()
        .merge_lora();
    let merged = by_name(parameters(&merged).unwrap());
    for i in 0..vc.depth {
        let k = format!("blocks.{i}.attn.mat_qkv.weight");
        assert_eq!(values(&base[&k]), values(&merged[&k]), "{k}");
    }
}

#[test]
fn lora_packs_require_the_feature_and_apply_at_load() {
    let d = Device::flex();
    let (mut vc, vae) = tiny_configs();
    let cfg = cfg();
    let lora = lora_entries(&vc, &cfg);
    let mut tensors: Vec<_> = tiny_model_tensors(0)
        .unwrap()
        .into_iter()
        .filter_map(nextscale::state_dict::Entry::into_f32)
        .map(|(k, s, v)| (k, s, v, Storage::F32))
        .collect();
    // Two new classes before the null row, as `export --lora` writes them.
    let c = vc.embed_dim;
    let t = tensors
        .iter_mut()
        .find(|t| t.0 == "class_emb.weight")
        .unwrap();
    let null = t.2.split_off(10 * c);
    t.2.extend(lcg(77, 2 * c, 0.5));
    t.2.extend(null);
    t.1 = vec![13, c];
    vc.num_classes = 12;
    for e in &lora {
        tensors.push((
            format!("lora.{}", e.name),
            e.shape.clone(),
            values(e).to_vec(),
            Storage::F32,
        ));
    }
    let extras = PackExtras {
        lora: Some(cfg.clone()),
        ..PackExtras::default()
    };
    let bytes = write_pack_with(&vc, &vae, None, BTreeMap::new(), extras, &tensors).unwrap();
    let pack = Pack::from_bytes(bytes.clone()).unwrap();
    assert_eq!(pack.header.requires, vec!["lora".to_string()]);
    assert_eq!(pack.header.lora.as_ref(), Some(&cfg));

    // Loaded: the LoRA is merged into the weights, the new classes sample.
    let p = Pipeline::from_bytes(bytes.clone(), &d).unwrap();
    assert!(!p.var().has_lora());
    assert_eq!(p.var().num_classes, 12);
    let want = tiny_var(&d)
        .attach_lora(&cfg, &mut checkpoint(&lora), &d)
        .unwrap()
        .merge_lora();
    let (got, want) = (
        by_name(parameters(p.var()).unwrap()),
        by_name(parameters(&want).unwrap()),
    );
    let k = "blocks.1.ffn.fc2.weight";
    assert_eq!(values(&got[k]), values(&want[k]));
    let opts = nextscale::sampler::SampleOptions {
        cfg: 2.0,
        top_k: 0,
        top_p: 0.0,
        seed: 1,
        more_smooth: false,
    };
    let g =
        nextscale::readback::block_on(p.generate(&[11], &opts, &mut nextscale::sampler::NoHooks))
            .unwrap();
    assert_eq!(g.tokens.len(), 1);
    assert_eq!(g.tokens[0].len(), vc.patch_nums.total_tokens());
    let e =
        nextscale::readback::block_on(p.generate(&[13], &opts, &mut nextscale::sampler::NoHooks))
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("out of range"), "{e}");

    // The model as a checkpoint, for fine-tuning from the pack, is the base without its LoRA.
    let ck = pack.model_checkpoint("var").unwrap();
    assert!(!ck.keys().any(|k| k.contains("lora")));
    assert_eq!(ck.shape("class_emb.weight"), Some(&[13usize, c][..]));

    // A reader that only knows the header's `requires` refuses a LoRA without it.
    let hlen = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let json = std::str::from_utf8(&bytes[16..16 + hlen]).unwrap();
    let stripped = json.replace(r#""requires":["lora"]"#, r#""requires":[      ]"#);
    assert_ne!(json, stripped);
    let mut bad = bytes.clone();
    bad[16..16 + hlen].copy_from_slice(stripped.as_bytes());
    let e = Pack::from_bytes(bad).err().unwrap().to_string();
    assert!(e.contains("does not list `lora`"), "{e}");
}

#[test]
fn bad_lora_configurations_are_refused_with_a_message() {
    let mut c = cfg();
    c.rank = 0;
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("LoRA rank 0 is outside 1..=256")
    );
    let mut c = cfg();
    c.alpha = f32::NAN;
    assert!(c.validate().unwrap_err().to_string().contains("alpha"));
    let mut c = cfg();
    c.targets.clear();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("at least one")
    );
}
