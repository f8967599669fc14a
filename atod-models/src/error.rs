//! The one error type of atod-models.

use std::path::PathBuf;

/// What can go wrong in atod-models.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A `--device` value that does not parse.
    #[error("invalid device `{given}`: expected `cpu`, `cuda` or `cuda:N`")]
    DeviceSyntax {
        /// What was given.
        given: String,
    },

    /// A CUDA device was asked of a binary built without the `cuda` feature.
    #[error("device `{given}` needs CUDA, but this atod was built without it; rebuild with `--features cuda`")]
    CudaNotCompiled {
        /// What was given.
        given: String,
    },

    /// A CUDA device that cannot be used (no driver, no such device).
    #[error("device `{given}` is unavailable (no usable CUDA driver or device here): {why}")]
    CudaUnavailable {
        /// What was given.
        given: String,
        /// The first line of the runtime's message.
        why: String,
    },

    /// A model preset name that does not exist.
    #[error("unknown model preset `{given}`; known presets: {known}")]
    UnknownPreset {
        /// What was given.
        given: String,
        /// The known presets, comma-separated.
        known: String,
    },

    /// A model config whose shapes do not fit together.
    #[error("invalid model config: {why}")]
    InvalidConfig {
        /// What is wrong.
        why: String,
    },

    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },

    /// A checkpoint file that does not parse or does not fit the model.
    #[error("checkpoint {path}: {why}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },

    /// Generation or scoring was given inputs it cannot use.
    #[error("{what}")]
    BadInput {
        /// What is wrong.
        what: String,
    },

    // The tokenizer. Causes from other crates are kept as their messages so that the enum stays `Clone + Eq`.
    /// A tokenizer file that cannot be read (missing, unreadable, not UTF-8).
    #[error("cannot read the tokenizer `{}`: {message}", path.display())]
    TokenizerRead {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },

    /// A tokenizer file that is not a Hugging Face `tokenizer.json`.
    #[error("`{}` is not a Hugging Face tokenizer.json: {message}", path.display())]
    TokenizerParse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },

    /// A tokenizer without the ChatML tokens the chat format needs.
    #[error(
        "the tokenizer `{}` lacks the chat special token{} {}: atod's chat format (Qwen2's ChatML) needs \
         `<|im_start|>` and `<|im_end|>`",
        path.display(),
        if missing.len() == 1 { "" } else { "s" },
        missing.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" and ")
    )]
    TokenizerMissingChatTokens {
        /// The file (or `<trained>` for a tokenizer built in memory).
        path: PathBuf,
        /// The missing tokens.
        missing: Vec<String>,
    },

    /// A tokenizer file that cannot be written.
    #[error("cannot write the tokenizer `{}`: {message}", path.display())]
    TokenizerWrite {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },

    /// A tokenizer that cannot be serialised to JSON.
    #[error("cannot serialise the tokenizer: {message}")]
    TokenizerSerialize {
        /// Why.
        message: String,
    },

    /// A vocabulary too small for a byte-level tokenizer.
    #[error("vocabulary size {vocab_size} is too small: a byte-level tokenizer needs at least {min} (256 bytes and the special tokens)")]
    TokenizerVocabTooSmall {
        /// What was asked.
        vocab_size: usize,
        /// The smallest size that works.
        min: usize,
    },

    /// The tokenizer trainer failed.
    #[error("training the tokenizer failed: {message}")]
    TokenizerTrain {
        /// What the trainer said.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        Self::Io { path: path.display().to_string(), message: err.to_string() }
    }

    pub(crate) fn checkpoint(path: &std::path::Path, why: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.display().to_string(), why: why.into() }
    }
}

/// `Result` with atod-models's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
