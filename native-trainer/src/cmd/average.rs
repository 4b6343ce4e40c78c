//! `native-trainer average`: the element-wise mean of several state dicts of one model (a
//! uniform "model soup", Wortsman et al. 2022). Runs fine-tuned from one starting point tend to
//! stay in one basin of the loss, and their mean can beat each of them; it costs no training.
//! Inputs may be packs (their weights dequantized) and runs' checkpoints (their model without
//! the optimizer state); the mean of one input is that input as safetensors, which is how a
//! pack's VAR becomes the `--init` of a run or an ingredient of a soup.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::Checkpoint;
use nextscale::state_dict::{Entry, Values, write_safetensors};

/// Metadata that must be equal in every input.
const IDENTITY: &[&str] = &["format", "patch_nums", "class_names"];

#[derive(Args, Debug)]
pub struct AverageArgs {
    /// State dicts of one model, with the same tensor names and shapes: safetensors (e.g. runs'
    /// `var.safetensors`), runs' checkpoints (`checkpoints/step-N.safetensors`: the model
    /// only) or packs (the model named by --part, dequantized). One input is written as it is.
    #[arg(required = true, num_args = 1..)]
    inputs: Vec<PathBuf>,
    /// Which model of a pack to read: `var` or `vae` (ignored for other files).
    #[arg(long, default_value = "var", value_parser = ["var", "vae"])]
    part: String,
    /// The mean, as safetensors: every float tensor the mean of the inputs' (stored as F32),
    /// every integer tensor kept (stored as I64; it must be equal in all); the first input's
    /// metadata, with `averaged_from` set to the number of inputs.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: AverageArgs) -> Result<()> {
    // clap has already refused no inputs (`num_args = 1..`).
    let t0 = Instant::now();
    let cks: Vec<Checkpoint> = a
        .inputs
        .iter()
        .map(|p| crate::run::open_model(p, &a.part))
        .collect::<Result<_>>()?;
    let first = &cks[0];
    let names: Vec<&str> = first.keys().collect();
    for (ck, path) in cks.iter().zip(&a.inputs).skip(1) {
        // What says which model a state dict is beyond its shapes: its format, its scales
        // and its class names (two class models with the same shapes but classes in another
        // order must not be averaged).
        for key in IDENTITY {
            let (x, y) = (first.metadata().get(*key), ck.metadata().get(*key));
            if x != y {
                bail!(
                    "{} and {} are not the same model: their metadata `{key}` differs ({} / {})",
                    a.inputs[0].display(),
                    path.display(),
                    x.map_or("absent", String::as_str),
                    y.map_or("absent", String::as_str)
                );
            }
        }
        let other: Vec<&str> = ck.keys().collect();
        if other != names {
            // Both lists are sorted and distinct, so one of them holds a name the other lacks.
            let why = match names.iter().find(|k| !ck.contains(k)) {
                Some(k) => format!("`{k}` is missing"),
                None => {
                    let extra = other.iter().find(|k| !first.contains(k));
                    format!("`{}` is extra", extra.unwrap_or(&"?"))
                }
            };
            bail!(
                "{} does not hold the same tensors as {} ({why})",
                path.display(),
                a.inputs[0].display()
            );
        }
        for k in &names {
            if ck.shape(k) != first.shape(k) {
                bail!(
                    "tensor `{k}` has shape {:?} in {} but {:?} in {}",
                    ck.shape(k).unwrap_or_default(),
                    path.display(),
                    first.shape(k).unwrap_or_default(),
                    a.inputs[0].display()
                );
            }
        }
    }
    let n = cks.len() as f64;
    let mut entries = Vec::with_capacity(names.len());
    let (mut floats, mut ints) = (0usize, 0usize);
    for k in &names {
        let shape = first.shape(k).unwrap_or_default().to_vec();
        if let Ok((_, v)) = first.read_i64(k) {
            for (ck, path) in cks.iter().zip(&a.inputs).skip(1) {
                let (_, w) = ck
                    .read_i64(k)
                    .with_context(|| format!("tensor `{k}` of {}", path.display()))?;
                if w != v {
                    bail!(
                        "integer tensor `{k}` differs between {} and {}: integers are not averaged",
                        a.inputs[0].display(),
                        path.display()
                    );
                }
            }
            ints += 1;
            entries.push(Entry {
                name: k.to_string(),
                shape,
                values: Values::I64(v),
            });
            continue;
        }
        let mut sum: Vec<f64> = Vec::new();
        for (ck, path) in cks.iter().zip(&a.inputs) {
            let t = ck
                .read_f32(k)
                .with_context(|| format!("tensor `{k}` of {}", path.display()))?;
            if sum.is_empty() {
                sum = t.data.iter().map(|&x| f64::from(x)).collect();
            } else {
                sum.iter_mut()
                    .zip(&t.data)
                    .for_each(|(s, &x)| *s += f64::from(x));
            }
        }
        floats += 1;
        entries.push(Entry::f32(
            k.to_string(),
            shape,
            sum.into_iter().map(|s| (s / n) as f32).collect(),
        ));
    }
    let mut meta: BTreeMap<String, String> = first.metadata().clone();
    meta.insert("averaged_from".into(), cks.len().to_string());
    let mut bytes = Vec::new();
    write_safetensors(&mut bytes, &entries, Some(&meta))?;
    crate::run::write_atomic(&a.out, &bytes)?;
    eprintln!(
        "averaged {} state dict(s) ({floats} float tensors, {ints} integer tensors kept) into {} in {:.2} s",
        cks.len(),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
