//! The MiniLM sentence encoder against the reference implementation: token ids and
//! embeddings of fixed prompts made by sentence-transformers (see
//! `scripts/make-text-reference.py`; stored in `tests/reference/minilm.json`), from the real
//! all-MiniLM-L6-v2 weights (`scripts/fetch-minilm.sh`, or `$NEXTSCALE_MINILM_DIR`).

use std::path::PathBuf;

use nextscale::burn::tensor::Device;
use nextscale::text::MiniLm;

fn model_dir() -> PathBuf {
    let dir = match std::env::var_os("NEXTSCALE_MINILM_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("NEXTSCALE_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/nextscale")
                });
            cache.join("all-MiniLM-L6-v2")
        }
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 not found at {} (run scripts/fetch-minilm.sh or set NEXTSCALE_MINILM_DIR)",
        dir.display()
    );
    dir
}

#[test]
fn minilm_matches_sentence_transformers() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/minilm.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let device = Device::flex();
    let m = MiniLm::open(model_dir(), &device).unwrap();
    assert_eq!(
        m.max_tokens,
        reference["made_with"]["max_seq_length"].as_u64().unwrap() as usize
    );
    let prompts: Vec<&str> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for (i, p) in prompts.iter().enumerate() {
        let want: Vec<u32> = reference["ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(m.tokenize(p), want, "token ids of {p:?}");
    }
    let emb = m.embed(&prompts, &device).unwrap();
    let got = emb
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    let dim = m.dim();
    let mut worst = 0f32;
    for (i, p) in prompts.iter().enumerate() {
        let want = reference["embeddings"][i].as_array().unwrap();
        assert_eq!(want.len(), dim);
        for (k, w) in want.iter().enumerate() {
            let d = (got[i * dim + k] - w.as_f64().unwrap() as f32).abs();
            worst = worst.max(d);
            assert!(
                d <= 1e-4,
                "{p:?}[{k}]: {} vs {w} (|Δ| {d})",
                got[i * dim + k]
            );
        }
    }
    eprintln!("MiniLM: {} prompts, max |Δ| = {worst:.2e}", prompts.len());
}

#[test]
fn bad_text_encoder_files_are_errors() {
    let device = Device::flex();
    let dir = model_dir();
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    // A vocabulary that disagrees with the config.
    let short: String = vocab.lines().take(1000).collect::<Vec<_>>().join("\n");
    let e = MiniLm::from_parts(&config, &short, vec![], None, &device)
        .err()
        .unwrap();
    assert!(e.to_string().contains("vocab.txt has 1000 tokens"), "{e}");
    // Weights that are not safetensors.
    let e = MiniLm::from_parts(&config, &vocab, b"not weights".to_vec(), None, &device)
        .err()
        .unwrap();
    assert!(!e.to_string().is_empty());
}
