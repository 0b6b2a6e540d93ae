//! The llama graph over GGUF tensors. Weights stay in GGUF row order, so rotary embeddings use
//! the interleaved (adjacent pairs) convention that llama.cpp's q/k permutation expects.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::kernels::{HostLora, QuantWeight};
use crate::train_ops::FrozenLinear;

mod train_pass;

/// How base weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the GGUF; matmuls quantize activations to 8 bits like llama.cpp does.
    /// Fast and small; the default for generation.
    #[default]
    Quantized,
    /// Dequantized to f32: what PyTorch computes on the same file, and what training needs.
    F32,
}

/// The seven projections LoRA can target, named as Hugging Face / PEFT name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Projection {
    #[serde(rename = "q_proj")]
    Q,
    #[serde(rename = "k_proj")]
    K,
    #[serde(rename = "v_proj")]
    V,
    #[serde(rename = "o_proj")]
    O,
    #[serde(rename = "gate_proj")]
    Gate,
    #[serde(rename = "up_proj")]
    Up,
    #[serde(rename = "down_proj")]
    Down,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::O,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    pub fn hf_name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
            Projection::Gate => "gate_proj",
            Projection::Up => "up_proj",
            Projection::Down => "down_proj",
        }
    }

    /// Module path inside a decoder layer, as PEFT writes it.
    pub fn hf_path(self) -> &'static str {
        match self {
            Projection::Q => "self_attn.q_proj",
            Projection::K => "self_attn.k_proj",
            Projection::V => "self_attn.v_proj",
            Projection::O => "self_attn.o_proj",
            Projection::Gate => "mlp.gate_proj",
            Projection::Up => "mlp.up_proj",
            Projection::Down => "mlp.down_proj",
        }
    }

    pub fn from_hf_name(name: &str) -> Option<Self> {
        Projection::ALL.into_iter().find(|p| p.hf_name() == name)
    }

    fn gguf_name(self) -> &'static str {
        match self {
            Projection::Q => "attn_q",
            Projection::K => "attn_k",
            Projection::V => "attn_v",
            Projection::O => "attn_output",
            Projection::Gate => "ffn_gate",
            Projection::Up => "ffn_up",
            Projection::Down => "ffn_down",
        }
    }
}

/// A low-rank update `scale · B·A` kept beside a frozen base weight.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`, rows in GGUF order for q/k.
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f32,
}

#[derive(Debug, Clone)]
enum BaseWeight {
    /// Q4_1 / Q8_0 through the engine's own kernels (see `kernels`).
    Kernel(QuantWeight),
    Quantized(QMatMul),
    Dense(Tensor),
}

#[derive(Debug, Clone)]
pub(crate) struct Linear {
    base: BaseWeight,
    lora: Option<LoraWeights>,
    /// `lora` copied out for the quantized kernels; reset whenever `lora` changes.
    host_lora: OnceLock<Arc<HostLora>>,
    out_features: usize,
    in_features: usize,
}

fn dense_matmul(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let in_f = *dims.last().unwrap();
    let rows = x.elem_count() / in_f;
    let y = x.reshape((rows, in_f))?.matmul(&w.t()?)?;
    let mut out_dims = dims;
    *out_dims.last_mut().unwrap() = w.dim(0)?;
    y.reshape(out_dims)
}

impl Linear {
    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = match &self.base {
            BaseWeight::Kernel(q) if !train => return q.forward(x, self.host_lora()?.as_deref()),
            BaseWeight::Kernel(q) => q.forward(x, None)?,
            BaseWeight::Quantized(q) => q.forward(x)?,
            BaseWeight::Dense(w) if train => {
                let x = x.contiguous()?;
                match &self.lora {
                    // Base and LoRA in one op whose backward skips the frozen weight's gradient.
                    Some(l) if l.dropout == 0.0 => {
                        let op = FrozenLinear { w: w.clone(), scale: l.scale, mask: None };
                        return x.apply_op3(&l.a, &l.b, op);
                    }
                    _ => x.apply_op1(FrozenLinear { w: w.clone(), scale: 0.0, mask: None })?,
                }
            }
            BaseWeight::Dense(w) => dense_matmul(x, w)?,
        };
        match &self.lora {
            None => Ok(y),
            Some(l) => {
                let x = if train && l.dropout > 0.0 {
                    crate::train::dropout(x, l.dropout)?
                } else {
                    x.clone()
                };
                let delta = dense_matmul(&dense_matmul(&x, &l.a)?, &l.b)?;
                y + (delta * l.scale)?
            }
        }
    }

    /// Several projections of the same input. Quantized kernels share one activation
    /// quantization and one parallel pass; the results are those of separate `forward` calls.
    fn forward_shared<const N: usize>(linears: [&Linear; N], x: &Tensor, train: bool) -> candle_core::Result<[Tensor; N]> {
        if !train {
            let mut kernels = Vec::with_capacity(N);
            for l in linears {
                if let BaseWeight::Kernel(q) = &l.base {
                    kernels.push((q, l.host_lora()?));
                }
            }
            if kernels.len() == N {
                let weights: [(&QuantWeight, Option<&HostLora>); N] =
                    std::array::from_fn(|i| (kernels[i].0, kernels[i].1.as_deref()));
                return crate::kernels::forward_shared(weights, x);
            }
        }
        let ys = linears.map(|l| l.forward(x, train));
        let mut out = Vec::with_capacity(N);
        for y in ys {
            out.push(y?);
        }
        Ok(out.try_into().expect("one output per projection"))
    }

    fn host_lora(&self) -> candle_core::Result<Option<Arc<HostLora>>> {
        let Some(l) = &self.lora else { return Ok(None) };
        if let Some(h) = self.host_lora.get() {
            return Ok(Some(h.clone()));
        }
        let h = Arc::new(HostLora {
            a: l.a.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            b: l.b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            r: l.a.dim(0)?,
            scale: l.scale as f32,
        });
        Ok(Some(self.host_lora.get_or_init(|| h).clone()))
    }

    pub(crate) fn set_lora(&mut self, lora: Option<LoraWeights>) {
        self.lora = lora;
        self.host_lora = OnceLock::new();
    }

    /// The weight of a dense projection without an adapter.
    pub(crate) fn frozen_dense_weight(&self) -> Option<&Tensor> {
        match (&self.base, &self.lora) {
            (BaseWeight::Dense(w), None) => Some(w),
            _ => None,
        }
    }

    pub(crate) fn shape(&self) -> (usize, usize) {
        (self.out_features, self.in_features)
    }

    /// Folds the LoRA update into a dense base weight; quantized bases keep it separate because
    /// requantizing would lose most of a small update.
    fn merge_lora(&mut self) -> Result<bool> {
        let (BaseWeight::Dense(w), Some(l)) = (&self.base, &self.lora) else {
            return Ok(false);
        };
        let merged = (w + (l.b.matmul(&l.a)? * l.scale)?)?;
        self.base = BaseWeight::Dense(merged);
        self.set_lora(None);
        Ok(true)
    }

    pub(crate) fn dense_weight(&self) -> Result<Tensor> {
        match &self.base {
            BaseWeight::Dense(w) => Ok(w.to_dtype(DType::F32)?),
            BaseWeight::Kernel(q) => Ok(q.qtensor().dequantize(&Device::Cpu)?),
            BaseWeight::Quantized(QMatMul::QTensor(q)) => Ok(q.dequantize(&Device::Cpu)?),
            BaseWeight::Quantized(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                Ok(w.to_dtype(DType::F32)?)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Block {
    attn_norm: Tensor,
    pub(crate) projections: [Linear; 7],
    ffn_norm: Tensor,
}

impl Block {
    pub(crate) fn proj(&self, p: Projection) -> &Linear {
        &self.projections[p as usize]
    }

    pub(crate) fn proj_mut(&mut self, p: Projection) -> &mut Linear {
        &mut self.projections[p as usize]
    }
}

/// Key/value tensors of the positions seen so far, one entry per layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// `[b, kv_heads, positions, head_dim]` per layer (f32 inference).
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `[positions, kv_heads, head_dim]` per layer, rounded to f16 as llama.cpp stores them
    /// (quantized inference): a new position is appended, never copied with the rest.
    rows: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A llama-family decoder.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: ModelConfig,
    pub format: WeightFormat,
    embedding: Tensor,
    pub(crate) blocks: Vec<Block>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// Which kernels to use: the fused ones have no gradients, the composite ones do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Infer,
    Train,
}

impl Llama {
    pub fn load(path: &Path, format: WeightFormat) -> Result<(Self, Content)> {
        let mut file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let content = Content::read(&mut file).map_err(|e| {
            EngineError::Metadata(format!("{}: not a readable GGUF file: {e}", path.display()))
        })?;
        let config = ModelConfig::from_gguf(&content)?;
        let dev = Device::Cpu;
        let mut tensor = |name: &str| -> Result<QTensor> {
            content
                .tensor(&mut file, name, &dev)
                .map_err(|e| EngineError::Metadata(format!("tensor {name}: {e}")))
        };
        let linear = |q: QTensor| -> Result<Linear> {
            let (out_features, in_features) = q.shape().dims2()?;
            let base = match format {
                WeightFormat::Quantized => match QuantWeight::new(q) {
                    Ok(w) => BaseWeight::Kernel(w),
                    Err(q) => BaseWeight::Quantized(QMatMul::from_qtensor(q)?),
                },
                WeightFormat::F32 => BaseWeight::Dense(q.dequantize(&dev)?),
            };
            Ok(Linear { base, lora: None, host_lora: OnceLock::new(), out_features, in_features })
        };
        let token_embd = tensor("token_embd.weight")?;
        let embedding = token_embd.dequantize(&dev)?;
        let output = match (config.tie_word_embeddings, format) {
            (true, WeightFormat::F32) => {
                let (out_features, in_features) = embedding.dims2()?;
                Linear {
                    base: BaseWeight::Dense(embedding.clone()),
                    lora: None,
                    host_lora: OnceLock::new(),
                    out_features,
                    in_features,
                }
            }
            (true, WeightFormat::Quantized) => linear(token_embd)?,
            (false, _) => linear(tensor("output.weight")?)?,
        };
        let norm = tensor("output_norm.weight")?.dequantize(&dev)?;
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let mut projections = Vec::with_capacity(7);
            for p in Projection::ALL {
                projections.push(linear(tensor(&format!("blk.{i}.{}.weight", p.gguf_name()))?)?);
            }
            blocks.push(Block {
                attn_norm: tensor(&format!("blk.{i}.attn_norm.weight"))?.dequantize(&dev)?,
                projections: projections.try_into().expect("seven projections"),
                ffn_norm: tensor(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(&dev)?,
            });
        }
        let (cos, sin) = rope_tables(&config, format == WeightFormat::Quantized)?;
        let model = Self { config, format, embedding, blocks, norm, output, cos, sin };
        model.check_shapes()?;
        Ok((model, content))
    }

    /// A randomly initialised model with the given shape, in f32 (tests and gradient checks).
    pub fn random(config: ModelConfig, seed: u64) -> Result<Self> {
        let dev = Device::Cpu;
        let mut rng = crate::sampling::Rng::new(seed);
        let mut rand = |shape: (usize, usize), std: f32| -> Result<Tensor> {
            let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| rng.normal() * std).collect();
            Ok(Tensor::from_vec(v, shape, &dev)?)
        };
        let h = config.hidden_size;
        let q_out = config.num_heads * config.head_dim;
        let kv_out = config.num_kv_heads * config.head_dim;
        let dense = |w: Tensor| -> Linear {
            let (o, i) = w.dims2().expect("2d");
            Linear {
                base: BaseWeight::Dense(w),
                lora: None,
                host_lora: OnceLock::new(),
                out_features: o,
                in_features: i,
            }
        };
        let mut blocks = Vec::new();
        for _ in 0..config.num_layers {
            let shapes = [
                (q_out, h),
                (kv_out, h),
                (kv_out, h),
                (h, q_out),
                (config.intermediate_size, h),
                (config.intermediate_size, h),
                (h, config.intermediate_size),
            ];
            let mut projections = Vec::new();
            for s in shapes {
                projections.push(dense(rand(s, 0.2)?));
            }
            blocks.push(Block {
                attn_norm: (Tensor::ones(h, DType::F32, &dev)? + rand((1, h), 0.1)?.flatten_all()?)?,
                projections: projections.try_into().expect("seven projections"),
                ffn_norm: (Tensor::ones(h, DType::F32, &dev)? + rand((1, h), 0.1)?.flatten_all()?)?,
            });
        }
        let embedding = rand((config.vocab_size, h), 1.0)?;
        let output = dense(embedding.clone());
        let (cos, sin) = rope_tables(&config, false)?;
        let model = Self {
            norm: Tensor::ones(h, DType::F32, &dev)?,
            config,
            format: WeightFormat::F32,
            embedding,
            blocks,
            output,
            cos,
            sin,
        };
        model.check_shapes()?;
        Ok(model)
    }

    fn check_shapes(&self) -> Result<()> {
        let c = &self.config;
        let q_out = c.num_heads * c.head_dim;
        let kv_out = c.num_kv_heads * c.head_dim;
        let expect = [
            (q_out, c.hidden_size),
            (kv_out, c.hidden_size),
            (kv_out, c.hidden_size),
            (c.hidden_size, q_out),
            (c.intermediate_size, c.hidden_size),
            (c.intermediate_size, c.hidden_size),
            (c.hidden_size, c.intermediate_size),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            for (p, want) in Projection::ALL.iter().zip(expect) {
                if b.proj(*p).shape() != want {
                    return Err(EngineError::Metadata(format!(
                        "layer {i} {}: shape {:?}, metadata implies {want:?}",
                        p.hf_name(),
                        b.proj(*p).shape()
                    )));
                }
            }
        }
        if self.embedding.dims2()? != (c.vocab_size, c.hidden_size) {
            return Err(EngineError::Metadata(format!(
                "token_embd shape {:?} does not match vocab {} × hidden {}",
                self.embedding.shape(),
                c.vocab_size,
                c.hidden_size
            )));
        }
        Ok(())
    }

    pub fn set_lora(&mut self, layer: usize, p: Projection, lora: Option<LoraWeights>) {
        self.blocks[layer].proj_mut(p).set_lora(lora);
    }

    pub fn lora(&self, layer: usize, p: Projection) -> Option<&LoraWeights> {
        self.blocks[layer].proj(p).lora.as_ref()
    }

    pub fn projection_shape(&self, layer: usize, p: Projection) -> (usize, usize) {
        self.blocks[layer].proj(p).shape()
    }

    /// Folds every LoRA update into dense weights. Returns how many were merged; quantized
    /// weights keep theirs unmerged.
    pub fn merge_lora(&mut self) -> Result<usize> {
        let mut n = 0;
        for b in &mut self.blocks {
            for l in &mut b.projections {
                n += l.merge_lora()? as usize;
            }
        }
        Ok(n)
    }

    pub fn dtype(&self) -> DType {
        self.embedding.dtype()
    }

    /// Copy in another float type (f64 serves gradient checks). Requires dense weights.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let mut m = self.to_f32()?;
        let conv = |t: &mut Tensor| -> candle_core::Result<()> {
            *t = t.to_dtype(dtype)?;
            Ok(())
        };
        conv(&mut m.embedding)?;
        conv(&mut m.norm)?;
        conv(&mut m.cos)?;
        conv(&mut m.sin)?;
        let lin = |l: &mut Linear| -> candle_core::Result<()> {
            if let BaseWeight::Dense(w) = &mut l.base {
                *w = w.to_dtype(dtype)?;
            }
            if let Some(lora) = &mut l.lora {
                lora.a = lora.a.to_dtype(dtype)?;
                lora.b = lora.b.to_dtype(dtype)?;
            }
            l.host_lora = OnceLock::new();
            Ok(())
        };
        lin(&mut m.output)?;
        for b in &mut m.blocks {
            conv(&mut b.attn_norm)?;
            conv(&mut b.ffn_norm)?;
            for l in &mut b.projections {
                lin(l)?;
            }
        }
        Ok(m)
    }

    /// Copy of this model with every projection dequantized to f32 (the LoRA trainer's base).
    pub fn to_f32(&self) -> Result<Self> {
        let mut m = self.clone();
        m.format = WeightFormat::F32;
        for b in &mut m.blocks {
            for l in &mut b.projections {
                l.base = BaseWeight::Dense(l.dense_weight()?);
            }
        }
        // Tied output weights are the embedding matrix itself: share it rather than copy it.
        m.output.base = if m.config.tie_word_embeddings && m.embedding.dtype() == DType::F32 {
            BaseWeight::Dense(m.embedding.clone())
        } else {
            BaseWeight::Dense(m.output.dense_weight()?)
        };
        Ok(m)
    }

    /// Logits at the last position of `ids`, continuing from `cache`.
    pub fn forward_last(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(EngineError::InvalidParameter {
                name: "ids",
                message: "empty input".into(),
            });
        }
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        on_pool(|| {
            let hidden = self.hidden_states(&input, Some(cache), Mode::Infer)?;
            let t = hidden.dim(1)?;
            let last = hidden.narrow(1, t - 1, 1)?;
            let logits = self.output.forward(&last, false)?;
            Ok(logits.flatten_all()?)
        })
    }

    /// Logits `[seq, vocab]` at every position of `ids`, without a cache.
    pub fn logits_all(&self, ids: &[u32]) -> Result<Tensor> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        on_pool(|| Ok(self.forward_all(&input, Mode::Infer)?.squeeze(0)?))
    }

    /// Sum of the training loss `−log p(target)` at the flattened positions `rows` (indices
    /// into `batch × seq`): the output projection is the costliest matmul, and only positions
    /// followed by a trainable token need it.
    pub(crate) fn train_loss_sum(&self, input: &Tensor, rows: &Tensor, targets: Vec<u32>) -> Result<Tensor> {
        let hidden = self.hidden_states(input, None, Mode::Train)?;
        let (b, t, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, h))?.index_select(rows, 0)?.contiguous()?;
        let w = self.output.frozen_dense_weight().ok_or_else(|| EngineError::InvalidParameter {
            name: "model",
            message: "training needs a dense output projection without an adapter".into(),
        })?;
        Ok(picked.apply_op1(crate::train_ops::ProjectedCrossEntropy::new(w.clone(), targets))?)
    }

    /// Logits at every position of a `[batch, seq]` input, with differentiable kernels when
    /// `train` is set.
    pub(crate) fn forward_all(&self, input: &Tensor, mode: Mode) -> Result<Tensor> {
        let hidden = self.hidden_states(input, None, mode)?;
        Ok(self.output.forward(&hidden, mode == Mode::Train)?)
    }

    fn hidden_states(
        &self,
        input: &Tensor,
        mut cache: Option<&mut KvCache>,
        mode: Mode,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = input.dims2()?;
        let offset = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if offset + t > c.context_length {
            return Err(EngineError::InvalidParameter {
                name: "max_tokens",
                message: format!("{} positions exceed the context length {}", offset + t, c.context_length),
            });
        }
        if let Some(cache) = cache.as_mut() {
            cache.layers.resize(self.blocks.len(), None);
            cache.rows.resize(self.blocks.len(), Default::default());
        }
        let mut x = self.embedding.index_select(&input.flatten_all()?, 0)?.reshape((
            b,
            t,
            c.hidden_size,
        ))?;
        let train = mode == Mode::Train;
        // Quantized inference follows llama.cpp's arithmetic step for step (see `ggml`).
        let ggml = mode == Mode::Infer && self.format == WeightFormat::Quantized;
        if ggml && cache.is_some() && b != 1 {
            return Err(EngineError::InvalidParameter { name: "input", message: "a KV cache holds one sequence".into() });
        }
        let mask = if t > 1 && !ggml && !train { Some(causal_mask(t, offset)?.to_dtype(x.dtype())?) } else { None };
        let cos = self.cos.narrow(0, offset, t)?;
        let sin = self.sin.narrow(0, offset, t)?;
        let rope_rows = if ggml {
            (cos.flatten_all()?.to_vec1::<f32>()?, sin.flatten_all()?.to_vec1::<f32>()?)
        } else {
            Default::default()
        };
        let eps = c.rms_norm_eps as f32;
        let norm = |x: &Tensor, w: &Tensor| {
            if ggml { crate::ggml::rms_norm(x, w, eps) } else { rms_norm(x, w, eps, mode) }
        };
        for (i, block) in self.blocks.iter().enumerate() {
            let residual = x.clone();
            let h = norm(&x, &block.attn_norm)?;
            let [q, k, v] = Linear::forward_shared(
                [block.proj(Projection::Q), block.proj(Projection::K), block.proj(Projection::V)],
                &h,
                train,
            )?;
            let attn = if ggml {
                let host = |t: Tensor| t.flatten_all()?.to_vec1::<f32>();
                let (mut q, mut k, mut v) = (host(q)?, host(k)?, host(v)?);
                crate::ggml::rope(&mut q, t, c.num_heads, c.head_dim, &rope_rows.0, &rope_rows.1);
                crate::ggml::rope(&mut k, t, c.num_kv_heads, c.head_dim, &rope_rows.0, &rope_rows.1);
                for x in [&mut q, &mut k, &mut v] {
                    crate::ggml::round_f16(x);
                }
                let shape = crate::ggml::AttentionShape {
                    b,
                    t,
                    s: offset + t,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                    offset,
                };
                let out = match cache.as_mut() {
                    Some(cache) => {
                        let (ck, cv) = &mut cache.rows[i];
                        ck.extend_from_slice(&k);
                        cv.extend_from_slice(&v);
                        crate::ggml::attention(&q, ck, cv, shape)?
                    }
                    None => crate::ggml::attention(&q, &k, &v, crate::ggml::AttentionShape { s: t, ..shape })?,
                };
                Tensor::from_vec(out, (b, t, c.num_heads * c.head_dim), &Device::Cpu)?
            } else if train {
                // RoPE, grouped heads and the causal mask in one op over the projections' layout.
                let op = crate::train_attention::CausalAttention::new(c.num_heads, c.num_kv_heads, cos.clone(), sin.clone())?;
                q.apply_op3(&k, &v, op)?
            } else {
                let q = q.reshape((b, t, c.num_heads, c.head_dim))?.transpose(1, 2)?.contiguous()?;
                let k = k.reshape((b, t, c.num_kv_heads, c.head_dim))?.transpose(1, 2)?.contiguous()?;
                let v = v.reshape((b, t, c.num_kv_heads, c.head_dim))?.transpose(1, 2)?.contiguous()?;
                let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?;
                let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?;
                let (k, v) = match cache.as_mut() {
                    Some(cache) => {
                        let (k, v) = match &cache.layers[i] {
                            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                            None => (k, v),
                        };
                        cache.layers[i] = Some((k.clone(), v.clone()));
                        (k, v)
                    }
                    None => (k, v),
                };
                let attn = attention(&q, &k, &v, mask.as_ref(), c)?;
                attn.transpose(1, 2)?.reshape((b, t, c.num_heads * c.head_dim))?
            };
            let x_attn = (block.proj(Projection::O).forward(&attn, train)? + residual)?;
            let h = norm(&x_attn, &block.ffn_norm)?;
            let [gate, up] =
                Linear::forward_shared([block.proj(Projection::Gate), block.proj(Projection::Up)], &h, train)?;
            let act = if ggml {
                crate::ggml::swiglu(&gate, &up)?
            } else if train {
                gate.apply_op2(&up, crate::train_ops::SwiGlu)?
            } else {
                (candle_nn::ops::silu(&gate)? * up)?
            };
            let mlp = block.proj(Projection::Down).forward(&act, train)?;
            x = (mlp + x_attn)?;
        }
        if let Some(cache) = cache {
            cache.len = offset + t;
        }
        Ok(norm(&x, &self.norm)?)
    }
}

/// Runs a forward pass on a worker of rayon's pool. Called from outside the pool, each of the
/// pass's ~120 parallel matmuls would otherwise be handed to the pool and waited for, a
/// cross-thread wake-up each way; from a worker, the calling thread takes its share of the work
/// and the others steal the rest.
fn on_pool<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() > 1 && rayon::current_thread_index().is_none() {
        rayon::scope(|_| pass())
    } else {
        pass()
    }
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, mode: Mode) -> candle_core::Result<Tensor> {
    match mode {
        Mode::Infer => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps),
        Mode::Train => x.contiguous()?.apply_op2(w, crate::train_ops::RmsNorm { eps: eps as f64 }),
    }
}

/// Inference attention over `[b, heads, t, d]` (training uses `train_attention`).
fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, c: &ModelConfig) -> candle_core::Result<Tensor> {
    let rep = c.num_heads / c.num_kv_heads;
    let (k, v) = if rep > 1 { (repeat_kv(k, rep)?, repeat_kv(v, rep)?) } else { (k.clone(), v.clone()) };
    let scale = 1.0 / (c.head_dim as f64).sqrt();
    let mut scores = (q.matmul(&k.t()?)? * scale)?;
    if let Some(m) = mask {
        scores = scores.broadcast_add(m)?;
    }
    candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v.contiguous()?)
}

fn repeat_kv(x: &Tensor, rep: usize) -> candle_core::Result<Tensor> {
    let (b, n_kv, s, hd) = x.dims4()?;
    Tensor::cat(&vec![x; rep], 2)?.reshape((b, n_kv * rep, s, hd))
}

fn causal_mask(t: usize, offset: usize) -> candle_core::Result<Tensor> {
    let s = t + offset;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..s).map(move |j| if j > i + offset { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, s), &Device::Cpu)
}

/// Rotary cos/sin tables `[context, head_dim/2]`; `ggml` builds them the way llama.cpp does.
fn rope_tables(c: &ModelConfig, ggml: bool) -> Result<(Tensor, Tensor)> {
    let half = c.head_dim / 2;
    if ggml {
        let (cos, sin) = crate::ggml::rope_tables(c);
        let n = c.context_length;
        return Ok((Tensor::from_vec(cos, (n, half), &Device::Cpu)?, Tensor::from_vec(sin, (n, half), &Device::Cpu)?));
    }
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / c.rope_theta.powf(2.0 * i as f32 / c.head_dim as f32))
        .collect();
    let n = c.context_length;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (n, half), &Device::Cpu)?,
    ))
}

/// Reorders the rows of a q/k projection (or LoRA B) from Hugging Face's half-split head layout
/// to GGUF's interleaved one; llama.cpp's converter applies this permutation.
pub fn permute_hf_to_gguf(w: &Tensor, n_heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_heads;
    w.reshape((n_heads, 2, hd / 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
}

/// Inverse of [`permute_hf_to_gguf`].
pub fn permute_gguf_to_hf(w: &Tensor, n_heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / n_heads;
    w.reshape((n_heads, hd / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))
}
