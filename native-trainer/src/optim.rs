//! AdamW as PyTorch computes it (decoupled weight decay, bias-corrected moments), with the
//! official VAR parameter groups (no decay for 1-D tensors, biases, positional/level
//! embeddings, gains and `scale_mul`), global gradient-norm clipping (`clip_grad_norm_`) and
//! the official learning-rate schedule (linear warm-up from 0.5 %, then `lin0`).
//!
//! State is keyed by official parameter names, so it is saved next to the weights and
//! restored exactly on resume.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};
use nextscale::state_dict::{Entry, OfficialPath, Values};

/// Names that never get weight decay (the official `no_wd` list, matched on the official key).
const NO_DECAY: [&str; 14] = [
    "cls_token",
    "start_token",
    "task_token",
    "cfg_uncond",
    "pos_embed",
    "pos_1LC",
    "pos_start",
    "start_pos",
    "lvl_embed",
    "gamma",
    "beta",
    "ada_gss",
    "moe_bias",
    "scale_mul",
];

/// Whether the parameter `key` of rank `rank` is decayed.
pub fn decays(key: &str, rank: usize) -> bool {
    !(rank <= 1 || key.ends_with("bias") || NO_DECAY.iter().any(|n| key.contains(n)))
}

#[derive(Clone, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm limit; `None` or ≤ 0 disables clipping.
    pub grad_clip: Option<f64>,
}

/// Per-parameter moments (flattened) and the step count.
pub struct AdamW {
    pub cfg: AdamWConfig,
    pub step: u64,
    state: HashMap<String, (Tensor<1>, Tensor<1>)>,
}

/// What one optimizer step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Parameters that received a gradient (frozen ones do not).
    pub updated: usize,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            step: 0,
            state: HashMap::new(),
        }
    }

    /// Applies one update to every parameter of `module` that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, module: M, grads: &mut Gradients, lr: f64) -> (M, StepStats) {
        // Pass 1: the global norm over all gradients.
        struct Norm<'a> {
            grads: &'a Gradients,
            sum: Option<Tensor<1>>,
        }
        impl ModuleVisitor for Norm<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = param.val().grad(self.grads) {
                    let s = g.powi_scalar(2).sum();
                    self.sum = Some(match self.sum.take() {
                        Some(a) => a + s,
                        None => s,
                    });
                }
            }
        }
        let mut norm = Norm { grads, sum: None };
        module.visit(&mut norm);
        let grad_norm = match norm.sum {
            Some(s) => (s.into_scalar::<f32>() as f64).sqrt(),
            None => 0.0,
        };
        let clip_scale = match self.cfg.grad_clip {
            Some(c) if c > 0.0 && grad_norm > c => c / (grad_norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let t = self.step as i32;
        let mut mapper = Update {
            opt: self,
            grads,
            lr,
            bc1: 1.0,
            bc2: 1.0,
            clip_scale,
            path: OfficialPath::default(),
            updated: 0,
        };
        mapper.bc1 = 1.0 - mapper.opt.cfg.beta1.powi(t);
        mapper.bc2 = 1.0 - mapper.opt.cfg.beta2.powi(t);
        let module = module.map(&mut mapper);
        let updated = mapper.updated;
        (module, StepStats { grad_norm, updated })
    }

    /// Moments as state-dict entries `<prefix>.m.<key>` / `<prefix>.v.<key>` plus the step count.
    pub fn state_entries(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut keys: Vec<&String> = self.state.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(2 * keys.len() + 1);
        for k in keys {
            let (m, v) = &self.state[k];
            for (tag, t) in [("m", m), ("v", v)] {
                let data = t
                    .to_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("reading optimizer state: {e:?}"))?;
                out.push(Entry::f32(
                    format!("{prefix}.{tag}.{k}"),
                    vec![data.len()],
                    data,
                ));
            }
        }
        out.push(Entry {
            name: format!("{prefix}.step"),
            shape: vec![1],
            values: Values::I64(vec![self.step as i64]),
        });
        Ok(out)
    }

    /// Restores moments written by [`Self::state_entries`].
    pub fn load_state(
        &mut self,
        ck: &nextscale::Checkpoint,
        prefix: &str,
        device: &burn::tensor::Device,
    ) -> Result<()> {
        let (_, step) = ck
            .read_i64(&format!("{prefix}.step"))
            .context("optimizer step")?;
        self.step = *step.first().context("empty opt.step")? as u64;
        self.state.clear();
        let mp = format!("{prefix}.m.");
        for key in ck.keys().filter_map(|k| k.strip_prefix(mp.as_str())) {
            let m = ck.read_f32(&format!("{prefix}.m.{key}"))?;
            let v = ck
                .read_f32(&format!("{prefix}.v.{key}"))
                .with_context(|| format!("optimizer state for {key} has m but no v"))?;
            if m.data.len() != v.data.len() {
                bail!("optimizer state for {key}: m and v differ in size");
            }
            let n = m.data.len();
            let mk = Tensor::<1>::from_data(burn::tensor::TensorData::new(m.data, [n]), device);
            let vk = Tensor::<1>::from_data(burn::tensor::TensorData::new(v.data, [n]), device);
            self.state.insert(key.to_string(), (mk, vk));
        }
        Ok(())
    }
}

struct Update<'a> {
    opt: &'a mut AdamW,
    grads: &'a mut Gradients,
    lr: f64,
    bc1: f64,
    bc2: f64,
    clip_scale: f64,
    path: OfficialPath,
    updated: usize,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = tensor.grad_remove(self.grads) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let key = self.path.key();
        let cfg = &self.opt.cfg;
        let p: Tensor<1> = tensor.inner().reshape([n]);
        let g: Tensor<1> = grad.reshape([n]) * self.clip_scale;
        let (m, v) = match self.opt.state.remove(&key) {
            Some((m, v)) => (m, v),
            None => (g.zeros_like(), g.zeros_like()),
        };
        let m = m * cfg.beta1 + g.clone() * (1.0 - cfg.beta1);
        let v = v * cfg.beta2 + g.powi_scalar(2) * (1.0 - cfg.beta2);
        let p = if decays(&key, D) && cfg.weight_decay > 0.0 {
            p * (1.0 - self.lr * cfg.weight_decay)
        } else {
            p
        };
        let denom = (v.clone() / self.bc2).sqrt() + cfg.eps;
        let p = p - m.clone() / denom * (self.lr / self.bc1);
        self.opt.state.insert(key, (m, v));
        self.updated += 1;
        let mut updated = Tensor::from_inner(p.reshape(dims));
        if require_grad {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// The official learning-rate multiplier: linear warm-up from `wp0 = 0.005` over
/// `warmup` steps, then `lin0` (flat for 5 % of the rest, then linear down to `end`).
pub fn lr_multiplier(step: u64, warmup: u64, total: u64, end: f64) -> f64 {
    const WP0: f64 = 0.005;
    if step < warmup {
        return WP0 + (1.0 - WP0) * step as f64 / warmup as f64;
    }
    let rest = total.saturating_sub(1).saturating_sub(warmup).max(1) as f64;
    let pasd = ((step - warmup) as f64 / rest).min(1.0);
    if pasd < 0.05 {
        1.0
    } else {
        end + (1.0 - end) * (1.0 - pasd) / 0.95
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_groups_follow_the_official_rules() {
        assert!(decays("blocks.0.attn.mat_qkv.weight", 2));
        assert!(decays("class_emb.weight", 2));
        assert!(!decays("blocks.0.attn.q_bias", 1));
        assert!(!decays("blocks.0.attn.scale_mul_1H11", 4));
        assert!(!decays("pos_1LC", 3));
        assert!(!decays("lvl_embed.weight", 2));
        assert!(!decays("head.bias", 1));
        assert!(!decays("encoder.norm_out.weight", 1));
    }

    #[test]
    fn schedule_warms_up_holds_then_decays() {
        assert!((lr_multiplier(0, 10, 110, 0.1) - 0.005).abs() < 1e-12);
        assert!((lr_multiplier(10, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_multiplier(14, 10, 110, 0.1) - 1.0).abs() < 1e-12);
        assert!((lr_multiplier(109, 10, 110, 0.1) - 0.1).abs() < 1e-9);
        assert!(lr_multiplier(60, 10, 110, 0.1) < 1.0);
    }

    /// One step on a scalar function against AdamW computed by hand (PyTorch's formulas).
    #[test]
    fn adamw_matches_the_closed_form() {
        use burn::tensor::{Device, TensorData};
        #[derive(Module, Debug)]
        struct M {
            weight: Param<Tensor<2>>,
        }
        let dev = Device::flex().autodiff();
        let w0 = [0.5f32, -1.0, 2.0, 0.25];
        let m = M {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w0.to_vec(), [2, 2]),
                &dev,
            )),
        };
        let mut opt = AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
            grad_clip: None,
        });
        let mut m = m;
        let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
        let (mut mm, mut vv) = (vec![0f64; 4], vec![0f64; 4]);
        for t in 1..=3 {
            // loss = Σ w³ → grad 3w².
            let loss = m.weight.val().powi_scalar(3).sum();
            let mut grads = loss.backward();
            let lr = 0.1;
            m = opt.step(m, &mut grads, lr).0;
            for i in 0..4 {
                let g = 3.0 * w[i] * w[i];
                w[i] *= 1.0 - lr * 0.05;
                mm[i] = 0.9 * mm[i] + 0.1 * g;
                vv[i] = 0.95 * vv[i] + 0.05 * g * g;
                let bc1 = 1.0 - 0.9f64.powi(t);
                let bc2 = 1.0 - 0.95f64.powi(t);
                w[i] -= lr / bc1 * mm[i] / ((vv[i] / bc2).sqrt() + 1e-8);
            }
        }
        let got = m
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        for i in 0..4 {
            assert!(
                (got[i] as f64 - w[i]).abs() < 1e-5,
                "{i}: {} vs {}",
                got[i],
                w[i]
            );
        }
    }
}
