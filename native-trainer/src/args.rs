//! Option groups shared by the commands: which model to run, what to generate, how to
//! sample, where to write (`sample`, `edit`, `evaluate`), and what every training command
//! takes (`train-*`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use nextscale::burn::tensor::Device;
use nextscale::device::{BackendKind, init_device};
use nextscale::image::{RgbImage, grid};
use nextscale::readback::block_on;
use nextscale::sampler::{Generated, OnScale, SampleOptions, ScaleEvent};
use nextscale::var::infer_config;
use nextscale::{Checkpoint, Condition, Pipeline, VarConfig, VqVae};

use crate::tokens::TokenSet;
use crate::trainconf;

/// The model to run: a pack, or checkpoints; optional text encoder and adapter.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// VAR checkpoint (official `.pth`, `.safetensors`, or a run's `checkpoints/step-N.safetensors`).
    #[arg(long, required_unless_present = "pack", conflicts_with = "pack")]
    pub var: Option<PathBuf>,
    /// A nextscale pack (`native-trainer export`), instead of --var/--vae.
    #[arg(long)]
    pub pack: Option<PathBuf>,
    /// VQ-VAE checkpoint (`.pth`, `.safetensors`, a run's checkpoint, or a pack's VQ-VAE). A file with only `quantize.*` samples tokens without images.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// The sentence encoder the model was trained with (a sentence-transformers folder), for
    /// prompts when the model file carries none.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// A text adapter (`train-adapter`) for a class-conditional model: prompts then steer the
    /// frozen model through it.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// cpu (default), vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Dequantize a pack's q8/q4 matrices to f32 at load instead of keeping them packed in
    /// memory (the default, on every device; for comparisons).
    #[arg(long)]
    pub dequantize: bool,
}

impl ModelArgs {
    /// Loads the pipeline (and its text encoder and adapter) and prints what it loaded.
    pub fn load(&self) -> Result<(Pipeline, Device)> {
        let kind: BackendKind = self.device.parse()?;
        let device = init_device(kind)?;
        let t0 = Instant::now();
        let mut pipe = if let Some(p) = &self.pack {
            if self.vae.is_some() {
                bail!("--pack already holds the VQ-VAE; do not pass --vae");
            }
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let loaded = if nextscale::pack::Pack::is_pack(&bytes) {
                let mut pack = nextscale::pack::Pack::from_bytes(bytes)
                    .with_context(|| format!("loading {}", p.display()))?;
                if self.dequantize {
                    pack.keep_packed(false);
                }
                Pipeline::from_pack(pack, &device)
            } else {
                Pipeline::from_bytes(bytes, &device)
            };
            loaded.with_context(|| format!("loading {}", p.display()))?
        } else {
            let var = self.var.as_ref().expect("clap requires --var or --pack");
            let var_ck = crate::run::open_model(var, "var")?;
            let vae_ck = match &self.vae {
                Some(p) => Some(crate::run::open_model(p, "vae")?),
                None => None,
            };
            Pipeline::from_checkpoints(var_ck, vae_ck, &device)?
        };
        if let Some(p) = &self.adapter {
            let mut ck = Checkpoint::open(p).with_context(|| format!("reading {}", p.display()))?;
            let acfg = crate::cmd::train_adapter::adapter_config(&ck)?;
            let adapter = nextscale::var::adapter::TextAdapter::load(&mut ck, &acfg, &device)?;
            ck.finish()?;
            pipe = pipe.with_adapter(adapter)?;
        }
        if let Some(dir) = &self.text_encoder {
            let text = nextscale::text::TextEncoder::open(dir, &device)
                .with_context(|| format!("loading the text encoder {}", dir.display()))?;
            pipe = pipe.with_text_encoder(text)?;
        }
        let c = pipe.var_config();
        eprintln!(
            "loaded VAR d{} (width {}, {} heads, {} classes, {} scales) and {} in {:.2} s on {kind}",
            c.depth,
            c.embed_dim,
            c.num_heads,
            c.num_classes,
            c.patch_nums.num_scales(),
            if pipe.can_decode() {
                "the VQ-VAE"
            } else {
                "the VQ-VAE quantizer (tokens only)"
            },
            t0.elapsed().as_secs_f64()
        );
        Ok((pipe, device))
    }
}

/// What `sample` and `edit` generate, how, and where it goes.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub cond: ConditionArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// What to generate for: classes or prompts, and how many images of each.
#[derive(Args, Debug)]
pub struct ConditionArgs {
    /// Class id(s), comma-separated; the null class (e.g. 1000) samples unconditionally.
    /// With neither --class nor --prompt: `sample` uses the pack's recommended prompt or
    /// class; `edit` the null condition (unconditional in-/out-painting).
    #[arg(long, value_delimiter = ',', conflicts_with = "prompt")]
    pub class: Vec<usize>,
    /// A prompt, for text-conditioned models or models with a text adapter (repeat for
    /// several). The text encoder comes from the pack or --text-encoder.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Images per class or prompt (at most 10,000 in all).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
}

/// Most images one command makes (each is held in memory until written).
pub const MAX_IMAGES: usize = 10_000;

impl ConditionArgs {
    /// One condition per image (each class or prompt `n` times); `fallback` when neither is given.
    pub fn conditions(&self, fallback: Option<Condition>) -> Result<Vec<Condition>> {
        if self.n == 0 {
            bail!("--n must be at least 1");
        }
        let base: Vec<Condition> = if !self.class.is_empty() {
            Condition::classes(&self.class)
        } else if !self.prompt.is_empty() {
            Condition::prompts(&self.prompt)
        } else {
            match fallback {
                Some(c) => vec![c],
                None => bail!("give --class or --prompt (this model recommends neither)"),
            }
        };
        let total = base.len().checked_mul(self.n).filter(|&t| t <= MAX_IMAGES);
        let Some(_) = total else {
            bail!(
                "{} condition(s) × --n {} is more than the limit of {MAX_IMAGES} images per command",
                base.len(),
                self.n
            );
        };
        Ok(base
            .into_iter()
            .flat_map(|c| std::iter::repeat_n(c, self.n))
            .collect())
    }
}

/// Sampling settings; unset ones take the model's recommended settings.
#[derive(Args, Debug)]
pub struct SamplingArgs {
    /// Guidance strength at the last scale. Default: the pack's recommended setting, else 4.
    #[arg(long)]
    pub cfg: Option<f32>,
    /// Top-k filter (0 = off, 1 = greedy). Default: the pack's, else 900.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p (nucleus) filter (0 = off). Default: the pack's, else 0.96.
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gumbel-softmax smoothing of the code lookup.
    #[arg(long)]
    pub more_smooth: bool,
}

impl SamplingArgs {
    pub fn options(&self, pipe: &Pipeline) -> SampleOptions {
        let d = pipe.default_options();
        let opts = SampleOptions {
            cfg: self.cfg.unwrap_or(d.cfg),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            seed: self.seed,
            more_smooth: self.more_smooth,
        };
        if pipe.recommended().is_some() {
            eprintln!(
                "sampling with cfg {} top-k {} top-p {} (unset options take the pack's recommended settings)",
                opts.cfg, opts.top_k, opts.top_p
            );
        }
        opts
    }
}

/// Where results go.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Write all images as one grid PNG.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one PNG per image into this folder.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Write the tokens as JSON: one array of token ids per image (scales in order, row-major).
    #[arg(long)]
    pub tokens_out: Option<PathBuf>,
    /// Columns of the --out grid (default: a square-ish grid; `--n` gives one row per class or prompt).
    #[arg(long)]
    pub cols: Option<usize>,
}

impl OutputArgs {
    pub fn check(&self, pipe: &Pipeline) -> Result<()> {
        if (self.out.is_some() || self.out_dir.is_some()) && !pipe.can_decode() {
            bail!("--out/--out-dir need a full VQ-VAE (--vae); this one holds only the quantizer");
        }
        if self.out.is_none() && self.out_dir.is_none() && self.tokens_out.is_none() {
            bail!("nothing to write: give --out, --out-dir or --tokens-out");
        }
        Ok(())
    }

    /// Writes the tokens, the grid and the single images (named by `name(i)`); `extra`
    /// images go first in the grid (e.g. an edit's source).
    pub fn write(
        &self,
        pipe: &Pipeline,
        g: &Generated,
        extra: &[RgbImage],
        name: impl Fn(usize) -> String,
    ) -> Result<()> {
        if let Some(p) = &self.tokens_out {
            let json = serde_json::to_string(&g.tokens)?;
            std::fs::write(p, json + "\n").with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote tokens to {}", p.display());
        }
        if self.out.is_none() && self.out_dir.is_none() {
            return Ok(());
        }
        let t2 = Instant::now();
        let images = block_on(pipe.decode(g))?;
        eprintln!("decoded in {:.3} s", t2.elapsed().as_secs_f64());
        if let Some(p) = &self.out {
            let all: Vec<RgbImage> = extra.iter().chain(&images).cloned().collect();
            let cols = self
                .cols
                .unwrap_or_else(|| (all.len() as f64).sqrt().ceil() as usize);
            save_png(&grid(&all, cols), p)?;
            eprintln!("wrote {}", p.display());
        }
        if let Some(dir) = &self.out_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (i, im) in images.iter().enumerate() {
                save_png(im, &dir.join(name(i)))?;
            }
            eprintln!("wrote {} PNGs to {}", images.len(), dir.display());
        }
        Ok(())
    }
}

/// Prints one line per scale.
pub fn progress() -> OnScale<impl FnMut(&ScaleEvent<'_>) -> nextscale::Result<()>> {
    let mut last = Instant::now();
    OnScale(move |e: &ScaleEvent<'_>| {
        eprintln!(
            "  scale {:>2}/{} ({:>2}×{:<2}) {:>7.3} s",
            e.scale + 1,
            e.num_scales,
            e.patch,
            e.patch,
            last.elapsed().as_secs_f64()
        );
        last = Instant::now();
        Ok(())
    })
}

pub fn save_png(im: &RgbImage, path: &std::path::Path) -> Result<()> {
    image::save_buffer(
        path,
        &im.data,
        im.width as u32,
        im.height as u32,
        image::ColorType::Rgb8,
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// What the trainers of a frozen class-conditional VAR take (`train-adapter`, `train-lora`):
/// the VAR, the tokens it learns from, and their VQ-VAE.
#[derive(Args, Debug)]
pub struct FrozenVarArgs {
    /// The frozen class-conditional VAR: a train-var `var.safetensors`, an official `.pth`,
    /// or a pack (its VAR).
    #[arg(long)]
    pub var: PathBuf,
    /// Token shards (`prepare`) of the images to learn: captioned for `train-adapter`,
    /// labelled for `train-lora`.
    #[arg(long)]
    pub tokens: PathBuf,
    /// The VQ-VAE the tokens came from (a checkpoint or a pack).
    #[arg(long)]
    pub vae: PathBuf,
}

/// [`FrozenVarArgs`] opened: the tokens, their VQ-VAE, the VAR's weights and its inferred
/// configuration, checked to fit each other and to have a class table.
pub struct FrozenVar {
    pub tokens: TokenSet,
    pub vae: VqVae,
    pub var: Checkpoint,
    pub var_config: VarConfig,
}

impl FrozenVarArgs {
    pub fn open(&self, device: &Device) -> Result<FrozenVar> {
        let tokens = TokenSet::open(&self.tokens)?;
        let (vae, vae_config) =
            crate::tokens::load_vae(&self.vae, Some(tokens.patch_nums.clone()), device)?;
        let var = crate::run::open_model(&self.var, "var")?;
        let var_config = infer_config(&var, Some(vae_config.patch_nums.clone()))?;
        let name = self.var.display();
        if var_config.vocab_size != vae_config.vocab_size
            || var_config.cvae != vae_config.z_channels
        {
            bail!("{name} does not fit this VQ-VAE (vocabulary or latent width differ)");
        }
        if var_config.num_classes == 0 || var_config.text_dim > 0 {
            bail!("{name} is not class-conditional: it has no class table to build on");
        }
        Ok(FrozenVar {
            tokens,
            vae,
            var,
            var_config,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct CommonTrainArgs {
    /// Output run folder (created; rerunning the same command resumes from its last checkpoint).
    #[arg(long)]
    pub out: PathBuf,
    /// A named preset (tiny, small64, …); default `tiny`.
    #[arg(long)]
    pub preset: Option<String>,
    /// A TOML configuration file instead of a preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a setting, e.g. `--set train.lr=1e-3 --set model.ch=64`.
    #[arg(long = "set", value_parser = parse_kv)]
    pub set: Vec<(String, String)>,
    /// Total optimizer steps (overrides train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// cpu, vulkan or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Stop after this step even if `steps` is larger (the run stays resumable).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Only validate the model the run would start from (the run's newest checkpoint, else
    /// `--init` or the frozen model) and print the figures as JSON: the run folder is only
    /// read (it need not exist, and a run training in it goes on); nothing is trained.
    #[arg(long, conflicts_with = "stop_after")]
    pub validate_only: bool,
}

impl CommonTrainArgs {
    /// Where the run stops.
    pub fn until(&self) -> crate::train_loop::Until {
        crate::train_loop::Until {
            stop_after: self.stop_after,
            validate_only: self.validate_only,
        }
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}`: expected key=value"))
}

impl CommonTrainArgs {
    /// Resolves the configuration table with the overrides applied.
    pub fn table(&self, kind: &str) -> Result<toml::Table> {
        let mut set = self.set.clone();
        if let Some(s) = self.steps {
            set.push(("train.steps".into(), s.to_string()));
        }
        if let Some(b) = self.batch_size {
            set.push(("train.batch_size".into(), b.to_string()));
        }
        trainconf::resolve(self.config.as_deref(), self.preset.as_deref(), kind, &set)
    }

    /// The run's configuration (`[model]` as `M`, `[train]` checked), its TOML text (the run
    /// folder records it), and the plain and autodiff devices.
    pub fn resolve<M: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<RunSetup<M>> {
        #[derive(serde::Deserialize)]
        struct File<M> {
            model: M,
            train: trainconf::TrainConfig,
        }
        let text = toml::to_string(&self.table(kind)?)?;
        let file: File<M> =
            toml::from_str(&text).with_context(|| format!("the {kind} configuration"))?;
        trainconf::validate(&file.train, kind)?;
        let backend: BackendKind = self.device.parse()?;
        let plain = init_device(backend)?;
        let autodiff = plain.clone().autodiff();
        Ok(RunSetup {
            model: file.model,
            train: file.train,
            text,
            plain,
            autodiff,
        })
    }
}

/// What [`CommonTrainArgs::resolve`] gives a training command.
pub struct RunSetup<M> {
    pub model: M,
    pub train: trainconf::TrainConfig,
    pub text: String,
    pub plain: Device,
    pub autodiff: Device,
}
