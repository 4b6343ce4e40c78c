//! Reading tensors back to the host. Always asynchronous underneath (the only way that works
//! in a browser); native code can block on it with [`block_on`].

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};

/// Reads a float tensor as `f32` values (row-major).
pub async fn read_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// Reads an integer tensor as `i64` values (row-major).
pub async fn read_i64<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    data.convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|e| Error::Readback(format!("{e:?}")))
}

/// Runs a future to completion on the current thread (native only).
#[cfg(not(target_arch = "wasm32"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
