//! `native-trainer sample`: images (or only tokens) from a model, one per condition.

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use nextscale::Condition;
use nextscale::readback::block_on;

use crate::args::{GenerateArgs, ModelArgs, progress};

#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    generate: GenerateArgs,
    /// Sample (and decode) the same images once first, untimed, so that the times reported
    /// leave out one-time costs such as a GPU backend compiling its kernels (for benchmarks:
    /// scripts/gpu-check.sh). The images are the same as without it.
    #[arg(long)]
    warmup: bool,
}

pub fn run(a: SampleArgs) -> Result<()> {
    let t0 = Instant::now();
    let (pipe, _device) = a.model.load()?;
    a.generate.output.check(&pipe)?;
    let fallback = pipe.recommended().and_then(|r| {
        r.prompt
            .clone()
            .map(Condition::Prompt)
            .or(r.class.map(Condition::Class))
    });
    let conds = a.generate.cond.conditions(fallback)?;
    if conds.iter().any(|c| matches!(c, Condition::Prompt(_))) && pipe.text_encoder().is_none() {
        bail!("--prompt needs a text encoder: this model file has none, give --text-encoder");
    }
    let opts = a.generate.sampling.options(&pipe);
    if a.warmup {
        let t = Instant::now();
        let g = block_on(pipe.generate_with(&conds, &opts, &mut progress()))?;
        if pipe.can_decode() {
            block_on(pipe.decode(&g))?;
        }
        eprintln!(
            "warm-up: sampled and decoded in {:.3} s (not counted below)",
            t.elapsed().as_secs_f64()
        );
    }
    let t1 = Instant::now();
    let g = block_on(pipe.generate_with(&conds, &opts, &mut progress()))?;
    eprintln!(
        "sampled {} image(s) in {:.3} s",
        conds.len(),
        t1.elapsed().as_secs_f64()
    );
    let n = a.generate.cond.n;
    a.generate
        .output
        .write(&pipe, &g, &[], |i| match &conds[i] {
            Condition::Class(l) => format!("{i:04}_class{l}.png"),
            _ => format!("{i:04}_prompt{}.png", i / n),
        })?;
    eprintln!("total {:.2} s", t0.elapsed().as_secs_f64());
    Ok(())
}
