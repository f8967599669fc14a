//! The chat tokenizer: a Hugging Face `tokenizers` tokenizer plus the ChatML chat format of Qwen2.
//!
//! Every model in atod speaks the chat format of Qwen2's chat template (ChatML), so that Hugging Face Qwen
//! checkpoints and their `tokenizer.json` work unchanged:
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n
//! <|im_start|>user\n{user}<|im_end|>\n
//! <|im_start|>assistant\n{response}<|im_end|>\n
//! ```
//!
//! A prompt is its messages followed by the generation prompt `<|im_start|>assistant\n`; a response is its text
//! followed by `<|im_end|>`, the end-of-turn token; `<|endoftext|>` pads.
//!
//! *Segments are encoded separately.* Hugging Face's `apply_chat_template` renders the whole conversation to one
//! string and encodes that, so a merge may in principle cross the boundary between a header and the content. We
//! encode the header `{role}\n`, the content and the trailing `\n` each on their own and concatenate the ids. The
//! rollout engine relies on this: the ids of a prompt followed by the ids of a sampled response are exactly the
//! ids of the conversation that SFT trains on ([`ChatTokenizer::encode_chat`]). With the byte-level
//! pre-tokenizers of GPT-2 and Qwen2 the two renderings differ only where a content begins with whitespace.
//!
//! *Qwen3's thinking block.* A tokenizer that has the tokens `<think>` and `</think>` (Qwen3's) gets the thinking
//! rules of Qwen3's chat template:
//! - With thinking disabled (the default here, the template's `enable_thinking=False`), the generation prompt is
//!   followed by an empty block, `<|im_start|>assistant\n<think>\n\n</think>\n\n`, so the model answers at
//!   once; in SFT that block is part of the prompt (never a target).
//! - With thinking enabled ([`ChatTokenizer::with_thinking`]), the generation prompt is the plain header and
//!   the model writes `<think>\n...\n</think>\n\n` then its answer; the whole response is the target.
//! - Either way an assistant message before the last user message keeps only its answer
//!   ([`ChatTokenizer::answer`]): the template drops the reasoning of earlier turns, and so does
//!   [`ChatTokenizer::encode_chat`]. The environment still receives the whole response, as verl-agent passes
//!   it (ALFWorld's projection requires the `<think>` tags the response format asks for).
//!
//! A tokenizer without those tokens (every one atod trains) renders plain ChatML as above.
//!
//! [`ChatTokenizer::train`] trains a small byte-level BPE on expert transcripts (DESIGN.md §7): the GPT-2
//! byte-level pre-tokenizer and decoder with all 256 bytes in the initial alphabet, so every string round-trips,
//! including characters never seen in training.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use atod_core::policy::{ChatMessage, Role};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// The padding token (also Qwen2's end of text).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// The token that opens a message, followed by its role and a newline.
pub const IM_START: &str = "<|im_start|>";
/// The token that closes a message: the end of turn, where generation stops.
pub const IM_END: &str = "<|im_end|>";
/// The special tokens of a trained tokenizer, in the order of their ids (0, 1, 2).
pub const SPECIAL_TOKENS: [&str; 3] = [ENDOFTEXT, IM_START, IM_END];

/// Qwen3's token that opens a reasoning block.
pub const THINK_OPEN: &str = "<think>";
/// Qwen3's token that closes a reasoning block.
pub const THINK_CLOSE: &str = "</think>";
/// The empty reasoning block Qwen3's template puts after the generation prompt when thinking is disabled.
pub const EMPTY_THINK: &str = "<think>\n\n</think>\n\n";

/// The number of byte symbols of the byte-level alphabet.
const BYTE_ALPHABET: usize = 256;

/// The smallest vocabulary [`ChatTokenizer::train`] accepts: every byte plus the special tokens.
pub const MIN_VOCAB_SIZE: usize = BYTE_ALPHABET + SPECIAL_TOKENS.len();

/// The ids of one conversation for supervised fine-tuning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatEncoding {
    /// The token ids of the whole conversation, `[n_tokens]`.
    pub ids: Vec<u32>,
    /// `[n_tokens]`, aligned with `ids`: true exactly for the tokens the model is trained to produce, that is
    /// the contents of assistant messages and the `<|im_end|>` after each (not the `<|im_start|>assistant\n`
    /// header, not the `\n` that follows `<|im_end|>`).
    pub loss_mask: Vec<bool>,
}

/// A Hugging Face tokenizer with the ChatML chat format (see the module docs).
#[derive(Debug, Clone)]
pub struct ChatTokenizer {
    inner: Tokenizer,
    im_start_id: u32,
    im_end_id: u32,
    pad_id: u32,
    n_ids: usize,
    /// Whether the vocabulary has `<think>` and `</think>` (Qwen3's template rules apply).
    think_tokens: bool,
    /// Whether the model reasons before answering (see the module docs); off by default.
    thinking: bool,
}

impl ChatTokenizer {
    /// Trains a byte-level BPE tokenizer of `vocab_size` ids (special tokens included) on `texts`.
    ///
    /// The special tokens get ids 0 (`<|endoftext|>`), 1 (`<|im_start|>`) and 2 (`<|im_end|>`), the 256 byte
    /// symbols the next ids, and merges the rest. Training stops early, with a smaller vocabulary, when no pair
    /// is left to merge. The result is deterministic: the same texts give a byte-identical `tokenizer.json`.
    ///
    /// # Errors
    /// [`Error::TokenizerVocabTooSmall`] when `vocab_size` cannot hold the bytes and the special tokens;
    /// [`Error::TokenizerTrain`] when the trainer fails.
    pub fn train(texts: impl IntoIterator<Item = impl AsRef<str>>, vocab_size: usize) -> Result<Self> {
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(Error::TokenizerVocabTooSmall { vocab_size, min: MIN_VOCAB_SIZE });
        }
        let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|&token| AddedToken::from(token, true)).collect();
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainer::builder()
                .vocab_size(vocab_size)
                .min_frequency(0)
                .show_progress(false)
                .special_tokens(specials.clone())
                .initial_alphabet(alphabet)
                .build(),
        );
        // No prefix space: a leading space would survive decoding and break the round trip.
        let byte_level = ByteLevel::default().add_prefix_space(false);
        let mut inner = Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(byte_level)).with_decoder(Some(ByteLevelDecoder::default()));
        // Registering the specials before training keeps them whole: the trainer never sees their characters.
        inner.add_special_tokens(&specials);
        let texts: Vec<String> = texts.into_iter().map(|t| t.as_ref().to_owned()).collect();
        inner.train(&mut trainer, texts.iter()).map_err(|e| Error::TokenizerTrain { message: e.to_string() })?;
        Self::from_tokenizer(inner, Path::new("<trained>"))
    }

    /// Loads any Hugging Face `tokenizer.json` (a Qwen2 one works unchanged).
    ///
    /// The pad id is that of `<|endoftext|>` where the file has it, else that of `<|im_end|>`.
    ///
    /// # Errors
    /// [`Error::TokenizerRead`] when the file cannot be read, [`Error::TokenizerParse`] when it is not a
    /// tokenizer, [`Error::TokenizerMissingChatTokens`] when `<|im_start|>` or `<|im_end|>` is not in it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = fs::read_to_string(path)
            .map_err(|e| Error::TokenizerRead { path: path.to_path_buf(), message: e.to_string() })?;
        let inner = Tokenizer::from_str(&json)
            .map_err(|e| Error::TokenizerParse { path: path.to_path_buf(), message: e.to_string() })?;
        Self::from_tokenizer(inner, path)
    }

    /// Wraps a tokenizer built in memory; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::TokenizerMissingChatTokens`] when `<|im_start|>` or `<|im_end|>` is not in it.
    pub fn from_tokenizer(inner: Tokenizer, origin: &Path) -> Result<Self> {
        let im_start = inner.token_to_id(IM_START);
        let im_end = inner.token_to_id(IM_END);
        let (Some(im_start_id), Some(im_end_id)) = (im_start, im_end) else {
            let missing = [(IM_START, im_start), (IM_END, im_end)]
                .into_iter()
                .filter(|(_, id)| id.is_none())
                .map(|(token, _)| token.to_owned())
                .collect();
            return Err(Error::TokenizerMissingChatTokens { path: origin.to_path_buf(), missing });
        };
        let pad_id = inner.token_to_id(ENDOFTEXT).unwrap_or(im_end_id);
        let n_ids = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        let think_tokens = inner.token_to_id(THINK_OPEN).is_some() && inner.token_to_id(THINK_CLOSE).is_some();
        Ok(Self { inner, im_start_id, im_end_id, pad_id, n_ids, think_tokens, thinking: false })
    }

    /// The same tokenizer with Qwen3's thinking enabled or disabled (see the module docs). Without `<think>`
    /// and `</think>` in the vocabulary there is no reasoning block and this changes nothing.
    pub fn with_thinking(mut self, thinking: bool) -> Self {
        self.thinking = thinking;
        self
    }

    /// Whether the chat format has Qwen3's reasoning block (the vocabulary has `<think>` and `</think>`).
    pub fn has_think_tokens(&self) -> bool {
        self.think_tokens
    }

    /// The answer of a response: with Qwen3's thinking tokens, the text after the last `</think>` (leading
    /// newlines dropped), as the chat template separates reasoning from content; otherwise the text itself.
    pub fn answer<'a>(&self, text: &'a str) -> &'a str {
        match text.rfind(THINK_CLOSE) {
            Some(at) if self.think_tokens => text[at + THINK_CLOSE.len()..].trim_start_matches('\n'),
            _ => text,
        }
    }

    /// Writes the `tokenizer.json` atomically: to a temporary file in the same directory, synced, then renamed
    /// over `path`, so a reader never sees half a file.
    ///
    /// # Errors
    /// [`Error::TokenizerWrite`] naming `path` when any step fails (the temporary file is then removed).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        write_atomic(path, json.as_bytes())
            .map_err(|e| Error::TokenizerWrite { path: path.to_path_buf(), message: e.to_string() })
    }

    /// The `tokenizer.json` text (pretty-printed, as Hugging Face writes it).
    ///
    /// # Errors
    /// [`Error::TokenizerSerialize`] when the tokenizer cannot be serialised.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::TokenizerSerialize { message: e.to_string() })
    }

    /// The ids of a prompt: every message rendered as `<|im_start|>{role}\n{content}<|im_end|>\n`, then the
    /// generation prompt `<|im_start|>assistant\n` (followed by Qwen3's empty reasoning block where the
    /// tokenizer has one and thinking is disabled). Returns `[n_prompt_tokens]`.
    pub fn encode_prompt(&self, messages: &[ChatMessage]) -> Vec<u32> {
        let mut ids = Vec::new();
        let last_user = last_user(messages);
        for (i, message) in messages.iter().enumerate() {
            self.push_message(message, i < last_user, &mut ids, &mut Vec::new());
        }
        self.push_header(Role::Assistant, &mut ids);
        ids.extend(self.empty_think());
        ids
    }

    /// The ids of Qwen3's empty reasoning block where it applies (think tokens, thinking disabled), else none.
    fn empty_think(&self) -> Vec<u32> {
        match self.think_tokens && !self.thinking {
            true => self.encode_text(EMPTY_THINK),
            false => Vec::new(),
        }
    }

    /// The ids of a response: its text followed by `<|im_end|>`. Returns `[n_response_tokens]`; the last id is
    /// [`ChatTokenizer::eot_id`].
    pub fn encode_response(&self, text: &str) -> Vec<u32> {
        let mut ids = self.encode_text(text);
        ids.push(self.im_end_id);
        ids
    }

    /// The ids and loss mask of a whole conversation for supervised fine-tuning (see [`ChatEncoding`]).
    ///
    /// For `[system, user, assistant]` the ids are `encode_prompt(&[system, user])` followed by
    /// `encode_response(&assistant.content)` and the ids of `"\n"`.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> ChatEncoding {
        let mut encoding = ChatEncoding::default();
        let last_user = last_user(messages);
        for (i, message) in messages.iter().enumerate() {
            self.push_message(message, i < last_user, &mut encoding.ids, &mut encoding.loss_mask);
        }
        encoding
    }

    /// The text of `ids`, special tokens skipped.
    ///
    /// # Panics
    /// If the underlying tokenizer's decoder fails, which the byte-level decoder never does (invalid UTF-8 from
    /// a partial sequence becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).expect("the tokenizer's decoder failed")
    }

    /// The end-of-turn id (`<|im_end|>`): generation stops here.
    pub fn eot_id(&self) -> u32 {
        self.im_end_id
    }

    /// The padding id: `<|endoftext|>`, or `<|im_end|>` where the tokenizer has no `<|endoftext|>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of `<|im_start|>`.
    pub fn im_start_id(&self) -> u32 {
        self.im_start_id
    }

    /// The number of ids, one more than the largest id (added tokens included): the smallest embedding table
    /// that covers the tokenizer.
    pub fn vocab_size(&self) -> usize {
        self.n_ids
    }

    /// The Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// A stable 64-bit hash (FNV-1a) of the vocabulary and merges: the serialised model, whose vocabulary is
    /// ordered by id and merges by rank, then the added tokens ordered by id. Two tokenizers with the same
    /// fingerprint map every text to the same ids, so a trainer can refuse a teacher and a student whose
    /// fingerprints differ. Settings that do not change ids (padding, truncation) do not enter it.
    pub fn fingerprint(&self) -> u64 {
        let mut hash = Fnv1a::new();
        // Serialising a model already in memory cannot fail; an empty string would still hash consistently.
        hash.write(serde_json::to_string(self.inner.get_model()).unwrap_or_default().as_bytes());
        let mut added: Vec<(u32, String)> =
            self.inner.get_added_tokens_decoder().into_iter().map(|(id, token)| (id, token.content)).collect();
        added.sort();
        for (id, content) in added {
            hash.write(&id.to_le_bytes());
            hash.write(content.as_bytes());
            hash.write(&[0]);
        }
        hash.finish()
    }

    /// The ids of plain text, special-token strings inside it included (as Hugging Face encodes them).
    ///
    /// # Panics
    /// If the underlying tokenizer fails to encode, which byte-level BPE never does.
    fn encode_text(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        self.inner.encode_fast(text, false).expect("the tokenizer failed to encode a text").get_ids().to_vec()
    }

    /// Appends `<|im_start|>{role}\n`.
    fn push_header(&self, role: Role, ids: &mut Vec<u32>) {
        ids.push(self.im_start_id);
        ids.extend(self.encode_text(&format!("{}\n", role_name(role))));
    }

    /// Appends one rendered message to `ids` and its loss mask to `mask` (true on an assistant's content and
    /// `<|im_end|>`). An assistant message `earlier` than the last user message keeps only its answer where
    /// the tokenizer has Qwen3's reasoning block; a later one (the response) follows the empty block of a
    /// prompt with thinking disabled.
    fn push_message(&self, message: &ChatMessage, earlier: bool, ids: &mut Vec<u32>, mask: &mut Vec<bool>) {
        let start = ids.len();
        self.push_header(message.role, ids);
        let mut content = message.content.as_str();
        if message.role == Role::Assistant {
            if earlier {
                content = self.answer(content);
            } else {
                ids.extend(self.empty_think());
            }
        }
        mask.resize(mask.len() + (ids.len() - start), false);
        let body = self.encode_response(content);
        mask.resize(mask.len() + body.len(), message.role == Role::Assistant);
        ids.extend(body);
        let newline = self.encode_text("\n");
        mask.resize(mask.len() + newline.len(), false);
        ids.extend(newline);
    }
}

/// The index of the last user message (`messages.len()` when there is none, so that no message is earlier).
fn last_user(messages: &[ChatMessage]) -> usize {
    messages.iter().rposition(|m| m.role == Role::User).unwrap_or(messages.len())
}

/// The role as the chat template writes it.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path` and syncs the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // Syncing the directory makes the rename itself durable; not every platform can open a directory.
    if let Ok(dir) = File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The 64-bit FNV-1a hash, written out so that hashes never change with a dependency (the tokenizer's
/// fingerprint, atod-cli's stage keys and weight hashes).
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    /// The empty hash.
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` in.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small corpus in the chat style of the environments.
    fn corpus() -> Vec<String> {
        let mut texts = Vec::new();
        for i in 0..40 {
            texts
                .push(format!("You are in the middle of a room. Looking around you, you see a cabinet {i}, a desk 1."));
            texts.push(format!("<think>I need a mug.</think><action>go to cabinet {i}</action>"));
            texts.push(format!(
                "On the cabinet {i}, you see a mug 2, and a pencil 3.\nYour task is to: put a mug in desk."
            ));
        }
        texts
    }

    fn trained() -> ChatTokenizer {
        ChatTokenizer::train(corpus(), 320).unwrap()
    }

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage::new(role, content)
    }

    /// The trained tokenizer with Qwen3's `<think>` and `</think>` added (as Qwen3's file has them: added
    /// tokens, not special, so decoding keeps them).
    fn with_think_tokens() -> ChatTokenizer {
        let mut inner = trained().inner().clone();
        inner.add_tokens(&[AddedToken::from(THINK_OPEN, false), AddedToken::from(THINK_CLOSE, false)]);
        ChatTokenizer::from_tokenizer(inner, Path::new("<qwen3-like>")).unwrap()
    }

    #[test]
    fn qwen3_thinking_follows_its_chat_template() {
        let plain = trained();
        assert!(!plain.has_think_tokens());
        let off = with_think_tokens();
        assert!(off.has_think_tokens());
        let on = off.clone().with_thinking(true);
        let (system, user) = (msg(Role::System, "You act."), msg(Role::User, "Where is the mug?"));
        let header = |tok: &ChatTokenizer| {
            let mut ids = tok.encode_prompt(&[system.clone(), user.clone()]);
            ids.truncate(plain.encode_prompt(&[system.clone(), user.clone()]).len());
            ids
        };
        // Thinking disabled: the generation prompt is followed by the empty block (`enable_thinking=False`).
        let prompt_off = off.encode_prompt(&[system.clone(), user.clone()]);
        assert_eq!(prompt_off[..header(&off).len()], header(&off)[..]);
        assert_eq!(off.decode(&prompt_off[header(&off).len()..]), EMPTY_THINK);
        // Thinking enabled, or no think tokens: the plain header, as ChatML.
        assert_eq!(on.encode_prompt(&[system.clone(), user.clone()]), header(&on));
        assert_eq!(plain.encode_prompt(&[system.clone(), user.clone()]), header(&plain));
        // A conversation for SFT is its prompt then the response in both modes; the empty block is never a target.
        for tok in [&off, &on] {
            let response = "<think>mug is in the cabinet</think><action>go to cabinet 1</action>";
            let chat = tok.encode_chat(&[system.clone(), user.clone(), msg(Role::Assistant, response)]);
            let prompt = tok.encode_prompt(&[system.clone(), user.clone()]);
            let mut expected = prompt.clone();
            expected.extend(tok.encode_response(response));
            expected.extend(tok.encode_text("\n"));
            assert_eq!(chat.ids, expected);
            assert!(
                chat.loss_mask[..prompt.len()].iter().all(|&m| !m),
                "the prompt, empty block included, is no target"
            );
            assert!(chat.loss_mask[prompt.len()..chat.ids.len() - 1].iter().all(|&m| m));
        }
        // An assistant turn before the last user message keeps its answer only.
        let history = [
            system.clone(),
            user.clone(),
            msg(Role::Assistant, "<think>\nlook first\n</think>\n\ngo to desk 1"),
            msg(Role::User, "You arrive at desk 1."),
        ];
        let stripped = [
            system.clone(),
            user.clone(),
            msg(Role::Assistant, "go to desk 1"),
            msg(Role::User, "You arrive at desk 1."),
        ];
        assert_eq!(off.encode_prompt(&history), off.encode_prompt(&stripped));
        assert_ne!(plain.encode_prompt(&history), plain.encode_prompt(&stripped), "ChatML keeps every message whole");
        assert_eq!(off.answer("<think>a</think>\n\nb"), "b");
        assert_eq!(off.answer("no block"), "no block");
        assert_eq!(plain.answer("<think>a</think>b"), "<think>a</think>b");
    }

    #[test]
    fn every_string_round_trips_including_unseen_characters() {
        let tok = trained();
        for text in [
            "",
            "go to cabinet 1",
            "  leading and trailing spaces  ",
            "lines\n\nwith\r\n newlines\tand tabs\n",
            "unicode: café, naïve, 日本語, Ελληνικά",
            "emoji: 🦀🚀 👩‍👩‍👧 and a flag 🇫🇷",
            "\u{0}\u{7f} control characters",
        ] {
            assert_eq!(tok.decode(&tok.encode_text(text)), text, "round trip of {text:?}");
        }
    }

    #[test]
    fn special_tokens_are_single_ids_and_skipped_when_decoding() {
        let tok = trained();
        assert_eq!(tok.inner().token_to_id(ENDOFTEXT), Some(0));
        assert_eq!(tok.im_start_id(), 1);
        assert_eq!(tok.eot_id(), 2);
        assert_eq!(tok.pad_id(), 0);
        for token in SPECIAL_TOKENS {
            let ids = tok.encode_text(token);
            assert_eq!(ids, [tok.inner().token_to_id(token).unwrap()], "{token}");
            assert_eq!(tok.decode(&ids), "");
        }
        assert_eq!(tok.vocab_size(), 320);
        let response = tok.encode_response("<think>x</think>");
        assert_eq!(response.last(), Some(&tok.eot_id()));
        assert_eq!(tok.decode(&response), "<think>x</think>");
    }

    #[test]
    fn chat_is_prompt_then_response_then_newline() {
        let tok = trained();
        let system = msg(Role::System, "You are an agent in a household.");
        let user = msg(Role::User, "Your task is to: put a mug in desk.\n\nYou see a cabinet 1.");
        let assistant = msg(Role::Assistant, "<think>I need a mug.</think><action>go to cabinet 1</action>");
        let chat = tok.encode_chat(&[system.clone(), user.clone(), assistant.clone()]);
        let prompt = tok.encode_prompt(&[system, user]);
        let response = tok.encode_response(&assistant.content);
        let newline = tok.encode_text("\n");
        let expected: Vec<u32> = [prompt.clone(), response.clone(), newline.clone()].concat();
        assert_eq!(chat.ids, expected);
        let mask: Vec<bool> =
            [vec![false; prompt.len()], vec![true; response.len()], vec![false; newline.len()]].concat();
        assert_eq!(chat.loss_mask, mask);
        assert_eq!(
            tok.inner().decode(&chat.ids, false).unwrap(),
            "<|im_start|>system\nYou are an agent in a household.<|im_end|>\n\
             <|im_start|>user\nYour task is to: put a mug in desk.\n\nYou see a cabinet 1.<|im_end|>\n\
             <|im_start|>assistant\n<think>I need a mug.</think><action>go to cabinet 1</action><|im_end|>\n"
        );
        let masked: Vec<u32> = chat.ids.iter().zip(&chat.loss_mask).filter(|(_, &m)| m).map(|(&id, _)| id).collect();
        assert_eq!(masked, response);
    }

    #[test]
    fn prompt_ends_with_the_generation_prompt() {
        let tok = trained();
        let ids = tok.encode_prompt(&[msg(Role::User, "hi")]);
        let rendered = tok.inner().decode(&ids, false).unwrap();
        assert_eq!(rendered, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn training_is_deterministic() {
        let first = trained();
        let second = trained();
        assert_eq!(first.to_json().unwrap(), second.to_json().unwrap());
        assert_eq!(first.fingerprint(), second.fingerprint());
        let other = ChatTokenizer::train(corpus(), 300).unwrap();
        assert_ne!(first.fingerprint(), other.fingerprint());
    }

    #[test]
    fn save_then_load_gives_the_same_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = trained();
        tok.save(&path).unwrap();
        let loaded = ChatTokenizer::from_file(&path).unwrap();
        assert_eq!(loaded.fingerprint(), tok.fingerprint());
        assert_eq!(loaded.to_json().unwrap(), tok.to_json().unwrap());
        let text = "<think>🦀</think><action>go to desk 1</action>";
        assert_eq!(loaded.encode_response(text), tok.encode_response(text));
        // Only the file is left in the directory: the temporary file was renamed.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn too_small_a_vocabulary_is_an_error() {
        let err = ChatTokenizer::train(corpus(), 100).unwrap_err();
        assert_eq!(err, Error::TokenizerVocabTooSmall { vocab_size: 100, min: 259 });
        assert!(err.to_string().contains("at least 259"), "{err}");
        assert!(ChatTokenizer::train(corpus(), MIN_VOCAB_SIZE).is_ok());
    }

    #[test]
    fn load_errors_name_the_file_and_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let err = ChatTokenizer::from_file(&missing).unwrap_err();
        assert!(matches!(err, Error::TokenizerRead { .. }), "{err:?}");
        assert!(err.to_string().contains("nope.json"), "{err}");

        let invalid = dir.path().join("invalid.json");
        fs::write(&invalid, "{ not json").unwrap();
        let err = ChatTokenizer::from_file(&invalid).unwrap_err();
        assert!(matches!(err, Error::TokenizerParse { .. }), "{err:?}");
        assert!(err.to_string().contains("invalid.json"), "{err}");

        // A valid tokenizer.json without the chat tokens: only `<|endoftext|>` is special.
        let mut plain = Tokenizer::new(BPE::default());
        plain.with_pre_tokenizer(Some(ByteLevel::default())).with_decoder(Some(ByteLevelDecoder::default()));
        plain.add_special_tokens(&[AddedToken::from(ENDOFTEXT, true), AddedToken::from(IM_END, true)]);
        let no_start = dir.path().join("no_start.json");
        plain.save(&no_start, false).unwrap();
        let err = ChatTokenizer::from_file(&no_start).unwrap_err();
        assert_eq!(err, Error::TokenizerMissingChatTokens { path: no_start.clone(), missing: vec![IM_START.into()] });
        let message = err.to_string();
        assert!(message.contains("no_start.json") && message.contains("`<|im_start|>`"), "{message}");
        assert!(!message.contains("token `<|im_end|>`"), "{message}");

        let mut bare = Tokenizer::new(BPE::default());
        bare.add_special_tokens(&[AddedToken::from(ENDOFTEXT, true)]);
        let neither = dir.path().join("neither.json");
        bare.save(&neither, false).unwrap();
        let message = ChatTokenizer::from_file(&neither).unwrap_err().to_string();
        assert!(message.contains("tokens `<|im_start|>` and `<|im_end|>`"), "{message}");
    }

    #[test]
    fn pad_falls_back_to_im_end_without_endoftext() {
        let mut tok = Tokenizer::new(BPE::default());
        tok.add_special_tokens(&[AddedToken::from(IM_START, true), AddedToken::from(IM_END, true)]);
        let chat = ChatTokenizer::from_tokenizer(tok, Path::new("<test>")).unwrap();
        assert_eq!(chat.pad_id(), chat.eot_id());
        assert_eq!(chat.vocab_size(), 2);
    }

    #[test]
    fn save_to_a_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/tokenizer.json");
        let err = trained().save(&path).unwrap_err();
        assert!(matches!(err, Error::TokenizerWrite { .. }), "{err:?}");
        assert!(err.to_string().contains("no/such/dir/tokenizer.json"), "{err}");
    }
}
