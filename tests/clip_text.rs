//! The CLIP text encoder against the reference implementations (see
//! `scripts/make-clip-reference.py`, stored in `tests/reference/clip_text.json`):
//! * token ids of fixed prompts from open_clip's `SimpleTokenizer`, with CLIP's BPE vocabulary
//!   (`scripts/fetch-clip-vocab.sh`, or `$NEXTSCALE_CLIP_BPE`);
//! * hidden states and pooled outputs of transformers' `CLIPTextModel` (small config) whose
//!   weights both sides compute from the same formula.

use std::io::Read;
use std::path::PathBuf;

use nextscale::Checkpoint;
use nextscale::burn::tensor::Device;
use nextscale::state_dict::{Entry, write_safetensors};
use nextscale::text::{ClipBpe, ClipTextConfig, ClipTextModel};

fn reference() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/clip_text.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

fn bpe_text() -> String {
    let path = match std::env::var_os("NEXTSCALE_CLIP_BPE") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("NEXTSCALE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nextscale")
                });
            cache.join("clip/bpe_simple_vocab_16e6.txt.gz")
        }
    };
    let gz = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/fetch-clip-vocab.sh or set NEXTSCALE_CLIP_BPE)",
            path.display()
        )
    });
    let mut s = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    })
}

/// The reference script's `weight()`.
fn weight(key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let base = fnv1a(key);
    (0..n as u64)
        .map(|i| {
            let r = (splitmix(base ^ i) >> 11) as f64 * 2f64.powi(-53) * 2.0 - 1.0;
            let v = if key.contains("layer_norm") && key.ends_with("weight") {
                1.0 + 0.1 * r
            } else if key.ends_with("bias") {
                0.02 * r
            } else if key.contains("embedding") {
                0.5 * r
            } else {
                r * (3.0 / shape[1] as f64).sqrt()
            };
            v as f32
        })
        .collect()
}

/// The reference model's tensors, from the formula, with the reference's key list and shapes.
fn formula_entries(r: &serde_json::Value, cfg: &ClipTextConfig) -> Vec<Entry> {
    let c = cfg.hidden_size;
    let shape_of = |k: &str| -> Vec<usize> {
        let (v, h, i, p) = (
            cfg.vocab_size,
            c,
            cfg.intermediate_size,
            cfg.max_position_embeddings,
        );
        if k.ends_with("token_embedding.weight") {
            vec![v, h]
        } else if k.ends_with("position_embedding.weight") {
            vec![p, h]
        } else if k.ends_with("fc1.weight") {
            vec![i, h]
        } else if k.ends_with("fc1.bias") {
            vec![i]
        } else if k.ends_with("fc2.weight") {
            vec![h, i]
        } else if k.ends_with("proj.weight") {
            vec![h, h]
        } else {
            vec![h]
        }
    };
    r["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let k = k.as_str().unwrap();
            let s = shape_of(k);
            Entry::f32(k, s.clone(), weight(k, &s))
        })
        .collect()
}

/// The reference config as a plain CLIPTextModel (its config names a projection width, but the
/// model has none) and its tensors from the formula.
fn reference_model(r: &serde_json::Value) -> (ClipTextConfig, Vec<Entry>) {
    let mut cfg: ClipTextConfig = ClipTextConfig::from_json(&r["config"].to_string()).unwrap();
    cfg.projection_dim = None;
    let entries = formula_entries(r, &cfg);
    (cfg, entries)
}

#[test]
fn clip_tokenizer_matches_open_clip() {
    let r = reference();
    let t = ClipBpe::from_open_clip(&bpe_text()).unwrap();
    assert_eq!(t.vocab_size(), 49408);
    for (i, p) in r["prompts"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = r["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(t.encode(p.as_str().unwrap(), 77), want, "tokens of {p}");
    }
}

#[test]
fn clip_text_model_matches_transformers() {
    let r = reference();
    let (cfg, entries) = reference_model(&r);
    let c = cfg.hidden_size;
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, &entries, None).unwrap();
    let mut ck = Checkpoint::from_bytes(bytes).unwrap();
    let device = Device::flex();
    let model = ClipTextModel::load(&mut ck, &cfg, &device).unwrap();
    ck.finish().unwrap();
    let mut worst = 0f32;
    for (i, ids) in r["ids"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let (hidden, pooled) = model.forward(std::slice::from_ref(&ids), &device).unwrap();
        let pooled = pooled
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let hidden = hidden
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        let l = ids.len();
        let checks = [
            (&pooled[..], &r["pooled"][i]),
            (&hidden[..c], &r["last_hidden_first_last"][i][0]),
            (&hidden[(l - 1) * c..], &r["last_hidden_first_last"][i][1]),
        ];
        for (got, want) in checks {
            for (g, w) in got.iter().zip(want.as_array().unwrap()) {
                let d = (g - w.as_f64().unwrap() as f32).abs();
                worst = worst.max(d);
                assert!(d <= 1e-4, "prompt {i}: {g} vs {w}");
            }
        }
    }
    eprintln!("CLIP text: max |Δ| = {worst:.2e}");
}

/// A pack carries a CLIP text encoder: the pipeline built from the pack embeds prompts exactly
/// as the encoder it was written from (f32 storage), with the same tokens, and the pack
/// requires the `clip-text` feature.
#[test]
fn a_pack_carries_a_clip_encoder() {
    use nextscale::pack::{ClipHeader, Pack, PackExtras, Storage, write_pack_with};
    use nextscale::text::{ClipText, TextEncoder};
    let r = reference();
    let (cfg, entries) = reference_model(&r);
    let device = Device::flex();
    let tokenizer = ClipBpe::from_open_clip(&bpe_text()).unwrap();
    let (vocab, merges) = tokenizer.to_lists().unwrap();
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, &entries, None).unwrap();
    let mut ck = Checkpoint::from_bytes(bytes).unwrap();
    let reference = ClipText::load(&mut ck, cfg.clone(), tokenizer, &device).unwrap();
    ck.finish().unwrap();

    // A tiny text-conditioned VAR for this encoder's width, and the encoder under `text.`.
    let (mut var, vae) = nextscale::fixtures::tiny_configs();
    var.text_dim = cfg.hidden_size;
    let mut tensors: Vec<_> = nextscale::fixtures::model_tensors(&var, &vae, 0)
        .unwrap()
        .into_iter()
        .chain(entries.into_iter().map(|mut e| {
            e.name = format!("text.{}", e.name);
            e
        }))
        .filter_map(Entry::into_f32)
        .map(|(k, s, v)| (k, s, v, Storage::F32))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let extras = PackExtras {
        clip: Some(ClipHeader {
            config: cfg.clone(),
            vocab,
            merges,
        }),
        ..PackExtras::default()
    };
    let bytes = write_pack_with(&var, &vae, None, Default::default(), extras, &tensors).unwrap();
    let pack = Pack::from_bytes(bytes).unwrap();
    assert_eq!(pack.header.requires, vec!["clip-text".to_string()]);
    let pipe = nextscale::Pipeline::from_pack(pack, &device).unwrap();
    assert!(pipe.takes_prompts());
    let Some(TextEncoder::Clip(packed)) = pipe.text_encoder() else {
        panic!("the pack's pipeline has no CLIP encoder");
    };
    let prompts: Vec<&str> = r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in &prompts {
        assert_eq!(packed.tokenize(p), reference.tokenize(p), "tokens of {p}");
    }
    let got = packed.embed(&prompts, &device).unwrap().into_data();
    let want = reference.embed(&prompts, &device).unwrap().into_data();
    assert_eq!(got, want, "embeddings of the pack's encoder");

    // The pipeline keeps the last prompt's embedding: a repeated prompt gets the rows that
    // encoding it gave, and another prompt never gets them. (The rows alone cannot tell a
    // cache hit from encoding again; what this checks is that the cache never answers wrong.)
    let rows = |p: &str| {
        let c = [nextscale::Condition::Prompt(p.to_string())];
        pipe.condition_rows(&c).unwrap().into_data()
    };
    let (a, b) = (prompts[0], prompts[1]);
    let first = rows(a);
    assert_eq!(rows(a), first, "{a} again");
    let other = rows(b);
    assert_ne!(other, first, "{b} after {a}");
    assert_eq!(rows(a), first, "{a} after {b}");
}

/// A Hugging Face CLIP folder (config.json, vocab.json, merges.txt, model.safetensors) opens
/// to the same encoder, also with the legacy `eos_token_id: 2` of older CLIP configs (pooled at
/// the end-of-text token, as transformers does); a mismatched end-of-text id is refused.
#[test]
fn a_hugging_face_clip_folder_opens_with_a_legacy_eos_id() {
    use nextscale::text::ClipText;
    let r = reference();
    let (cfg, entries) = reference_model(&r);
    let device = Device::flex();
    let tokenizer = ClipBpe::from_open_clip(&bpe_text()).unwrap();
    let (vocab, merges) = tokenizer.to_lists().unwrap();
    let dir = std::env::temp_dir().join(format!("nextscale-clip-folder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vocab_json: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::json!(i)))
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::to_string(&vocab_json).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("merges.txt"),
        format!("#version: 0.2\n{}\n", merges.join("\n")),
    )
    .unwrap();
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, &entries, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let prompts = ["a photo of a cat", "red apple"];
    let mut legacy = serde_json::to_value(&cfg).unwrap();
    legacy["eos_token_id"] = serde_json::json!(2);
    std::fs::write(dir.join("config.json"), legacy.to_string()).unwrap();
    let opened = ClipText::open(&dir, &device).unwrap();
    assert_eq!(opened.config.eos_token_id, tokenizer.eot);
    let mut ck =
        Checkpoint::from_bytes(std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
    let direct = ClipText::load(&mut ck, cfg.clone(), tokenizer, &device).unwrap();
    assert_eq!(
        opened.embed(&prompts, &device).unwrap().into_data(),
        direct.embed(&prompts, &device).unwrap().into_data()
    );
    let mut wrong = cfg.clone();
    wrong.eos_token_id = 7;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&wrong).unwrap(),
    )
    .unwrap();
    let err = ClipText::open(&dir, &device)
        .err()
        .expect("a wrong end-of-text id is refused");
    assert!(err.to_string().contains("end-of-text"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
