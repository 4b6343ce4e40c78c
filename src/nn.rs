//! Thin layers over burn's functional ops, holding parameters under their official names.
//! Weights are stored the way the ops want them: `Linear` keeps `[in, out]` (the PyTorch
//! `[out, in]` matrix is transposed once, at load), convs keep `[out, in, kh, kw]`.

use burn::module::{Module, Param};
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::kernels::Then;
use crate::params::{Init, Scope};
use crate::quant::{PackedMatrix, PackedWeight};

/// Uploads host values as a tensor of rank `D`.
pub fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
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

/// `y = x W + b` with `W` stored `[in, out]`, or kept in a pack's q8/q4 blocks (PyTorch's
/// `[out, in]`): dequantized inside the matmul on the CPU, per use on a GPU (see
/// [`crate::quant`]).
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`; `None` when the weight is kept packed.
    pub weight: Option<Param<Tensor<2>>>,
    #[module(skip)]
    pub packed: Option<PackedWeight>,
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
    /// Loads `weight` (PyTorch `[out, in]`) and, if `bias`, `bias`.
    pub fn load(
        s: &mut Scope,
        d_in: usize,
        d_out: usize,
        bias: bool,
        weight_init: Init,
    ) -> Result<Self> {
        let (weight, packed) = match s.get_packed("weight", &[d_out, d_in], weight_init)? {
            Some(p) => (None, Some(PackedWeight::new(p, s.device()))),
            None => {
                let w = s.get("weight", &[d_out, d_in], weight_init)?;
                let w = tensor(transpose(&w, d_out, d_in), [d_in, d_out], s.device());
                (Some(Param::from_tensor(w)), None)
            }
        };
        let bias = if bias {
            Some(s.param("bias", [d_out], Init::Zeros)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            packed,
            bias,
            lora: None,
        })
    }

    /// The weight `[in, out]` as a tensor (dequantized when kept packed).
    pub fn weight_val(&self, device: &Device) -> Tensor<2> {
        match (&self.weight, &self.packed) {
            (Some(w), _) => w.val(),
            (None, Some(p)) => p.to_tensor(device).transpose(),
            (None, None) => unreachable!("a Linear has a dense or a packed weight"),
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        match (&self.weight, &self.packed) {
            (Some(w), _) => w.val().dims()[0],
            (None, Some(p)) => p.cols(),
            (None, None) => 0,
        }
    }

    /// Output width.
    pub fn d_out(&self) -> usize {
        match (&self.weight, &self.packed) {
            (Some(w), _) => w.val().dims()[1],
            (None, Some(p)) => p.rows(),
            (None, None) => 0,
        }
    }

    /// Whether the weight is kept in its packed q8/q4 blocks.
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
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
        let y = match (&self.weight, &self.packed) {
            (Some(w), _) => crate::kernels::linear(x.clone(), w.val(), bias),
            (None, Some(PackedWeight::Host(p))) => packed_linear(p, x.clone(), bias),
            (None, Some(PackedWeight::Device(_))) => {
                linear(x.clone(), self.weight_val(&x.device()), bias)
            }
            (None, None) => unreachable!("a Linear has a dense or a packed weight"),
        };
        match &self.lora {
            Some(l) => y + l.forward(x),
            None => y,
        }
    }

    /// Attaches a LoRA update: `lora_A.weight` `[r, in]` and `lora_B.weight` `[out, r]` under
    /// this scope; fresh ones start with `A` Kaiming-uniform-like and `B` zero, so the layer
    /// is unchanged until trained.
    pub fn attach_lora(&mut self, s: &mut Scope, rank: usize, scale: f32) -> Result<()> {
        let (d_in, d_out) = (self.d_in(), self.d_out());
        let bound = (1.0 / d_in as f64).sqrt() as f32;
        let a = s.get("lora_A.weight", &[rank, d_in], Init::Uniform(bound))?;
        let b = s.get("lora_B.weight", &[d_out, rank], Init::Zeros)?;
        let device = s.device();
        self.lora = Some(LoraPair {
            lora_a: Param::from_tensor(tensor(transpose(&a, rank, d_in), [d_in, rank], device)),
            lora_b: Param::from_tensor(tensor(transpose(&b, d_out, rank), [rank, d_out], device)),
            scale,
        });
        Ok(())
    }

    /// Folds an attached LoRA update into the weight (`W += scale · A B`) and drops it; a
    /// packed weight becomes dense.
    pub fn merge_lora(self) -> Self {
        match &self.lora {
            None => self,
            Some(l) => {
                let device = l.lora_a.val().device();
                let w = self.weight_val(&device) + l.delta();
                Self {
                    weight: Some(Param::from_tensor(w)),
                    packed: None,
                    bias: self.bias,
                    lora: None,
                }
            }
        }
    }
}

/// `x Wᵀ + bias` over a packed weight, on the host (the CPU backend): the same operations as
/// burn's `linear` (rows folded, one matmul, then the bias), with the dequantizing matmul.
fn packed_linear<const D: usize>(
    p: &PackedMatrix,
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    let n = p.rows();
    debug_assert_eq!(k, p.cols());
    let device = x.device();
    let xs = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("reading a CPU tensor back cannot fail");
    let y = tensor(p.matmul_t(&xs, m), [m, n], &device);
    let y = match bias {
        Some(b) => y + b.reshape([1, n]),
        None => y,
    };
    let mut out = dims;
    out[D - 1] = n;
    y.reshape(out)
}

/// A 2-D convolution with square kernel, stride and symmetric padding, and a bias. The weight
/// `[out, in, k, k]` is dense, or kept in a pack's q8/q4 blocks and dequantized for each call
/// (the VQ-VAE runs each conv once per image, so only one conv's weight is ever f32).
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Option<Param<Tensor<4>>>,
    #[module(skip)]
    pub packed: Option<PackedWeight>,
    pub bias: Param<Tensor<1>>,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn load(
        s: &mut Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        // PyTorch's default conv init: kaiming-uniform(a=√5) → U(±1/√fan_in), bias likewise.
        let init = Init::Uniform(1.0 / ((c_in * kernel * kernel) as f32).sqrt());
        let shape = [c_out, c_in, kernel, kernel];
        let (weight, packed) = match s.get_packed("weight", &shape, init)? {
            Some(p) => (None, Some(PackedWeight::new(p, s.device()))),
            None => (Some(s.param("weight", shape, init)?), None),
        };
        Ok(Self {
            weight,
            packed,
            bias: s.param("bias", [c_out], init)?,
            kernel,
            stride,
            padding,
        })
    }

    /// A stack of `kernel`² convolutions with padding 1, `{name}.0`, `{name}.1`, …, one per
    /// `(in, out, stride)` of `spec`.
    pub fn load_stack(
        s: &mut Scope,
        name: &str,
        spec: &[(usize, usize, usize)],
        kernel: usize,
    ) -> Result<Vec<Self>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(ci, co, stride))| {
                Self::load(&mut s.pp(format!("{name}.{i}")), ci, co, kernel, stride, 1)
            })
            .collect()
    }

    /// The weight `[out, in, k, k]` (dequantized when kept packed).
    pub fn weight_val(&self) -> Tensor<4> {
        match (&self.weight, &self.packed) {
            (Some(w), _) => w.val(),
            (None, Some(p)) => {
                let k = self.kernel;
                let shape = [p.rows(), p.cols() / (k * k), k, k];
                p.to_tensor(&self.bias.val().device()).reshape(shape)
            }
            (None, None) => unreachable!("a Conv2d has a dense or a packed weight"),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::kernels::conv2d(
            x,
            self.weight_val(),
            Some(self.bias.val()),
            self.stride,
            self.padding,
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
    pub fn load(s: &mut Scope, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: s.param("weight", [channels], Init::Ones)?,
            bias: s.param("bias", [channels], Init::Zeros)?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, Then::Nothing)
    }

    /// `silu(self.forward(x))`, fused (the VQ-VAE's every norm is followed by SiLU).
    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, Then::Silu)
    }

    fn forward_then(&self, x: Tensor<4>, then: Then) -> Tensor<4> {
        let (w, b) = (self.weight.val(), self.bias.val());
        crate::kernels::group_norm(x, w, b, self.groups, self.eps, then)
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
    crate::kernels::gelu_tanh(x)
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
    crate::kernels::silu(x)
}

/// LayerNorm over the last axis with affine `weight`/`bias` (PyTorch `nn.LayerNorm`).
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(s: &mut Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: s.param("weight", [dim], Init::Ones)?,
            bias: s.param("bias", [dim], Init::Zeros)?,
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
