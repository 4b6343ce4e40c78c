//! Checkpoint loading: a missing, unexpected or mis-shaped tensor, a truncated or foreign
//! file, are errors that say what is wrong, never panics.

mod support;

use nextscale::burn::tensor::Device;
use nextscale::state_dict::{Entry, write_safetensors};
use nextscale::{Checkpoint, Error, Pipeline, Var};
use support::*;

/// The float tensors of the d2 golden VAR, as (name, shape, values).
fn d2_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let ck = golden("var_d2_random.safetensors");
    ck.keys()
        .filter(|k| *k != "lvl_1L")
        .map(|k| {
            let (s, v) = f32s(&ck, k);
            (k.to_string(), s, v)
        })
        .collect()
}

fn build(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Checkpoint {
    let entries: Vec<Entry> = tensors
        .iter()
        .map(|(k, s, v)| Entry::f32(k, s.clone(), v.clone()))
        .collect();
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, &entries, None).unwrap();
    Checkpoint::from_bytes(bytes).unwrap()
}

fn load(ck: Checkpoint) -> Result<(), Error> {
    let cfg = nextscale::var::infer_config(&ck, None)?;
    Var::from_checkpoint(ck, Some(cfg), &Device::flex()).map(|_| ())
}

#[test]
fn a_complete_rewritten_checkpoint_loads() {
    // The buffers are optional: without lvl_1L it still loads.
    load(build(&d2_tensors())).unwrap();
}

#[test]
fn missing_tensor_is_named() {
    let mut t = d2_tensors();
    t.retain(|(k, _, _)| k != "blocks.1.ffn.fc2.bias");
    let e = load(build(&t)).unwrap_err();
    assert!(
        matches!(&e, Error::MissingKey { key, .. } if key == "blocks.1.ffn.fc2.bias"),
        "{e}"
    );
    assert!(
        e.to_string().contains("blocks.1.ffn.fc2.bias") && e.to_string().contains("(128,)"),
        "{e}"
    );
}

#[test]
fn misshaped_tensor_names_both_shapes() {
    let mut t = d2_tensors();
    let e = t
        .iter_mut()
        .find(|(k, _, _)| k == "blocks.0.attn.proj.weight")
        .unwrap();
    e.1 = vec![64, 256];
    let err = load(build(&t)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("blocks.0.attn.proj.weight")
            && msg.contains("(64, 256)")
            && msg.contains("(128, 128)"),
        "{msg}"
    );
}

#[test]
fn unexpected_tensor_is_listed() {
    let mut t = d2_tensors();
    t.push(("blocks.0.attn.extra_gate".into(), vec![3], vec![0.0; 3]));
    let err = load(build(&t)).unwrap_err();
    assert!(
        matches!(&err, Error::UnexpectedKeys { keys } if keys.len() == 1),
        "{err}"
    );
    assert!(
        err.to_string().contains("blocks.0.attn.extra_gate"),
        "{err}"
    );
}

#[test]
fn truncated_and_foreign_bytes_are_rejected() {
    let bytes = std::fs::read(golden_dir().join("var_d2_random.safetensors")).unwrap();
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let r = Checkpoint::from_bytes(bytes[..cut].to_vec());
        assert!(
            matches!(r, Err(Error::Format { .. })),
            "cut at {cut}: {:?}",
            r.err()
        );
    }
    let r = Checkpoint::from_bytes(b"this is not a checkpoint at all".to_vec());
    assert!(matches!(r, Err(Error::Format { .. })));
    // A PyTorch archive handed over as bytes is recognised and explained.
    let pth = std::fs::read(golden_dir().join("var_d2_random.pth")).unwrap();
    let msg = Checkpoint::from_bytes(pth).err().unwrap().to_string();
    assert!(msg.contains(".pth"), "{msg}");
}

#[test]
fn vae_and_var_must_agree() {
    // A VQ-VAE whose codebook width differs from the VAR's latent width is refused.
    let parts = golden("vqvae_quant_parts.safetensors");
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = parts
        .keys()
        .map(|k| {
            let (s, v) = f32s(&parts, k);
            (k.to_string(), s, v)
        })
        .collect();
    let e = t
        .iter_mut()
        .find(|(k, _, _)| k == "quantize.embedding.weight")
        .unwrap();
    e.1 = vec![2048, 64];
    let r = Pipeline::from_checkpoints(
        golden("var_d2_random.safetensors"),
        Some(build(&t)),
        &Device::flex(),
    );
    let msg = r.err().expect("mismatch must fail").to_string();
    assert!(
        msg.contains("do not match") || msg.contains("shape"),
        "{msg}"
    );
    // No VQ-VAE at all: explained.
    let r = Pipeline::from_checkpoints(golden("var_d2_random.safetensors"), None, &Device::flex());
    assert!(r.err().unwrap().to_string().contains("VQ-VAE"));
}

#[test]
fn bad_sampling_arguments_are_errors() {
    let pipe = Pipeline::from_checkpoints(
        golden("var_d2_random.safetensors"),
        Some(golden("vqvae_quant_parts.safetensors")),
        &Device::flex(),
    )
    .unwrap();
    let run = |labels: &[usize], o: nextscale::SampleOptions| {
        nextscale::readback::block_on(pipe.generate(labels, &o, &mut nextscale::sampler::NoHooks))
            .err()
    };
    let ok = nextscale::SampleOptions::default();
    assert!(
        run(&[1001], ok.clone())
            .unwrap()
            .to_string()
            .contains("out of range")
    );
    assert!(run(&[], ok.clone()).is_some());
    assert!(
        run(
            &[3],
            nextscale::SampleOptions {
                top_p: 1.5,
                ..ok.clone()
            }
        )
        .is_some()
    );
    assert!(
        run(
            &[3],
            nextscale::SampleOptions {
                cfg: f32::NAN,
                ..ok.clone()
            }
        )
        .is_some()
    );
    assert!(
        run(
            &[3],
            nextscale::SampleOptions {
                top_p: -0.1,
                ..ok.clone()
            }
        )
        .is_some()
    );
    assert!(run(&[3], nextscale::SampleOptions { cfg: -1.0, ..ok }).is_some());
}

#[test]
fn non_finite_weights_are_refused_at_load() {
    for bad in [f32::NAN, f32::INFINITY] {
        let mut t = d2_tensors();
        let w = t
            .iter_mut()
            .find(|(k, _, _)| k == "blocks.0.attn.proj.weight")
            .unwrap();
        w.2[17] = bad;
        let e = load(build(&t)).unwrap_err().to_string();
        assert!(
            e.contains("`blocks.0.attn.proj.weight` holds a non-finite value")
                && e.contains("index 17"),
            "{e}"
        );
    }
}

/// Configurations that would index out of bounds, overflow or ask for absurd memory are
/// refused by the one validation every loader shares.
#[test]
fn hostile_configurations_are_refused_with_their_limit() {
    use nextscale::{PatchNums, VarConfig, VqVaeConfig};
    let msg = |p: Vec<usize>| PatchNums(p).validate().unwrap_err().to_string();
    assert!(msg(vec![2, 3]).contains("first scale must be 1×1"));
    assert!(msg(vec![1, 1 << 32]).contains("at most 32 scales of at most 128×128"));
    assert!(msg(vec![1, 100_000]).contains("at most 32 scales"));
    assert!(msg((1..=40).collect()).contains("at most 32 scales"));
    assert!(msg(vec![1, 64, 64, 64]).contains("more than the limit of 8192"));
    let var = |f: &dyn Fn(&mut VarConfig)| {
        let mut c = VarConfig::d16();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(var(&|c| c.mlp_ratio = f64::NAN).contains("mlp_ratio must be in (0, 64]"));
    assert!(var(&|c| c.mlp_ratio = 1e12).contains("mlp_ratio"));
    assert!(var(&|c| c.embed_dim = 1 << 40).contains("out of range"));
    assert!(var(&|c| c.num_classes = usize::MAX).contains("out of range"));
    let vae = |f: &dyn Fn(&mut VqVaeConfig)| {
        let mut c = VqVaeConfig::vae_ch160v4096z32();
        f(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(vae(&|c| c.ch_mult = vec![1; 12]).contains("out of range"));
    assert!(vae(&|c| c.vocab_size = 1 << 30).contains("out of range"));
    assert!(vae(&|c| c.beta = f32::INFINITY).contains("finite"));
    // A VAR and a VQ-VAE that disagree are refused before anything runs.
    let mut v = VqVaeConfig::vae_ch160v4096z32();
    v.z_channels = 16;
    let e = nextscale::config::check_pair(&VarConfig::d16(), &v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not match"), "{e}");
}

/// Tensors whose rank or sizes cannot be the model's are refused while the configuration is
/// read, before anything indexes them or divides by them.
#[test]
fn misranked_and_empty_tensors_are_refused_while_reading_the_configuration() {
    for (key, shape) in [
        ("word_embed.weight", vec![128]),
        ("class_emb.weight", vec![0, 128]),
        ("blocks.0.attn.scale_mul_1H11", vec![2]),
        ("pos_1LC", vec![680, 128]),
    ] {
        let mut t = d2_tensors();
        let e = t.iter_mut().find(|(k, _, _)| k == key).unwrap();
        let n: usize = shape.iter().product();
        e.1 = shape.clone();
        e.2 = vec![0.5; n];
        let err = load(build(&t)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("tensor `{key}` has shape"))
                && err.contains("dimensions, none of them 0"),
            "{key}: {err}"
        );
    }
    // A VQ-VAE whose first conv has 0 output channels (a divide by zero before).
    let vae = vec![
        (
            "encoder.conv_in.weight".to_string(),
            vec![0, 3, 3, 3],
            vec![],
        ),
        (
            "quantize.embedding.weight".to_string(),
            vec![16, 8],
            vec![0.1; 128],
        ),
    ];
    let e = nextscale::vqvae::infer_config(&build(&vae), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`encoder.conv_in.weight` has shape"), "{e}");
    // A text encoder configuration with no token types.
    let mut b: nextscale::text::BertConfig = serde_json::from_str(
        r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 8, "type_vocab_size": 0,
            "layer_norm_eps": 1e-12}"#,
    )
    .unwrap();
    assert!(
        b.validate()
            .unwrap_err()
            .to_string()
            .contains("token types 1 to 64")
    );
    b.type_vocab_size = 2;
    b.validate().unwrap();
}
