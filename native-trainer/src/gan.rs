//! The patch discriminator of VQGAN-style training (PatchGAN: 4×4 convs, stride 2 then 1,
//! GroupNorm, LeakyReLU 0.2) and the hinge losses.

use burn::module::Module;
use burn::tensor::activation::{leaky_relu, relu};
use burn::tensor::{Device, Tensor};
use nextscale::nn::{Conv2d, GroupNorm};
use nextscale::params::{ParamSource, Scope};

#[derive(Module, Debug)]
pub struct Discriminator {
    pub convs: Vec<Conv2d>,
    pub norms: Vec<GroupNorm>,
}

impl Discriminator {
    /// `ch` base channels, three down/feature layers, one logit per patch.
    pub fn new(src: &mut dyn ParamSource, ch: usize, device: &Device) -> nextscale::Result<Self> {
        let spec = [
            (3, ch, 2),
            (ch, 2 * ch, 2),
            (2 * ch, 4 * ch, 1),
            (4 * ch, 1, 1),
        ];
        let mut s = Scope::new(src, device);
        let convs = Conv2d::load_stack(&mut s, "convs", &spec, 4)?;
        // A norm after each inner conv: none after the first (as VQGAN) or the logit layer.
        let norms = spec[1..spec.len() - 1]
            .iter()
            .enumerate()
            .map(|(i, &(_, co, _))| GroupNorm::load(&mut s.pp(format!("norms.{i}")), co, 32, 1e-6))
            .collect::<nextscale::Result<Vec<_>>>()?;
        Ok(Self { convs, norms })
    }

    /// Patch logits `[B, 1, h, w]` for images in [−1, 1].
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let last = self.convs.len() - 1;
        let mut h = x;
        for (i, c) in self.convs.iter().enumerate() {
            h = c.forward(h);
            if i > 0 && i < last {
                h = self.norms[i - 1].forward(h);
            }
            if i < last {
                h = leaky_relu(h, 0.2);
            }
        }
        h
    }
}

/// `mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))`.
pub fn d_hinge(real: Tensor<4>, fake: Tensor<4>) -> Tensor<1> {
    relu(real.neg() + 1.0).mean() + relu(fake + 1.0).mean()
}

/// The generator's hinge loss `−mean(D(fake))`.
pub fn g_hinge(fake: Tensor<4>) -> Tensor<1> {
    fake.mean().neg()
}
