//! One module per command.

pub mod bench;
pub mod collect;
pub mod envs;
pub mod eval;
pub mod grid;
pub mod play;
pub mod report;
pub mod schedule;
pub mod sft;
pub mod tokenizer;
pub mod train;
