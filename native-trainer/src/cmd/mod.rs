//! One file per command, named as the command (`train-var` → `train_var.rs`); each has its
//! clap arguments and a `run`. What several commands share lives beside `cmd/`: `args.rs`
//! (option groups), `tokens.rs` (token shards), `train_loop.rs`, `var_task.rs` and `var_steps.rs`
//! (training), `data.rs`, `run.rs`, `classifier.rs`, …

pub mod average;
pub mod edit;
pub mod embed_text;
pub mod eval_vqvae;
pub mod evaluate;
pub mod export;
pub mod fixture;
pub mod prepare;
pub mod sample;
pub mod train_adapter;
pub mod train_classifier;
pub mod train_lora;
pub mod train_var;
pub mod train_vqvae;
