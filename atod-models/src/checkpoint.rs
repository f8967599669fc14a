//! Hugging Face checkpoints: `config.json` + `*.safetensors` in, the same layout out.
//!
//! Tensor names are Hugging Face's (`model.embed_tokens.weight`, `model.layers.{i}.self_attn.q_proj.weight`,
//! ..., `lm_head.weight`), so a Qwen2 or Llama checkpoint saved by `transformers` loads unchanged and a model
//! trained here loads in `transformers`. Linear weights are stored `[out, in]` there and `[in, out]` in burn, so
//! they are transposed on the way in and out. F32, F16 and BF16 files load (into f32); exports are F32.
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

/// Reads `dir/config.json` (Qwen2 or Llama).
pub fn load_config(dir: &Path) -> Result<TransformerConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&path).map_err(|err| Error::io(&path, err))?;
    parse_config(&text).map_err(|why| Error::checkpoint(&path, why))
}

fn parse_config(text: &str) -> std::result::Result<TransformerConfig, String> {
    let mut value: Value = serde_json::from_str(text).map_err(|err| format!("invalid JSON: {err}"))?;
    let object = value.as_object_mut().ok_or("expected a JSON object")?;
    match object.get("model_type").and_then(Value::as_str) {
        Some("qwen2" | "llama") => {}
        Some(other) => return Err(format!("model_type `{other}` is not supported; supported: qwen2, llama")),
        None => return Err("missing `model_type` (expected qwen2 or llama)".into()),
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
    serde_json::from_value(value).map_err(|err| format!("{err}"))
}

/// Loads a checkpoint directory: `config.json` and every `model*.safetensors` file in it (sharded checkpoints
/// included).
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(TransformerConfig, Transformer<B>)> {
    let config = load_config(dir)?;
    config.validate()?;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|err| Error::io(dir, err))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        // Hugging Face names weights `model.safetensors` or `model-00001-of-00002.safetensors`; other
        // safetensors files beside them (an optimizer state) are not weights.
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("model"))
        })
        .collect();
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
    let (d, v, f) = (config.hidden_size, config.vocab_size, config.intermediate_size);
    let kv = config.num_key_value_heads * config.head_dim();
    let bias = config.qkv_bias();
    let embed = src.take("model.embed_tokens.weight", &[v, d])?;
    model.embed_tokens =
        Embedding { weight: Param::from_tensor(Tensor::from_data(TensorData::new(embed, [v, d]), &src.device)) };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(DecoderLayer {
            self_attn: Attention {
                q_proj: src.linear(&format!("{p}.self_attn.q_proj"), d, d, bias)?,
                k_proj: src.linear(&format!("{p}.self_attn.k_proj"), d, kv, bias)?,
                v_proj: src.linear(&format!("{p}.self_attn.v_proj"), d, kv, bias)?,
                o_proj: src.linear(&format!("{p}.self_attn.o_proj"), d, d, false)?,
            },
            mlp: Mlp {
                gate_proj: src.linear(&format!("{p}.mlp.gate_proj"), d, f, false)?,
                up_proj: src.linear(&format!("{p}.mlp.up_proj"), d, f, false)?,
                down_proj: src.linear(&format!("{p}.mlp.down_proj"), f, d, false)?,
            },
            input_layernorm: src.norm(&format!("{p}.input_layernorm.weight"), d, config.rms_norm_eps)?,
            post_attention_layernorm: src.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                d,
                config.rms_norm_eps,
            )?,
        });
    }
    model.layers = layers;
    model.norm = src.norm("model.norm.weight", d, config.rms_norm_eps)?;
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
pub fn config_json(config: &TransformerConfig) -> String {
    let mut value = serde_json::to_value(config).expect("config serialises");
    let object = value.as_object_mut().expect("object");
    let arch = match config.model_type {
        ModelType::Qwen2 => "Qwen2ForCausalLM",
        ModelType::Llama => "LlamaForCausalLM",
    };
    object.insert("architectures".into(), Value::from(vec![arch]));
    object.insert("torch_dtype".into(), Value::from("float32"));
    if config.model_type == ModelType::Llama {
        object.insert("attention_bias".into(), Value::from(config.qkv_bias()));
    }
    serde_json::to_string_pretty(&value).expect("config serialises") + "\n"
}

/// Writes `dir/config.json`, `dir/model.safetensors` and any `extra` files (say `tokenizer.json`), atomically
/// as a whole: a crash leaves the previous contents of `dir` or the new ones.
pub fn save<B: Backend>(
    model: &Transformer<B>,
    config: &TransformerConfig,
    dir: &Path,
    extra: &[(&str, &[u8])],
) -> Result<()> {
    let tensors = named_tensors(model);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, values))| (name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data).map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| Error::checkpoint(dir, err.to_string()))?;
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let model_bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|err| Error::checkpoint(dir, err.to_string()))?;
    let config_text = config_json(config);
    let mut files: Vec<(&str, &[u8])> = vec![(CONFIG_FILE, config_text.as_bytes()), (MODEL_FILE, &model_bytes)];
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
        assert_eq!(parse_config(gpt).unwrap_err(), "model_type `gpt2` is not supported; supported: qwen2, llama");
        let yarn = ok.replace("\"default\"", "\"yarn\"");
        assert_eq!(
            parse_config(&yarn).unwrap_err(),
            "rope_parameters.rope_type `yarn` is not supported (only `default`)"
        );
        assert!(parse_config("{").unwrap_err().starts_with("invalid JSON"));
    }
}
