//! Hugging Face checkpoints: `config.json` + `*.safetensors` in, the same layout out.
//!
//! Tensor names are Hugging Face's (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`,
//! ..., Qwen3's `model.layers.{i}.self_attn.q_norm.weight` and `k_norm.weight`, `lm_head.weight`), so a Qwen2,
//! Qwen3 or Llama checkpoint saved by `transformers` loads unchanged and a model trained here loads in
//! `transformers`. Linear weights are stored `[out, in]` there and `[in, out]` in burn, so they are transposed on
//! the way in and out. F32, F16 and BF16 files load (into f32); exports are F32. A tied model (small Qwen3s) has
//! no `lm_head.weight` in its export; a copy of it in a tied checkpoint is ignored on the way in.
//!
//! Exports are atomic: the directory is written beside its destination under a temporary name, synced, and
//! renamed into place, so a crash leaves either the old checkpoint or the new one, never half of one.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Attention, DecoderLayer, Mlp, ModelType, Transformer, TransformerConfig};

/// The model file name of an export.
pub const MODEL_FILE: &str = "model.safetensors";
/// The config file name.
pub const CONFIG_FILE: &str = "config.json";

/// Reads `dir/config.json` (Qwen2, Qwen3 or Llama).
pub fn load_config(dir: &Path) -> Result<TransformerConfig> {
    load_config_file(&dir.join(CONFIG_FILE))
}

/// Reads a Hugging Face `config.json` of any file name (Qwen2, Qwen3 or Llama) and checks its shape.
pub fn load_config_file(path: &Path) -> Result<TransformerConfig> {
    let text = fs::read_to_string(path).map_err(|err| Error::io(path, err))?;
    let config = parse_config(&text).map_err(|why| Error::checkpoint(path, why))?;
    config.validate()?;
    Ok(config)
}

fn parse_config(text: &str) -> std::result::Result<TransformerConfig, String> {
    let mut value: Value = serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    let object = value.as_object_mut().ok_or("expected a JSON object")?;
    match object.get("model_type").and_then(Value::as_str) {
        Some("qwen2" | "qwen3" | "llama") => {}
        Some(other) => return Err(format!("model_type `{other}` is not supported; supported: qwen2, qwen3, llama")),
        None => return Err("missing `model_type` (expected qwen2, qwen3 or llama)".into()),
    }
    // transformers 5 moved `rope_theta` into `rope_parameters`; only the default rotary type is supported.
    for key in ["rope_parameters", "rope_scaling"] {
        if let Some(params) = object.get(key).and_then(Value::as_object).cloned() {
            match params.get("rope_type").or_else(|| params.get("type")).and_then(Value::as_str) {
                None | Some("default") => {}
                Some(other) => return Err(format!("{key}.rope_type `{other}` is not supported (only `default`)")),
            }
            if let Some(theta) = params.get("rope_theta") {
                object.entry("rope_theta").or_insert(theta.clone());
            }
        }
    }
    if object.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err("sliding-window attention is not supported".into());
    }
    // Newer configs name each layer's attention; transformers slides the window on `sliding_attention` layers.
    let layer_types = object.get("layer_types").and_then(Value::as_array).into_iter().flatten();
    if let Some(other) = layer_types.filter_map(Value::as_str).find(|&kind| kind != "full_attention") {
        return Err(format!("layer_types `{other}` is not supported (only `full_attention`)"));
    }
    serde_json::from_value(value).map_err(|err| format!("{err}"))
}

/// Loads a checkpoint directory: `config.json` and every `model*.safetensors` file in it (sharded checkpoints
/// included).
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(TransformerConfig, Transformer<B>)> {
    let config = load_config(dir)?;
    config.validate()?;
    // A sharded checkpoint's index says which files hold the weights; without one, every `model*.safetensors`.
    let mut files: Vec<PathBuf> = match index_files(dir)? {
        Some(files) => files,
        None => model_files(dir)?,
    };
    files.sort();
    if files.is_empty() {
        return Err(Error::checkpoint(dir, "no model*.safetensors file"));
    }
    let mut tensors = HashMap::new();
    for file in &files {
        let bytes = fs::read(file).map_err(|err| Error::io(file, err))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|err| Error::checkpoint(file, err.to_string()))?;
        for (name, view) in st.tensors() {
            let values = to_f32(view.dtype(), view.data()).ok_or_else(|| {
                Error::checkpoint(file, format!("tensor `{name}` has unsupported dtype {:?}", view.dtype()))
            })?;
            tensors.insert(name, (view.shape().to_vec(), values));
        }
    }
    let mut source = Source { tensors, dir: dir.to_owned(), device: device.clone() };
    let model = build(&config, &mut source)?;
    Ok((config, model))
}

/// The shards a `model.safetensors.index.json` lists (its `weight_map`'s files, each once), when there is one.
fn index_files(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let path = dir.join(INDEX_FILE);
    let Ok(text) = fs::read_to_string(&path) else { return Ok(None) };
    let index: Value =
        serde_json::from_str(&text).map_err(|err| Error::checkpoint(&path, format!("invalid JSON: {err}")))?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| Error::checkpoint(&path, "no `weight_map` object"))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let file = file.as_str().ok_or_else(|| Error::checkpoint(&path, "a `weight_map` value is not a file name"))?;
        let file = dir.join(file);
        if !files.contains(&file) {
            if !file.is_file() {
                return Err(Error::checkpoint(&path, format!("lists {}, which is missing", file.display())));
            }
            files.push(file);
        }
    }
    Ok(Some(files))
}

/// Every `model*.safetensors` file of a directory without an index.
fn model_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|err| Error::io(dir, err))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        // Hugging Face names weights `model.safetensors` or `model-00001-of-00002.safetensors`; other
        // safetensors files beside them (an optimizer state) are not weights.
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model"))
        })
        .collect();
    Ok(files)
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        _ => return None,
    })
}

struct Source<B: Backend> {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    dir: PathBuf,
    device: B::Device,
}

impl<B: Backend> Source<B> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (got, values) = self
            .tensors
            .remove(name)
            .ok_or_else(|| Error::checkpoint(&self.dir, format!("missing tensor `{name}`")))?;
        if got != shape {
            return Err(Error::checkpoint(
                &self.dir,
                format!("tensor `{name}` has shape {got:?}, but the config implies {shape:?}"),
            ));
        }
        Ok(values)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<Param<Tensor<B, 1>>> {
        let values = self.take(name, &[len])?;
        Ok(Param::from_tensor(Tensor::from_data(TensorData::new(values, [len]), &self.device)))
    }

    /// A Hugging Face `[out, in]` weight as burn's `[in, out]`.
    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let values = self.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let weight = Tensor::<B, 2>::from_data(TensorData::new(values, [d_out, d_in]), &self.device).transpose();
        let bias = if bias { Some(self.vector(&format!("{prefix}.bias"), d_out)?) } else { None };
        Ok(Linear { weight: Param::from_tensor(weight), bias })
    }

    fn norm(&mut self, name: &str, d: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm { gamma: self.vector(name, d)?, epsilon: eps })
    }
}

fn build<B: Backend>(config: &TransformerConfig, src: &mut Source<B>) -> Result<Transformer<B>> {
    let mut model = config.init::<B>(&src.device)?;
    let (d, v, f, head_dim) = (config.hidden_size, config.vocab_size, config.intermediate_size, config.head_dim());
    let (q, kv) = (config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim);
    let bias = config.qkv_bias();
    let eps = config.rms_norm_eps;
    let embed = src.take("model.embed_tokens.weight", &[v, d])?;
    model.embed_tokens =
        Embedding { weight: Param::from_tensor(Tensor::from_data(TensorData::new(embed, [v, d]), &src.device)) };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(DecoderLayer {
            self_attn: Attention {
                q_proj: src.linear(&format!("{p}.self_attn.q_proj"), d, q, bias)?,
                k_proj: src.linear(&format!("{p}.self_attn.k_proj"), d, kv, bias)?,
                v_proj: src.linear(&format!("{p}.self_attn.v_proj"), d, kv, bias)?,
                o_proj: src.linear(&format!("{p}.self_attn.o_proj"), q, d, config.o_bias())?,
                q_norm: config
                    .qk_norm()
                    .then(|| src.norm(&format!("{p}.self_attn.q_norm.weight"), head_dim, eps))
                    .transpose()?,
                k_norm: config
                    .qk_norm()
                    .then(|| src.norm(&format!("{p}.self_attn.k_norm.weight"), head_dim, eps))
                    .transpose()?,
            },
            mlp: Mlp {
                gate_proj: src.linear(&format!("{p}.mlp.gate_proj"), d, f, false)?,
                up_proj: src.linear(&format!("{p}.mlp.up_proj"), d, f, false)?,
                down_proj: src.linear(&format!("{p}.mlp.down_proj"), f, d, false)?,
            },
            input_layernorm: src.norm(&format!("{p}.input_layernorm.weight"), d, eps)?,
            post_attention_layernorm: src.norm(&format!("{p}.post_attention_layernorm.weight"), d, eps)?,
        });
    }
    model.layers = layers;
    model.norm = src.norm("model.norm.weight", d, eps)?;
    model.lm_head = if config.tie_word_embeddings {
        // Some tied checkpoints still carry a copy of the head; the embedding is authoritative.
        src.tensors.remove("lm_head.weight");
        None
    } else {
        Some(src.linear("lm_head", d, v, false)?)
    };
    // Rotary buffers that older exports carry are recomputed, never read.
    src.tensors.retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
    if let Some(name) = src.tensors.keys().min() {
        return Err(Error::checkpoint(&src.dir, format!("unexpected tensor `{name}` (is the config right?)")));
    }
    Ok(model)
}

/// The model's tensors under Hugging Face names, `[out, in]` for linear weights, as `(shape, values)`.
pub fn named_tensors<B: Backend>(model: &Transformer<B>) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
        let data = t.into_data().convert::<f32>();
        (data.shape.to_vec(), data.to_vec().expect("f32 data"))
    }
    let mut out = BTreeMap::new();
    let linear = |out: &mut BTreeMap<_, _>, prefix: String, layer: &Linear<B>| {
        out.insert(format!("{prefix}.weight"), values(layer.weight.val().transpose()));
        if let Some(bias) = &layer.bias {
            out.insert(format!("{prefix}.bias"), values(bias.val()));
        }
    };
    out.insert("model.embed_tokens.weight".to_owned(), values(model.embed_tokens.weight.val()));
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let a = &layer.self_attn;
        linear(&mut out, format!("{p}.self_attn.q_proj"), &a.q_proj);
        linear(&mut out, format!("{p}.self_attn.k_proj"), &a.k_proj);
        linear(&mut out, format!("{p}.self_attn.v_proj"), &a.v_proj);
        linear(&mut out, format!("{p}.self_attn.o_proj"), &a.o_proj);
        if let Some(norm) = &a.q_norm {
            out.insert(format!("{p}.self_attn.q_norm.weight"), values(norm.gamma.val()));
        }
        if let Some(norm) = &a.k_norm {
            out.insert(format!("{p}.self_attn.k_norm.weight"), values(norm.gamma.val()));
        }
        linear(&mut out, format!("{p}.mlp.gate_proj"), &layer.mlp.gate_proj);
        linear(&mut out, format!("{p}.mlp.up_proj"), &layer.mlp.up_proj);
        linear(&mut out, format!("{p}.mlp.down_proj"), &layer.mlp.down_proj);
        out.insert(format!("{p}.input_layernorm.weight"), values(layer.input_layernorm.gamma.val()));
        out.insert(format!("{p}.post_attention_layernorm.weight"), values(layer.post_attention_layernorm.gamma.val()));
    }
    out.insert("model.norm.weight".to_owned(), values(model.norm.gamma.val()));
    if let Some(head) = &model.lm_head {
        linear(&mut out, "lm_head".to_owned(), head);
    }
    out
}

/// The `config.json` text of an export: the config plus the fields `transformers` needs to pick the class.
///
/// Llama and Qwen3 get `attention_bias` spelled out (their biases follow it and transformers' default may not be
/// ours), and Qwen3 gets `head_dim` (transformers' Qwen3 default is 128, not `hidden_size / heads`).
pub fn config_json(config: &TransformerConfig) -> String {
    let mut value = serde_json::to_value(config).expect("config serialises");
    let object = value.as_object_mut().expect("object");
    let arch = match config.model_type {
        ModelType::Qwen2 => "Qwen2ForCausalLM",
        ModelType::Qwen3 => "Qwen3ForCausalLM",
        ModelType::Llama => "LlamaForCausalLM",
    };
    object.insert("architectures".into(), Value::from(vec![arch]));
    object.insert("torch_dtype".into(), Value::from("float32"));
    if config.model_type != ModelType::Qwen2 {
        object.insert("attention_bias".into(), Value::from(config.qkv_bias()));
    }
    if config.model_type == ModelType::Qwen3 {
        object.insert("head_dim".into(), Value::from(config.head_dim()));
    }
    serde_json::to_string_pretty(&value).expect("config serialises") + "\n"
}

/// The number format of exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportDtype {
    /// 32-bit floats: the weights exactly as trained.
    #[default]
    F32,
    /// IEEE half precision (rounded to nearest even).
    F16,
    /// bfloat16, the dtype of Qwen's published checkpoints (rounded to nearest even).
    BF16,
}

impl ExportDtype {
    fn safetensors(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::F16 => Dtype::F16,
            Self::BF16 => Dtype::BF16,
        }
    }

    /// The `torch_dtype` transformers reads from `config.json`.
    fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
        }
    }

    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
            Self::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }
}

/// How [`save_with`] writes the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportOptions {
    /// The number format (default f32).
    pub dtype: ExportDtype,
    /// Split the weights into shards of at most this many bytes, as `transformers` does
    /// (`model-00001-of-00003.safetensors`, ... and `model.safetensors.index.json`); a tensor larger than the
    /// limit gets a shard of its own. `None` (the default), or weights that fit in one shard: one
    /// `model.safetensors`.
    pub max_shard_bytes: Option<u64>,
}

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Writes `dir/config.json`, `dir/model.safetensors` (f32) and any `extra` files (say `tokenizer.json`),
/// atomically as a whole: a crash leaves the previous contents of `dir` or the new ones.
pub fn save<B: Backend>(
    model: &Transformer<B>,
    config: &TransformerConfig,
    dir: &Path,
    extra: &[(&str, &[u8])],
) -> Result<()> {
    save_with(model, config, dir, extra, ExportOptions::default())
}

/// [`save`] in another number format or in shards ([`ExportOptions`]), still atomically as a whole.
pub fn save_with<B: Backend>(
    model: &Transformer<B>,
    config: &TransformerConfig,
    dir: &Path,
    extra: &[(&str, &[u8])],
    options: ExportOptions,
) -> Result<()> {
    let dtype = options.dtype;
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> =
        named_tensors(model).into_iter().map(|(name, (shape, values))| (name, shape, dtype.encode(&values))).collect();
    // Shards in name order, each closed when the next tensor would take it over the limit.
    let limit = options.max_shard_bytes.unwrap_or(u64::MAX);
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, (_, _, data)) in tensors.iter().enumerate() {
        let bytes = data.len() as u64;
        if size > 0 && size + bytes > limit {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("a shard").push(i);
        size += bytes;
    }
    let names: Vec<String> = match shards.len() {
        1 => vec![MODEL_FILE.to_owned()],
        n => (1..=n).map(|k| format!("model-{k:05}-of-{n:05}.safetensors")).collect(),
    };
    let mut shard_bytes = Vec::with_capacity(shards.len());
    let mut weight_map = BTreeMap::new();
    for (members, file) in shards.iter().zip(&names) {
        let views = members
            .iter()
            .map(|&i| {
                let (name, shape, data) = &tensors[i];
                weight_map.insert(name.clone(), file.clone());
                safetensors::tensor::TensorView::new(dtype.safetensors(), shape.clone(), data)
                    .map(|view| (name.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|err| Error::checkpoint(dir, err.to_string()))?;
        let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        shard_bytes.push(
            safetensors::serialize(views, Some(metadata)).map_err(|err| Error::checkpoint(dir, err.to_string()))?,
        );
    }
    let mut config_value: Value = serde_json::from_str(&config_json(config)).expect("config_json is JSON");
    config_value["torch_dtype"] = Value::from(dtype.torch_name());
    let config_text = serde_json::to_string_pretty(&config_value).expect("config serialises") + "\n";
    let total: usize = tensors.iter().map(|(_, _, data)| data.len()).sum();
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let index_text = serde_json::to_string_pretty(&index).expect("index serialises") + "\n";
    let mut files: Vec<(&str, &[u8])> = vec![(CONFIG_FILE, config_text.as_bytes())];
    files.extend(names.iter().map(String::as_str).zip(shard_bytes.iter().map(Vec::as_slice)));
    if names.len() > 1 {
        files.push((INDEX_FILE, index_text.as_bytes()));
    }
    files.extend_from_slice(extra);
    write_dir_atomic(dir, &files)
}

/// Writes one file atomically: a temporary file beside it, synced, then renamed over it.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|err| Error::io(parent, err))?;
    let name = path.file_name().ok_or_else(|| Error::io(path, "not a file name"))?.to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut handle = fs::File::create(&tmp).map_err(|err| Error::io(&tmp, err))?;
    handle.write_all(bytes).map_err(|err| Error::io(&tmp, err))?;
    handle.sync_all().map_err(|err| Error::io(&tmp, err))?;
    fs::rename(&tmp, path).map_err(|err| Error::io(path, err))?;
    if let Ok(dir) = fs::File::open(parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Writes `files` into a fresh directory beside `dir`, syncs it, and swaps it into place.
pub fn write_dir_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|err| Error::io(parent, err))?;
    let name = dir.file_name().ok_or_else(|| Error::io(dir, "not a directory name"))?.to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|err| Error::io(&tmp, err))?;
    for (file, bytes) in files {
        let path = tmp.join(file);
        let mut handle = fs::File::create(&path).map_err(|err| Error::io(&path, err))?;
        handle.write_all(bytes).map_err(|err| Error::io(&path, err))?;
        handle.sync_all().map_err(|err| Error::io(&path, err))?;
    }
    if dir.exists() {
        fs::rename(dir, &old).map_err(|err| Error::io(dir, err))?;
    }
    fs::rename(&tmp, dir).map_err(|err| Error::io(dir, err))?;
    let _ = fs::remove_dir_all(&old);
    if let Ok(handle) = fs::File::open(parent) {
        let _ = handle.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_or_explain() {
        let ok = r#"{"model_type":"qwen2","vocab_size":8,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,
            "rope_parameters":{"rope_theta":500.0,"rope_type":"default"}}"#;
        let config = parse_config(ok).unwrap();
        assert_eq!(config.rope_theta, 500.0);
        assert!(config.qkv_bias());
        let gpt = r#"{"model_type":"gpt2"}"#;
        assert_eq!(
            parse_config(gpt).unwrap_err(),
            "model_type `gpt2` is not supported; supported: qwen2, qwen3, llama"
        );
        let yarn = ok.replace("\"default\"", "\"yarn\"");
        assert_eq!(
            parse_config(&yarn).unwrap_err(),
            "rope_parameters.rope_type `yarn` is not supported (only `default`)"
        );
        assert!(parse_config("{").unwrap_err().starts_with("invalid JSON"));
    }

    #[test]
    fn qwen3_configs_parse_with_their_extra_keys() {
        // Qwen3-0.6B's config.json, abridged only in the token ids.
        let qwen3 = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
            "bos_token_id":151643,"eos_token_id":151645,"head_dim":128,"hidden_act":"silu","hidden_size":1024,
            "initializer_range":0.02,"intermediate_size":3072,"max_position_embeddings":40960,
            "max_window_layers":28,"model_type":"qwen3","num_attention_heads":16,"num_hidden_layers":28,
            "num_key_value_heads":8,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1000000,
            "sliding_window":null,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
            "transformers_version":"4.51.0","use_cache":true,"use_sliding_window":false,"vocab_size":151936}"#;
        let config = parse_config(qwen3).unwrap();
        assert_eq!(config.model_type, ModelType::Qwen3);
        assert_eq!((config.head_dim(), config.rope_theta), (128, 1e6));
        assert!(config.tie_word_embeddings && !config.qkv_bias() && config.qk_norm());
        config.validate().unwrap();
        // transformers 5 writes rope_parameters (and dtype, layer_types) instead.
        let v5 = qwen3
            .replace(r#""rope_theta":1000000,"#, r#""rope_parameters":{"rope_theta":5e5,"rope_type":"default"},"#)
            .replace(r#""torch_dtype""#, r#""layer_types":["full_attention"],"dtype""#);
        assert_eq!(parse_config(&v5).unwrap().rope_theta, 5e5);
        let sliding = qwen3.replace(r#""use_sliding_window":false"#, r#""use_sliding_window":true"#);
        assert_eq!(parse_config(&sliding).unwrap_err(), "sliding-window attention is not supported");
        let mixed = v5.replace(r#"["full_attention"]"#, r#"["full_attention","sliding_attention"]"#);
        assert_eq!(
            parse_config(&mixed).unwrap_err(),
            "layer_types `sliding_attention` is not supported (only `full_attention`)"
        );
        // The export spells out what transformers' Qwen3 defaults would get wrong.
        let exported: Value = serde_json::from_str(&config_json(&config)).unwrap();
        assert_eq!(exported["architectures"][0], "Qwen3ForCausalLM");
        assert_eq!((exported["head_dim"].as_u64(), exported["attention_bias"].as_bool()), (Some(128), Some(false)));
        assert_eq!(parse_config(&config_json(&config)).unwrap(), config);
    }
}
