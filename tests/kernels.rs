//! The fused CPU kernels (`nextscale::kernels`) against burn's own ops written out: values on
//! the plain CPU backend and, under autodiff, gradients.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use nextscale::kernels::{self, rows};

fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a = a.into_data().try_to_vec::<f32>().unwrap();
    let b = b.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            if x == y {
                0.0 // equal infinities too
            } else {
                (x - y).abs()
            }
        })
        .fold(0.0, f32::max)
}

/// A block-causal additive mask `[1, 1, l, l]` over scales of the given sizes.
fn block_causal(sizes: &[usize], dev: &Device) -> Tensor<4> {
    let lvl: Vec<usize> = sizes
        .iter()
        .enumerate()
        .flat_map(|(i, &n)| std::iter::repeat_n(i, n))
        .collect();
    let l = lvl.len();
    let mut m = vec![0f32; l * l];
    for i in 0..l {
        for j in 0..l {
            if lvl[j] > lvl[i] {
                m[i * l + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [1, 1, l, l]), dev)
}

#[test]
fn exp_is_within_a_few_ulp_of_libm() {
    let mut worst = 0f32;
    for i in 0..=400_000 {
        let x = -87.0 + 175.0 * i as f32 / 400_000.0;
        let (a, b) = (rows::exp(x), x.exp());
        worst = worst.max(((a - b) / b).abs());
    }
    assert!(worst < 5e-7, "relative error {worst}");
    assert_eq!(rows::exp(0.0), 1.0);
    assert_eq!(rows::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(rows::exp(-100.0), 0.0);
    assert_eq!(rows::exp(100.0), f32::INFINITY);
    assert!(rows::exp(f32::NAN).is_nan());
}

#[test]
fn masked_softmax_matches_burn() {
    let dev = Device::flex();
    // 37 tokens (rows not a multiple of the vector width), scales 1, 4, 9, 16, … like VAR's.
    let bias = block_causal(&[1, 4, 9, 23], &dev);
    let x = Tensor::<4>::random([2, 3, 37, 37], Distribution::Normal(0.0, 3.0), &dev);
    let got = kernels::masked_softmax(x.clone(), Some(bias.clone()));
    let want = softmax(x.clone() + bias, 3);
    assert!(max_abs_diff(got, want) < 1e-6);
    // Without a mask, and with fewer queries than keys (KV-cached inference).
    let x = Tensor::<4>::random([2, 2, 9, 50], Distribution::Normal(0.0, 3.0), &dev);
    let got = kernels::masked_softmax(x.clone(), None);
    assert!(max_abs_diff(got, softmax(x, 3)) < 1e-6);
}

#[test]
fn log_softmax_gelu_and_silu_match_burn() {
    let dev = Device::flex();
    let x = Tensor::<3>::random([3, 5, 515], Distribution::Normal(0.0, 4.0), &dev);
    let d = max_abs_diff(kernels::log_softmax(x.clone()), log_softmax(x, 2));
    assert!(d < 2e-5, "log_softmax {d}");
    let x = Tensor::<2>::random([7, 333], Distribution::Normal(0.0, 3.0), &dev);
    let d = max_abs_diff(kernels::gelu_tanh(x.clone()), gelu_reference(x.clone()));
    assert!(d < 2e-6, "gelu {d}");
    let d = max_abs_diff(kernels::silu(x.clone()), burn::tensor::activation::silu(x));
    assert!(d < 2e-6, "silu {d}");
}

/// PyTorch's `gelu(approximate='tanh')` as written in its documentation.
fn gelu_reference<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * c;
    x * 0.5 * (inner.tanh() + 1.0)
}

#[cfg(feature = "autodiff")]
mod gradients {
    use super::*;

    /// `∂/∂x Σ f(x) ⊙ w` for a fixed random `w`, through the kernel and through the reference.
    fn grads<const D: usize>(
        x: Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<D>,
        reference: impl Fn(Tensor<D>) -> Tensor<D>,
    ) -> (Tensor<D>, Tensor<D>, f32) {
        let w = Tensor::<D>::random(x.shape(), Distribution::Normal(0.0, 1.0), &x.device());
        let run = |g: &dyn Fn(Tensor<D>) -> Tensor<D>| {
            let xa = x.clone().require_grad();
            let y = g(xa.clone());
            let loss = (y.clone() * w.clone()).sum();
            let grads = loss.backward();
            (y.inner(), xa.grad(&grads).unwrap())
        };
        let (y1, g1) = run(&f);
        let (y2, g2) = run(&reference);
        (g1, g2, max_abs_diff(y1, y2))
    }

    #[test]
    fn masked_softmax_gradient_matches_burn() {
        let dev = Device::flex().autodiff();
        let bias = block_causal(&[1, 4, 9, 23], &dev);
        let x = Tensor::<4>::random([2, 3, 37, 37], Distribution::Normal(0.0, 3.0), &dev);
        let b2 = bias.clone();
        let (g1, g2, dy) = grads(
            x,
            move |x| kernels::masked_softmax(x, Some(bias.clone())),
            move |x| softmax(x + b2.clone(), 3),
        );
        assert!(dy < 1e-6, "values {dy}");
        let d = max_abs_diff(g1, g2);
        assert!(d < 1e-5, "gradient {d}");
    }

    #[test]
    fn log_softmax_gradient_matches_burn() {
        let dev = Device::flex().autodiff();
        let x = Tensor::<3>::random([3, 5, 515], Distribution::Normal(0.0, 4.0), &dev);
        let (g1, g2, dy) = grads(x, kernels::log_softmax, |x| log_softmax(x, 2));
        assert!(dy < 2e-5, "values {dy}");
        // Each gradient subtracts p·Σg, a sum of 515 terms of size ~1, taken in another order.
        let d = max_abs_diff(g1, g2);
        assert!(d < 5e-5, "gradient {d}");
    }

    #[test]
    fn gelu_and_silu_gradients_match_burn() {
        let dev = Device::flex().autodiff();
        let x = Tensor::<2>::random([7, 333], Distribution::Normal(0.0, 3.0), &dev);
        let (g1, g2, dy) = grads(x.clone(), kernels::gelu_tanh, gelu_reference);
        assert!(dy < 2e-6, "values {dy}");
        let d = max_abs_diff(g1, g2);
        assert!(d < 1e-5, "gradient {d}");
        let (g1, g2, dy) = grads(x, kernels::silu, burn::tensor::activation::silu);
        assert!(dy < 2e-6, "silu values {dy}");
        let d = max_abs_diff(g1, g2);
        assert!(d < 1e-5, "silu gradient {d}");
    }
}
