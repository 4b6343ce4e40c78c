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

/// `y = x W + b` with `W` stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
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
        let mut wt = vec![0f32; w.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                wt[i * d_out + o] = w[o * d_in + i];
            }
        }
        let weight = Param::from_tensor(tensor(wt, [d_in, d_out], device));
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
        Ok(Self { weight, bias })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
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
