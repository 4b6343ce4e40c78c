//! `native-trainer export`: checkpoints → one nextscale pack, with a quality report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::burn::tensor::{Device, Int, Tensor, TensorData};
use nextscale::pack::{
    ClipHeader, EncodedTensor, PackExtras, Storage, TextHeader, encode, write_pack_encoded,
};
use nextscale::params::Recorder;
use nextscale::readback::block_on;
use nextscale::sampler::{NoHooks, SampleHooks, SampleOptions};
use nextscale::{Checkpoint, Pipeline, Var, VqVae, var, vqvae};
use regex::Regex;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// VAR checkpoint (`.pth` or `.safetensors`; may hold its VQ-VAE under `vae.`), or a pack
    /// (its VAR, e.g. to add an adapter to a shipped model).
    #[arg(
        long,
        required_unless_present = "from_pack",
        conflicts_with = "from_pack"
    )]
    var: Option<PathBuf>,
    /// Rewrite an existing pack's settings (--cfg/--top-k/--top-p/--default-prompt/
    /// --default-class, --class-names) as the current format version; its weights are copied
    /// byte for byte.
    #[arg(long, conflicts_with_all = ["vae", "text_encoder", "adapter", "keep", "text_quant"])]
    from_pack: Option<PathBuf>,
    /// VQ-VAE checkpoint (`.pth` or `.safetensors`), or a pack (its VQ-VAE).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Storage of the weight matrices: f32, f16, q8 or q4 (per block of 32, f16 scales).
    #[arg(long, default_value = "q8")]
    quant: String,
    /// Per-tensor override, `REGEX=STORAGE` (e.g. `--keep 'class_emb|head\.'=f16`); first match wins.
    #[arg(long)]
    keep: Vec<String>,
    /// A text file with one class name per line.
    #[arg(long)]
    class_names: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Skip the quality report (it samples with both models and decodes images).
    #[arg(long)]
    no_report: bool,
    /// Put this text encoder in the pack, so the pack takes prompts: for a text-conditioned
    /// VAR, or with --adapter. A sentence-transformers folder (MiniLM), or a Hugging Face CLIP
    /// folder (`config.json`, `vocab.json`, `merges.txt`, `model.safetensors`).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// LoRA updates (`train-lora`) of the class-conditional VAR: stored in the pack under
    /// `lora.` and applied at load; its new classes are added to the class table (name them
    /// with --class-names, the model's classes first).
    #[arg(long)]
    lora: Option<PathBuf>,
    /// A text adapter (`train-adapter`) for the class-conditional VAR.
    #[arg(long, requires = "text_encoder")]
    adapter: Option<PathBuf>,
    /// Storage of the text encoder's matrices (default: --quant). q4 shrinks MiniLM-L6 from
    /// 23 MB to 12 MB; the report gives the embedding cosine to the f32 encoder.
    #[arg(long, requires = "text_encoder")]
    text_quant: Option<String>,
    /// Prompts for the text-encoder report: a file with one prompt per line, or a
    /// `metadata.jsonl` (its "text" fields). Default: a few built-in prompts.
    #[arg(long, requires = "text_encoder")]
    report_prompts: Option<PathBuf>,
    /// Prompts to fit the text encoder's q8/q4 matrices to (GPTQ: each block's codes are
    /// chosen to keep the layer's outputs on these prompts, not each weight; the stored format
    /// is unchanged). One prompt per line, or a `metadata.jsonl`. MiniLM (BERT) encoders.
    /// Without it, every weight is rounded to nearest.
    #[arg(long, requires = "text_encoder")]
    text_calibration: Option<PathBuf>,
    /// Fit the VAR's q8/q4 linear weights with GPTQ to the inputs they see on N sequences the
    /// f32 model samples itself at the pack's settings (with its condition and with the null
    /// one, CFG's two halves). Conditions: the classes in turn, or for a text-conditioned VAR,
    /// N of the --text-calibration prompts (else --report-prompts), evenly spaced.
    #[arg(long, conflicts_with = "lora")]
    var_calibration: Option<usize>,
    /// Recommended guidance strength, stored in the pack: the default of `sample`,
    /// `generate()` and the demo page for this model (with --top-k and --top-p).
    #[arg(long, requires_all = ["top_k", "top_p"])]
    cfg: Option<f32>,
    /// Recommended top-k (0 = off).
    #[arg(long, requires = "cfg")]
    top_k: Option<usize>,
    /// Recommended top-p (0 = off).
    #[arg(long, requires = "cfg")]
    top_p: Option<f32>,
    /// A prompt that shows the model at its best (the demo page opens on it).
    #[arg(long, requires = "cfg")]
    default_prompt: Option<String>,
    /// A class that shows the model at its best.
    #[arg(long, requires = "cfg")]
    default_class: Option<usize>,
}

/// Which storage a tensor gets: an override, else the scheme for weight matrices, else f32
/// (biases, norms and the per-head scales are tiny and sensitive). The input embeddings
/// (`word_embed`, `class_emb`, positions, levels) default to f16 under q8/q4: measured on the
/// golden d2 weights they halve the teacher-forced logit error of a q8 pack (max 0.82 → 0.35)
/// for about 0.1 % more bytes (docs/BENCHMARKS.md).
fn storage_for(
    name: &str,
    shape: &[usize],
    default: Storage,
    text: Storage,
    keep: &[(Regex, Storage)],
) -> Storage {
    if let Some((_, s)) = keep.iter().find(|(r, _)| r.is_match(name)) {
        return *s;
    }
    let default = if name.starts_with("text.") {
        text
    } else {
        default
    };
    let n: usize = shape.iter().product();
    let embedding = [
        "word_embed.",
        "class_emb.",
        "pos_1LC",
        "pos_start",
        "lvl_embed.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        // LoRA updates are small, and their product is what matters: keep them precise.
        || name.starts_with("lora.");
    if embedding && matches!(default, Storage::Q8 | Storage::Q4) {
        Storage::F16
    } else if shape.len() >= 2 && n >= 1024 {
        default
    } else {
        Storage::F32
    }
}

/// The recommended settings given on the command line, if any.
fn recommended(a: &ExportArgs) -> Result<Option<nextscale::sampler::Recommended>> {
    let Some(cfg) = a.cfg else { return Ok(None) };
    let r = nextscale::sampler::Recommended {
        cfg,
        top_k: a.top_k.context("--cfg needs --top-k")?,
        top_p: a.top_p.context("--cfg needs --top-p")?,
        prompt: a.default_prompt.clone(),
        class: a.default_class,
    };
    r.validate()?;
    Ok(Some(r))
}

fn read_class_names(p: &std::path::Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("reading {}", p.display()))?
        .lines()
        .map(str::to_string)
        .collect())
}

fn repack(a: &ExportArgs, src: &std::path::Path) -> Result<()> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let pack = nextscale::pack::Pack::from_bytes(bytes)
        .with_context(|| format!("reading {}", src.display()))?;
    let sampling = recommended(a)?;
    let names = a.class_names.as_deref().map(read_class_names).transpose()?;
    let out = pack.rewrite_header(|h| {
        if sampling.is_some() {
            h.sampling = sampling;
        }
        if names.is_some() {
            h.class_names = names;
        }
        h.meta.insert(
            "repacked_by".into(),
            format!("native-trainer {}", env!("CARGO_PKG_VERSION")),
        );
    })?;
    // Every tensor must still read (checksums) and the model must load.
    Pipeline::from_bytes(out.clone(), &Device::flex())
        .with_context(|| format!("checking the rewritten {}", a.out.display()))?;
    crate::run::write_atomic(&a.out, &out)?;
    eprintln!(
        "wrote {} ({} bytes; weights copied from {})",
        a.out.display(),
        out.len(),
        src.display()
    );
    Ok(())
}

pub fn run(a: ExportArgs) -> Result<()> {
    if let Some(src) = &a.from_pack {
        return repack(&a, src);
    }
    let t0 = Instant::now();
    let var_path = a.var.clone().expect("clap requires --var or --from-pack");
    let default = Storage::parse(&a.quant)?;
    let text_storage = match &a.text_quant {
        Some(q) => Storage::parse(q)?,
        None => default,
    };
    let keep = a
        .keep
        .iter()
        .map(|k| {
            let (re, s) = k
                .rsplit_once('=')
                .with_context(|| format!("--keep `{k}` is not REGEX=STORAGE"))?;
            Ok((
                Regex::new(re).with_context(|| format!("--keep `{k}`"))?,
                Storage::parse(s)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let device = Device::flex();
    let mut var_ck = crate::run::open_model(&var_path, "var")?;
    let recorded_classes = var_ck.metadata().get("class_names").cloned();
    let embedded = var_ck.split_prefix("vae.");
    let mut vae_ck = match &a.vae {
        Some(p) => crate::run::open_model(p, "vae")?,
        None if !embedded.is_empty() => embedded,
        None => bail!("export needs the VQ-VAE: pass --vae"),
    };
    let var_cfg = var::infer_config(&var_ck, None)?;
    let vae_cfg = vqvae::infer_config(&vae_ck, Some(var_cfg.patch_nums.clone()))?;
    // Load both models through recorders: the f32 reference and the list of tensors.
    let mut rec = Recorder::new(&mut var_ck, "");
    let mut var_model = Var::load(&mut rec, &var_cfg, &device)?;
    let mut tensors = std::mem::take(&mut rec.tensors);
    var_ck.finish()?;
    let mut var_cfg = var_cfg;
    let mut lora = None;
    let mut lora_names: Option<Vec<String>> = None;
    if let Some(p) = &a.lora {
        let (lm, mut ck) = crate::cmd::train_lora::read_lora_file(p)?;
        if lm.base_classes != var_cfg.num_classes || var_cfg.text_dim > 0 {
            bail!(
                "{} was trained on a VAR with {} classes; {} has {}",
                p.display(),
                lm.base_classes,
                var_path.display(),
                var_cfg.num_classes
            );
        }
        let (nc, k, c) = (var_cfg.num_classes, lm.new_classes, var_cfg.embed_dim);
        if k > 0 {
            // The new rows go before the null class: ids nc..nc+k.
            let rows = ck.take_f32("new_class_emb", &[k, c])?;
            let t = tensors
                .iter_mut()
                .find(|t| t.name == "class_emb.weight")
                .context("the VAR has no class table")?;
            t.shape = vec![nc + k + 1, c];
            let v = t.f32_values_mut().context("class_emb.weight is not f32")?;
            let null = v.split_off(nc * c);
            v.extend_from_slice(&rows);
            v.extend(null);
            var_model = var_model.with_new_classes(Tensor::from_data(
                burn::tensor::TensorData::new(rows, [k, c]),
                &device,
            ))?;
            var_cfg.num_classes += k;
        }
        let mut rec = Recorder::new(&mut ck, "lora.");
        // The reference the quality report compares with: the f32 base with the updates merged.
        var_model = var_model
            .attach_lora(&lm.lora, &mut rec, &device)?
            .merge_lora();
        tensors.append(&mut rec.tensors);
        ck.finish()?;
        lora_names = Some(
            lm.new_class_names
                .filter(|n| n.len() == k)
                .unwrap_or_else(|| (nc..nc + k).map(|i| format!("class {i}")).collect()),
        );
        lora = Some(lm.lora);
    }
    let mut rec = Recorder::new(&mut vae_ck, "vae.");
    let vae_model = VqVae::load(&mut rec, &vae_cfg, &device)?;
    tensors.append(&mut rec.tensors);
    vae_ck.finish()?;
    let mut extras = PackExtras {
        lora,
        ..PackExtras::default()
    };
    let mut minilm = None;
    if let Some(dir) = &a.text_encoder {
        if var_cfg.text_dim == 0 && a.adapter.is_none() {
            bail!(
                "--text-encoder needs a text-conditioned VAR or an --adapter; {} is class-conditional",
                var_path.display()
            );
        }
        let dim = if dir.join("merges.txt").is_file() {
            // CLIP (a Hugging Face CLIPTextModel or CLIPModel folder).
            if a.text_calibration.is_some() {
                bail!(
                    "--text-calibration supports MiniLM (BERT) encoders; {} is CLIP",
                    dir.display()
                );
            }
            let (config, tokenizer, mut ck) = nextscale::text::ClipText::read_folder(dir)?;
            let (vocab, merges) = tokenizer.to_lists()?;
            let mut rec = Recorder::new(&mut ck, "text.");
            nextscale::text::ClipText::load(&mut rec, config.clone(), tokenizer, &device)?;
            tensors.append(&mut rec.tensors);
            nextscale::text::ClipText::finish_folder(&ck)?;
            let dim = config.projection_dim.unwrap_or(config.hidden_size);
            extras.clip = Some(ClipHeader {
                config,
                vocab,
                merges,
            });
            dim
        } else {
            // A sentence-transformers BERT (MiniLM).
            let read = |n: &str| {
                std::fs::read_to_string(dir.join(n))
                    .with_context(|| format!("reading {}", dir.join(n).display()))
            };
            let config: nextscale::text::BertConfig = serde_json::from_str(&read("config.json")?)?;
            let vocab = read("vocab.txt")?;
            let max_tokens = nextscale::text::max_tokens(
                &config,
                read("sentence_bert_config.json").ok().as_deref(),
            );
            let mut ck =
                nextscale::text::bert_tensors(Checkpoint::open(dir.join("model.safetensors"))?);
            let mut rec = Recorder::new(&mut ck, "text.");
            // The f32 encoder, kept for calibration.
            minilm = Some(nextscale::text::MiniLm::load(
                &mut rec,
                config.clone(),
                &vocab,
                max_tokens,
                &device,
            )?);
            tensors.append(&mut rec.tensors);
            ck.finish()?;
            let dim = config.hidden_size;
            extras.text = Some(TextHeader {
                config,
                max_tokens,
                vocab: vocab.lines().map(str::to_string).collect(),
            });
            dim
        };
        let text_dim = if var_cfg.text_dim > 0 {
            var_cfg.text_dim
        } else {
            dim
        };
        if text_dim != dim {
            bail!(
                "the model takes {text_dim}-d text embeddings; {} gives {dim}",
                dir.display()
            );
        }
    } else if var_cfg.text_dim > 0 {
        eprintln!(
            "note: this VAR is text-conditioned but no --text-encoder was given: the pack cannot take prompts"
        );
    }
    if let Some(p) = &a.adapter {
        let mut ck = Checkpoint::open(p).with_context(|| format!("reading {}", p.display()))?;
        let acfg = crate::cmd::train_adapter::adapter_config(&ck)?;
        if acfg.embed_dim != var_cfg.embed_dim {
            bail!(
                "{} was trained for a VAR of width {}, not {}",
                p.display(),
                acfg.embed_dim,
                var_cfg.embed_dim
            );
        }
        let mut rec = Recorder::new(&mut ck, "adapter.");
        nextscale::var::adapter::TextAdapter::load(&mut rec, &acfg, &device)?;
        tensors.append(&mut rec.tensors);
        ck.finish()?;
        extras.adapter = Some(acfg);
    }

    let class_names = match &a.class_names {
        Some(p) => Some(read_class_names(p)?),
        // A model trained by `train-var` records its class names.
        None => match &recorded_classes {
            Some(j) => Some(
                serde_json::from_str::<Vec<String>>(j)
                    .with_context(|| format!("{}: class_names metadata", var_path.display()))?,
            )
            // A LoRA's new classes follow the model's own.
            .map(|mut names: Vec<String>| {
                names.extend(lora_names.clone().unwrap_or_default());
                names
            }),
            None => None,
        },
    };
    let mut meta = BTreeMap::new();
    meta.insert(
        "tool".into(),
        format!("native-trainer {}", env!("CARGO_PKG_VERSION")),
    );
    meta.insert("scheme".into(), a.quant.clone());
    meta.insert("keep".into(), a.keep.join(" "));
    if let Some(q) = &a.text_quant {
        meta.insert("text_scheme".into(), q.clone());
    }
    extras.sampling = recommended(&a)?;
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let with_storage: Vec<_> = tensors
        .into_iter()
        .filter_map(|e| e.into_f32())
        .map(|(k, s, v)| {
            let st = storage_for(&k, &s, default, text_storage, &keep);
            let e = counts.entry(format!("{st:?}").to_lowercase()).or_default();
            e.0 += 1;
            e.1 += v.len();
            (k, s, v, st)
        })
        .collect();
    let params: usize = with_storage.iter().map(|t| t.2.len()).sum();
    let mut calibrated = BTreeMap::new();
    if let Some(n) = a.var_calibration {
        let conds = var_calibration_conditions(&a, &var_model, minilm.as_ref(), n, &device)?;
        let opts = match &extras.sampling {
            Some(r) => r.options(0),
            None => SampleOptions::default(),
        };
        let tensors = calibrate_var(
            &var_model,
            &vae_model.quantize,
            conds,
            &opts,
            &with_storage,
            &device,
        )?;
        if !tensors.is_empty() {
            meta.insert(
                "var_calibration".into(),
                format!("GPTQ over {n} sampled sequences"),
            );
        }
        calibrated.extend(tensors);
    }
    if let Some(p) = &a.text_calibration {
        let model = minilm.context("--text-calibration needs a MiniLM --text-encoder")?;
        let (tensors, prompts) = calibrate_text(model, p, &with_storage, &device)?;
        if tensors.keys().any(|k| k.starts_with("text.encoder.")) {
            meta.insert(
                "text_calibration".into(),
                format!("GPTQ over {prompts} prompts"),
            );
        }
        calibrated.extend(tensors);
    }
    let encoded: Vec<EncodedTensor> = with_storage
        .into_iter()
        .map(|(name, shape, values, storage)| EncodedTensor {
            bytes: std::sync::Arc::new(
                calibrated
                    .remove(&name)
                    .unwrap_or_else(|| encode(&values, storage)),
            ),
            name,
            shape,
            storage,
        })
        .collect();
    let bytes = write_pack_encoded(&var_cfg, &vae_cfg, class_names, meta, extras, &encoded)?;
    crate::run::write_atomic(&a.out, &bytes)?;
    eprintln!(
        "wrote {} ({} bytes, {:.3} bytes/parameter, {params} parameters) in {:.1} s",
        a.out.display(),
        bytes.len(),
        bytes.len() as f64 / params as f64,
        t0.elapsed().as_secs_f64()
    );
    for (s, (n, v)) in &counts {
        eprintln!("  {s}: {n} tensors, {v} values");
    }
    if a.no_report {
        return Ok(());
    }
    let reference = Pipeline::new(var_model, var_cfg, vae_model, vae_cfg)?;
    let quantized = Pipeline::from_bytes(bytes.clone(), &device)?;
    report(&reference, &quantized, bytes.len(), params, &a.quant)?;
    if let (Some(dir), Some(text)) = (&a.text_encoder, quantized.text_encoder()) {
        text_report(dir, text, a.report_prompts.as_deref(), &device)?;
    }
    Ok(())
}

/// GPTQ codes for the text encoder's q8/q4 linear weights (`text.encoder.layer.*`), fitted to
/// `prompts`' inputs on `model` (the f32 encoder, updated as its blocks are quantized), and
/// scale-searched codes for its embedding tables; keyed by tensor name,
/// with the number of distinct prompts.
fn calibrate_text(
    mut model: nextscale::text::MiniLm,
    prompts: &std::path::Path,
    tensors: &[(String, Vec<usize>, Vec<f32>, Storage)],
    device: &Device,
) -> Result<(BTreeMap<String, Vec<u8>>, usize)> {
    let prompts = read_prompts(prompts)?;
    let t0 = Instant::now();
    let mut out = BTreeMap::new();
    // The embedding tables are looked up, not multiplied: each block's scale is chosen to
    // minimise its own rounding error. They go first, so that the blocks are calibrated on
    // what the quantized tables feed them.
    for (name, shape, values, storage) in tensors {
        let Some(key) = name.strip_prefix("text.embeddings.") else {
            continue;
        };
        if !matches!(storage, Storage::Q8 | Storage::Q4) {
            continue;
        }
        let bytes = crate::gptq::round_blocks(values, *storage)?;
        let deq = nextscale::pack::decode(&bytes, *storage, values.len());
        let t = Tensor::<2>::from_data(TensorData::new(deq, [shape[0], shape[1]]), device);
        let bert = &mut model.bert;
        let table = match key {
            "word_embeddings.weight" => &mut bert.word_embeddings,
            "position_embeddings.weight" => &mut bert.position_embeddings,
            "token_type_embeddings.weight" => &mut bert.token_type_embeddings,
            _ => bail!("unexpected text tensor `{name}`"),
        };
        *table = nextscale::burn::module::Param::from_tensor(t);
        out.insert(name.clone(), bytes);
    }
    // Block by block, each calibrated on the outputs of the blocks already quantized (GPTQ's
    // sequential order), so later blocks also correct the error of earlier ones.
    for layer in 0..model.bert.layers.len() {
        let grams = crate::gptq::bert_grams(&model, &prompts, layer, device)?;
        for (names, gram) in &grams {
            for n in names {
                let key = format!("text.encoder.layer.{layer}.{n}.weight");
                let Some((_, shape, values, storage)) = tensors.iter().find(|t| t.0 == key) else {
                    bail!("the pack has no `{key}`");
                };
                let Some(bytes) = crate::gptq::fit_matrix(&key, shape, values, gram, *storage)?
                else {
                    continue;
                };
                let (rows, cols) = (shape[0], shape[1]);
                let deq = nextscale::pack::decode(&bytes, *storage, rows * cols);
                let w = Tensor::<2>::from_data(TensorData::new(deq, [rows, cols]), device);
                let linear = model.bert.layers[layer]
                    .linear_mut(n)
                    .context("not a linear layer")?;
                linear.weight = Some(nextscale::burn::module::Param::from_tensor(w.transpose()));
                out.insert(key, bytes);
            }
        }
    }
    eprintln!(
        "text calibration (GPTQ over {} prompts): {:.1} s",
        prompts.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok((out, prompts.len()))
}

/// The condition rows `[n, C]` that `--var-calibration` samples for: classes in turn, or the
/// f32 encoder's embeddings of `n` evenly spaced calibration prompts.
fn var_calibration_conditions(
    a: &ExportArgs,
    var: &Var,
    minilm: Option<&nextscale::text::MiniLm>,
    n: usize,
    device: &Device,
) -> Result<Tensor<2>> {
    const MAX_SEQUENCES: usize = 65_536;
    if n == 0 || n > MAX_SEQUENCES {
        bail!("--var-calibration takes 1 to {MAX_SEQUENCES} sequences, not {n}");
    }
    if var.text_dim() == 0 {
        let labels: Vec<usize> = (0..n).map(|i| i % var.num_classes.max(1)).collect();
        return Ok(var.class_embedding(var.labels(&labels, device)?));
    }
    let file = a
        .text_calibration
        .as_ref()
        .or(a.report_prompts.as_ref())
        .context("--var-calibration of a text-conditioned VAR needs prompts: --text-calibration or --report-prompts")?;
    let model = minilm
        .context("--var-calibration of a text-conditioned VAR needs a MiniLM --text-encoder")?;
    // Not empty: read_prompts refuses a file without prompts.
    let prompts = read_prompts(file)?;
    let picked: Vec<&str> = (0..n)
        .map(|i| prompts[i * prompts.len() / n].as_str())
        .collect();
    let mut rows = Vec::new();
    for chunk in picked.chunks(64) {
        rows.push(var.text_condition(model.embed(chunk, device)?)?);
    }
    Ok(Tensor::cat(rows, 0))
}

/// GPTQ codes for the VAR's q8/q4 linear weights that have a traced input
/// ([`Var::forward_teacher_traced`]), fitted to the f32 model's inputs on sequences it samples
/// for `conds` (each also run with the null condition); keyed by tensor name. Every layer is
/// fitted to the f32 model's activations (not block by block on the quantized ones).
fn calibrate_var(
    var: &Var,
    quantizer: &nextscale::vqvae::VectorQuantizer,
    conds: Tensor<2>,
    opts: &SampleOptions,
    tensors: &[(String, Vec<usize>, Vec<f32>, Storage)],
    device: &Device,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let t0 = Instant::now();
    let n = conds.dims()[0];
    let mut grams: BTreeMap<String, crate::gptq::Gram> = BTreeMap::new();
    for (bi, start) in (0..n).step_by(16).enumerate() {
        let b = 16.min(n - start);
        let cond = conds.clone().narrow(0, start, b);
        let rows = Tensor::cat(vec![cond.clone(), var.null_condition(b)], 0);
        let opts = SampleOptions {
            seed: opts.seed.wrapping_add(bi as u64),
            ..opts.clone()
        };
        let g = block_on(nextscale::sampler::generate_with_condition(
            var,
            quantizer,
            rows,
            &opts,
            &mut NoHooks,
        ))?;
        let x = quantizer.idx_to_var_input(&g.scale_maps(&var.patch_nums, device));
        for c in [cond, var.null_condition(b)] {
            var.forward_teacher_traced(c, x.clone(), &mut |name, t| {
                if name == nextscale::var::RESIDUAL {
                    return;
                }
                let [tb, tl, tc] = t.dims();
                grams
                    .entry(name.to_string())
                    .or_insert_with(|| crate::gptq::Gram::new(tc))
                    .add(t, &Tensor::ones([tb, tl], device), tb * tl);
            });
        }
    }
    let mut out = BTreeMap::new();
    for (name, shape, values, storage) in tensors {
        let Some(gram) = name.strip_suffix(".weight").and_then(|l| grams.get(l)) else {
            continue;
        };
        if let Some(bytes) = crate::gptq::fit_matrix(name, shape, values, gram, *storage)? {
            out.insert(name.clone(), bytes);
        }
    }
    eprintln!(
        "VAR calibration (GPTQ over {n} sampled sequences): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(out)
}

/// Prompts from a file: one per line, or the "text" fields of a `metadata.jsonl` (a JSON
/// object without one is an error); sorted, without repeats.
fn read_prompts(p: &std::path::Path) -> Result<Vec<String>> {
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let mut v: Vec<String> = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(
            |(i, l)| match serde_json::from_str::<serde_json::Value>(l) {
                Ok(serde_json::Value::Object(j)) => j
                    .get("text")
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
                    .with_context(|| format!("{} line {}: no \"text\" field", p.display(), i + 1)),
                _ => Ok(l.trim().to_string()),
            },
        )
        .collect::<Result<_>>()?;
    v.sort();
    v.dedup();
    if v.is_empty() {
        bail!("{} has no prompts", p.display());
    }
    Ok(v)
}

/// Cosine between the pack's text embeddings and the f32 encoder's, over prompts.
fn text_report(
    dir: &std::path::Path,
    packed: &nextscale::text::TextEncoder,
    prompts: Option<&std::path::Path>,
    device: &Device,
) -> Result<()> {
    let prompts: Vec<String> = match prompts {
        Some(p) => read_prompts(p)?,
        None => [
            "red apple",
            "a cat face",
            "flag: Japan",
            "the number seven",
            "rocket",
        ]
        .map(str::to_string)
        .to_vec(),
    };
    let reference = nextscale::text::TextEncoder::open(dir, device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let (mut min, mut sum) = (f64::INFINITY, 0f64);
    for chunk in prompts.chunks(64) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let a = host(reference.embed(&refs, device)?);
        let b = host(packed.embed(&refs, device)?);
        let d = a.len() / refs.len();
        for (x, y) in a.chunks(d).zip(b.chunks(d)) {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
            let nx: f64 = x.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            let ny: f64 = y.iter().map(|q| (*q as f64).powi(2)).sum::<f64>().sqrt();
            let c = dot / (nx * ny).max(1e-12);
            min = min.min(c);
            sum += c;
        }
    }
    println!(
        "text encoder: embedding cosine to f32 over {} prompts: mean {:.5}, min {:.5}",
        prompts.len(),
        sum / prompts.len() as f64,
        min
    );
    Ok(())
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Compares a quantized pipeline with its f32 reference and prints one markdown row.
pub fn report(
    f32p: &Pipeline,
    qp: &Pipeline,
    size: usize,
    params: usize,
    scheme: &str,
) -> Result<()> {
    let device = Device::flex();
    let cfg = f32p.var_config();
    let null = cfg.num_classes;
    // Two classes; a text-only model (no classes) is compared on its null condition.
    let labels = if null == 0 {
        [0, 0]
    } else {
        [3.min(null - 1), (cfg.num_classes * 98 / 100).min(null - 1)]
    };
    // Teacher-forced logits on the f32 model's own greedy tokens.
    let opts = SampleOptions {
        cfg: 4.0,
        top_k: 1,
        top_p: 0.0,
        seed: 42,
        more_smooth: false,
    };
    let g_ref = block_on(f32p.generate(&labels, &opts, &mut NoHooks))?;
    let g_q = block_on(qp.generate(&labels, &opts, &mut NoHooks))?;
    let total: usize = g_ref.tokens.iter().map(Vec::len).sum();
    let same: usize = g_ref
        .tokens
        .iter()
        .zip(&g_q.tokens)
        .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x == y).count())
        .sum();
    // Replay: the quantized model predicts each scale with the f32 model's tokens forced as
    // the prefix, so one flip does not cascade into every later scale.
    struct Replay {
        forced: Vec<Vec<Vec<u32>>>,
        agree: usize,
        total: usize,
    }
    impl SampleHooks for Replay {
        fn logits(&mut self, si: usize, l: &[f32], [b, n, v]: [usize; 3]) {
            for bi in 0..b {
                for t in 0..n {
                    let row = &l[(bi * n + t) * v..(bi * n + t + 1) * v];
                    let arg = (0..v).fold(0, |best, i| if row[i] > row[best] { i } else { best });
                    self.agree += (arg as u32 == self.forced[si][bi][t]) as usize;
                    self.total += 1;
                }
            }
        }
        fn forced_tokens(&mut self, si: usize) -> Option<Vec<Vec<u32>>> {
            Some(self.forced[si].clone())
        }
    }
    let mut per_scale = Vec::new();
    let mut begin = 0;
    for &p in &cfg.patch_nums.0 {
        per_scale.push(
            g_ref
                .tokens
                .iter()
                .map(|t| t[begin..begin + p * p].to_vec())
                .collect(),
        );
        begin += p * p;
    }
    let mut replay = Replay {
        forced: per_scale,
        agree: 0,
        total: 0,
    };
    block_on(qp.generate(&labels, &opts, &mut replay))?;
    let x = f32p
        .quantizer()
        .idx_to_var_input(&g_ref.scale_maps(&cfg.patch_nums, &device));
    let lab: Tensor<1, Int> = Tensor::from_data(
        TensorData::new(vec![labels[0] as i64, null as i64], [2]),
        &device,
    );
    let lr = host(f32p.var().forward_teacher(lab.clone(), x.clone(), None));
    let lq = host(qp.var().forward_teacher(lab, x, None));
    let (mut max, mut sum) = (0f32, 0f64);
    for (a, b) in lr.iter().zip(&lq) {
        let d = (a - b).abs();
        max = max.max(d);
        sum += d as f64;
    }
    let mean = sum / lr.len() as f64;
    // PSNR: the same f32 latent through both decoders, and each model's own image.
    let img_ref = block_on(f32p.decode(&g_ref))?;
    let img_q_same = block_on(qp.decode_fhat(g_ref.f_hat.clone()))?;
    let img_q_own = block_on(qp.decode(&g_q))?;
    let flat = |v: &[nextscale::image::RgbImage]| {
        v.iter().flat_map(|i| i.data.clone()).collect::<Vec<u8>>()
    };
    let (r, qs, qo) = (flat(&img_ref), flat(&img_q_same), flat(&img_q_own));
    println!(
        "| scheme | file size | bytes/param | TF logits max / mean abs err | greedy tokens, f32 prefix forced | greedy tokens, free-running | PSNR decoder (same latent) | PSNR end to end |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {scheme} | {:.2} MB | {:.3} | {max:.2e} / {mean:.2e} | {}/{} ({:.1} %) | {same}/{total} ({:.1} %) | {:.1} dB | {:.1} dB |",
        size as f64 / 1e6,
        size as f64 / params as f64,
        replay.agree,
        replay.total,
        100.0 * replay.agree as f64 / replay.total as f64,
        100.0 * same as f64 / total as f64,
        psnr(&r, &qs),
        psnr(&r, &qo)
    );
    Ok(())
}
