//! atod's models on burn: backends and devices, the chat tokenizer, the Qwen2/Qwen3/Llama-style transformer,
//! KV-cached generation, scoring and Hugging Face checkpoints (DESIGN.md §7).
//!
//! Architecture invariant: `B: Backend` generics live here, in atod-losses and in the trainer; the flex CPU
//! backend is the default and burn's CUDA backend is behind the `cuda` cargo feature.

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cpu;
mod error;
pub mod generate;
pub mod hotpath;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod policy;
pub mod tokenizer;

pub use backend::{compiled_backends, CpuAutodiff, CpuBackend, DeviceSpec};
#[cfg(feature = "cuda")]
pub use backend::{CudaAutodiff, CudaBackend};
pub use error::{Error, Result};
pub use generate::{
    generate, response_stats, response_vocab_stats, score, sequence_stats, Generation, ResponseStats, SamplingParams,
    Scored,
};
pub use hotpath::{token_logprobs, HotPathBackend, TokenStats};
pub use model::{KvCache, Layout, ModelType, Transformer, TransformerConfig};
pub use policy::LmPolicy;
pub use tokenizer::{ChatEncoding, ChatTokenizer};
