//! Thin layers over burn's functional ops, holding parameters under their official names.
//! Weights are stored the way the ops want them: `Linear` keeps `[in, out]` (the PyTorch
//! `[out, in]` matrix is transposed once, at load), convs keep `[out, in, kh, kw]`.

use burn::module::{Module, Param};
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::params::{Init, ParamSource};

/// Uploads host values as a tensor of rank `D`.
pub fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub(crate) fn param<const D: usize>(
    src: &mut dyn ParamSource,
    key: &str,
    shape: [usize; D],
    init: Init,
    device: &Device,
) -> Result<Param<Tensor<D>>> {
    let data = src.get(key, &shape, init)?;
    Ok(Param::from_tensor(tensor(data, shape, device)))
}

/// `[rows, cols]` row-major → `[cols, rows]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// `y = x W + b` with `W` stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// A low-rank update applied unmerged (LoRA), if attached.
    pub lora: Option<LoraPair>,
}

/// A LoRA update of a [`Linear`]: `y += scale · (x A) B`, with `A` `[in, r]` and `B`
/// `[r, out]` (PyTorch/PEFT: `lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`), and
/// `scale = alpha / r`.
#[derive(Module, Debug)]
pub struct LoraPair {
    pub lora_a: Param<Tensor<2>>,
    pub lora_b: Param<Tensor<2>>,
    pub scale: f32,
}

impl LoraPair {
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = linear(x, self.lora_a.val(), None);
        linear(h, self.lora_b.val(), None) * self.scale as f64
    }

    /// `scale · A B`, `[in, out]`: what merging adds to the weight.
    pub fn delta(&self) -> Tensor<2> {
        self.lora_a.val().matmul(self.lora_b.val()) * self.scale as f64
    }
}

impl Linear {
    /// Loads `{prefix}.weight` (PyTorch `[out, in]`) and, if `bias`, `{prefix}.bias`.
    pub fn load(
        src: &mut dyn ParamSource,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        weight_init: Init,
        device: &Device,
    ) -> Result<Self> {
        let w = src.get(&format!("{prefix}.weight"), &[d_out, d_in], weight_init)?;
        let weight = Param::from_tensor(tensor(transpose(&w, d_out, d_in), [d_in, d_out], device));
        let bias = if bias {
            Some(param(
                src,
                &format!("{prefix}.bias"),
                [d_out],
                Init::Zeros,
                device,
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.forward_with_bias(x.clone(), self.bias.as_ref().map(|b| b.val()))
    }

    /// `x W + bias` (+ the LoRA update), with a bias given by the caller (attention's
    /// `cat(q_bias, 0, v_bias)`).
    pub fn forward_with_bias<const D: usize>(
        &self,
        x: Tensor<D>,
        bias: Option<Tensor<1>>,
    ) -> Tensor<D> {
        let y = linear(x.clone(), self.weight.val(), bias);
        match &self.lora {
            Some(l) => y + l.forward(x),
            None => y,
        }
    }

    /// Attaches a LoRA update: `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]` under
    /// `{prefix}.`; fresh ones start with `A` Kaiming-uniform-like and `B` zero, so the layer
    /// is unchanged until trained.
    pub fn attach_lora(
        &mut self,
        src: &mut dyn ParamSource,
        prefix: &str,
        rank: usize,
        scale: f32,
        device: &Device,
    ) -> Result<()> {
        let [d_in, d_out] = self.weight.val().dims();
        let bound = (1.0 / d_in as f64).sqrt() as f32;
        let a = src.get(
            &format!("{prefix}.lora_A.weight"),
            &[rank, d_in],
            Init::Uniform(bound),
        )?;
        let b = src.get(
            &format!("{prefix}.lora_B.weight"),
            &[d_out, rank],
            Init::Zeros,
        )?;
        self.lora = Some(LoraPair {
            lora_a: Param::from_tensor(tensor(transpose(&a, rank, d_in), [d_in, rank], device)),
            lora_b: Param::from_tensor(tensor(transpose(&b, d_out, rank), [rank, d_out], device)),
            scale,
        });
        Ok(())
    }

    /// Folds an attached LoRA update into the weight (`W += scale · A B`) and drops it.
    pub fn merge_lora(self) -> Self {
        match self.lora {
            None => self,
            Some(l) => Self {
                weight: Param::from_tensor(self.weight.val() + l.delta()),
                bias: self.bias,
                lora: None,
            },
        }
    }

    pub fn d_out(&self) -> usize {
        self.weight.val().dims()[1]
    }
}

/// A 2-D convolution with square kernel, stride and symmetric padding, and a bias.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        src: &mut dyn ParamSource,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Result<Self> {
        // PyTorch's default conv init: kaiming-uniform(a=√5) → U(±1/√fan_in), bias likewise.
        let bound = 1.0 / ((c_in * kernel * kernel) as f32).sqrt();
        Ok(Self {
            weight: param(
                src,
                &format!("{prefix}.weight"),
                [c_out, c_in, kernel, kernel],
                Init::Uniform(bound),
                device,
            )?,
            bias: param(
                src,
                &format!("{prefix}.bias"),
                [c_out],
                Init::Uniform(bound),
                device,
            )?,
            stride,
            padding,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvOptions::new(
                [self.stride, self.stride],
                [self.padding, self.padding],
                [1, 1],
                1,
            ),
        )
    }
}

/// GroupNorm with affine parameters (`weight`, `bias` as in PyTorch), biased variance.
#[derive(Module, Debug)]
pub struct GroupNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub groups: usize,
    pub eps: f64,
}

impl GroupNorm {
    pub fn load(
        src: &mut dyn ParamSource,
        prefix: &str,
        channels: usize,
        groups: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param(
                src,
                &format!("{prefix}.weight"),
                [channels],
                Init::Ones,
                device,
            )?,
            bias: param(
                src,
                &format!("{prefix}.bias"),
                [channels],
                Init::Zeros,
                device,
            )?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let g = self.groups;
        let xg = x.reshape([b, g, (c / g) * h * w]);
        let (var, mean) = xg.clone().var_mean_bias(2);
        let xn = (xg - mean) / (var + self.eps).sqrt();
        let xn = xn.reshape([b, c, h, w]);
        xn * self.weight.val().reshape([1, c, 1, 1]) + self.bias.val().reshape([1, c, 1, 1])
    }
}

/// LayerNorm over the last axis without affine parameters (VAR's `ln_wo_grad`).
pub fn layer_norm_plain<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + eps).sqrt()
}

/// GELU with the tanh approximation, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`, evaluated in
/// the equivalent form `x / (1 + exp(−2√(2/π)(x + 0.044715x³)))` (since ½(1 + tanh z) =
/// 1/(1 + e^(−2z))): the same function, and several times faster where `tanh` is not
/// vectorised (burn's CPU backend).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const K: f64 = -2.0 * 0.797_884_560_802_865_4; // −2·√(2/π)
    let z = (x.clone() + x.clone() * x.clone() * x.clone() * 0.044715) * K;
    x / (z.exp() + 1.0)
}

/// `x / max(‖x‖₂, 1e-12)` over the last axis (PyTorch's `F.normalize`).
pub fn l2_normalize<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let n = x
        .clone()
        .powi_scalar(2)
        .sum_dim(D - 1)
        .sqrt()
        .clamp_min(1e-12);
    x / n
}

/// `x * sigmoid(x)`.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(x)
}

/// LayerNorm over the last axis with affine `weight`/`bias` (PyTorch `nn.LayerNorm`).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(
        src: &mut dyn ParamSource,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: param(src, &format!("{prefix}.weight"), [dim], Init::Ones, device)?,
            bias: param(src, &format!("{prefix}.bias"), [dim], Init::Zeros, device)?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut shape = [1usize; D];
        shape[D - 1] = self.weight.val().dims()[0];
        layer_norm_plain(x, self.eps) * self.weight.val().reshape(shape)
            + self.bias.val().reshape(shape)
    }
}
