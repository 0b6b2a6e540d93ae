//! The training loss and its LoRA gradients in one forward pass and one hand-written backward
//! pass, without candle's autograd.
//!
//! Every differentiable op of the trainer has its own backward (`train_ops`, `train_attention`);
//! what candle's autograd added around them was bookkeeping on the calling thread alone: a zero
//! tensor and an addition for every gradient reaching a node (some 190 M floats per step for
//! SmolLM2-135M at batch 4 × 128) while the other threads waited, plus a cross-thread hand-off for
//! every parallel op. Here the gradients go from op to op directly, the few sums of two gradients
//! run in parallel, and the whole pass runs on a worker of rayon's pool.

use candle_core::backprop::GradStore;
use candle_core::{CustomOp1, CustomOp2, CustomOp3, DType, Tensor};

use super::{BaseWeight, Block, Linear, Llama, LoraWeights, Projection, on_pool};
use crate::error::Result;
use crate::train_attention::CausalAttention;
use crate::train_ops::{FrozenLinear, ProjectedCrossEntropy, RmsNorm, SwiGlu, add};

/// A projection as the training pass runs it: the frozen base and, when present, its adapter.
struct TrainLinear<'a> {
    op: FrozenLinear,
    lora: Option<&'a LoraWeights>,
}

impl<'a> TrainLinear<'a> {
    /// None where the pass does not apply: a quantized base, or an adapter with dropout (whose
    /// composite graph only candle's autograd differentiates).
    fn of(l: &'a Linear) -> Option<Self> {
        let BaseWeight::Dense(w) = &l.base else { return None };
        match &l.lora {
            None => Some(Self { op: FrozenLinear { w: w.clone(), scale: 0.0 }, lora: None }),
            Some(lora) if lora.dropout == 0.0 => Some(Self { op: FrozenLinear { w: w.clone(), scale: lora.scale }, lora: Some(lora) }),
            Some(_) => None,
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.lora {
            None => x.apply_op1_no_bwd(&self.op),
            Some(l) => x.apply_op3_no_bwd(&l.a, &l.b, &self.op),
        }
    }

    /// The input gradient; the adapter's gradients go into `grads`.
    fn backward(&self, x: &Tensor, grad: &Tensor, grads: &mut GradStore) -> candle_core::Result<Tensor> {
        // The ops' backward passes do not read their forward result: `grad` stands in for it.
        let dx = match self.lora {
            None => CustomOp1::bwd(&self.op, x, grad, grad)?,
            Some(l) => {
                let (dx, da, db) = CustomOp3::bwd(&self.op, x, &l.a, &l.b, grad, grad)?;
                for (t, g) in [(&l.a, da), (&l.b, db)] {
                    if let Some(g) = g {
                        grads.insert(t, g);
                    }
                }
                dx
            }
        };
        dx.ok_or_else(|| candle_core::Error::Msg("frozen-linear: no input gradient".into()))
    }
}

/// One decoder layer's projections, in `Projection` order.
struct LayerLinears<'a>([TrainLinear<'a>; 7]);

impl<'a> LayerLinears<'a> {
    fn of(block: &'a Block) -> Option<Self> {
        let mut out = Vec::with_capacity(7);
        for l in &block.projections {
            out.push(TrainLinear::of(l)?);
        }
        Some(Self(out.try_into().ok()?))
    }

    fn get(&self, p: Projection) -> &TrainLinear<'a> {
        &self.0[p as usize]
    }
}

/// What one layer's backward pass needs from its forward pass.
struct LayerTape {
    x: Tensor,
    h_attn: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attention: CausalAttention,
    attn: Tensor,
    x_attn: Tensor,
    h_mlp: Tensor,
    gate: Tensor,
    up: Tensor,
    act: Tensor,
}

impl Llama {
    /// `scale ×` the loss sum of [`Llama::train_loss_sum`] and its gradients with respect to the
    /// LoRA factors, keyed by the factors' tensors; None when some projection needs candle's
    /// autograd (see [`TrainLinear::of`]).
    pub(crate) fn train_loss_and_grads(&self, input: &Tensor, rows: &Tensor, targets: Vec<u32>, scale: f64) -> Result<Option<(f64, GradStore)>> {
        let Some(layers) = self.blocks.iter().map(LayerLinears::of).collect::<Option<Vec<_>>>() else { return Ok(None) };
        let Some(w_out) = self.output.frozen_dense_weight() else { return Ok(None) };
        on_pool(|| self.loss_and_grads(&layers, w_out, input, rows, targets, scale).map(Some))
    }

    fn loss_and_grads(&self, layers: &[LayerLinears], w_out: &Tensor, input: &Tensor, rows: &Tensor, targets: Vec<u32>, scale: f64) -> Result<(f64, GradStore)> {
        let c = &self.config;
        let (b, t) = input.dims2()?;
        let norm = RmsNorm { eps: c.rms_norm_eps as f32 as f64 };
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        let mut x = self.embedding.index_select(&input.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        let mut tapes = Vec::with_capacity(layers.len());
        for (block, linears) in self.blocks.iter().zip(layers) {
            let h_attn = x.apply_op2_no_bwd(&block.attn_norm, &norm)?;
            let [q, k, v] = [Projection::Q, Projection::K, Projection::V].map(|p| linears.get(p).forward(&h_attn));
            let (q, k, v) = (q?, k?, v?);
            let attention = CausalAttention::new(c.num_heads, c.num_kv_heads, cos.clone(), sin.clone())?;
            let attn = q.apply_op3_no_bwd(&k, &v, &attention)?;
            let x_attn = add(&linears.get(Projection::O).forward(&attn)?, &x)?;
            let h_mlp = x_attn.apply_op2_no_bwd(&block.ffn_norm, &norm)?;
            let gate = linears.get(Projection::Gate).forward(&h_mlp)?;
            let up = linears.get(Projection::Up).forward(&h_mlp)?;
            let act = gate.apply_op2_no_bwd(&up, &SwiGlu)?;
            let next = add(&linears.get(Projection::Down).forward(&act)?, &x_attn)?;
            tapes.push(LayerTape { x, h_attn, q, k, v, attention, attn, x_attn, h_mlp, gate, up, act });
            x = next;
        }
        let hidden = x.apply_op2_no_bwd(&self.norm, &norm)?;
        let h = c.hidden_size;
        let picked = hidden.reshape((b * t, h))?.index_select(rows, 0)?.contiguous()?;
        let loss_op = ProjectedCrossEntropy::new(w_out.clone(), targets);
        let loss = picked.apply_op1_no_bwd(&loss_op)?;
        let upstream = Tensor::new(scale, loss.device())?.to_dtype(loss.dtype())?;
        let d_picked = CustomOp1::bwd(&loss_op, &picked, &loss, &upstream)?.expect("the loss has an input gradient");
        let d_hidden = scatter_rows(&d_picked, rows, b * t)?.reshape((b, t, h))?;
        let mut dx = norm_backward(&norm, &x, &self.norm, &d_hidden)?;
        let mut grads = GradStore::default();
        // Layers in reverse, each tape dropped once used.
        for ((block, linears), tape) in self.blocks.iter().zip(layers).zip(tapes).rev() {
            dx = layer_backward(block, linears, tape, &norm, &dx, &mut grads)?;
        }
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * scale, grads))
    }
}

/// The gradient of a layer's input from that of its output `dy`.
fn layer_backward(block: &Block, linears: &LayerLinears, tape: LayerTape, norm: &RmsNorm, dy: &Tensor, grads: &mut GradStore) -> candle_core::Result<Tensor> {
    let d_act = linears.get(Projection::Down).backward(&tape.act, dy, grads)?;
    let (d_gate, d_up) = CustomOp2::bwd(&SwiGlu, &tape.gate, &tape.up, dy, &d_act)?;
    let (d_gate, d_up) = (d_gate.expect("swiglu gate gradient"), d_up.expect("swiglu up gradient"));
    let d_h_mlp = add(&linears.get(Projection::Gate).backward(&tape.h_mlp, &d_gate, grads)?, &linears.get(Projection::Up).backward(&tape.h_mlp, &d_up, grads)?)?;
    let d_x_attn = add(&norm_backward(norm, &tape.x_attn, &block.ffn_norm, &d_h_mlp)?, dy)?;
    let d_attn = linears.get(Projection::O).backward(&tape.attn, &d_x_attn, grads)?;
    let (dq, dk, dv) = CustomOp3::bwd(&tape.attention, &tape.q, &tape.k, &tape.v, &d_attn, &d_attn)?;
    let (dq, dk, dv) = (dq.expect("dq"), dk.expect("dk"), dv.expect("dv"));
    let d_h_attn = add(
        &add(&linears.get(Projection::Q).backward(&tape.h_attn, &dq, grads)?, &linears.get(Projection::K).backward(&tape.h_attn, &dk, grads)?)?,
        &linears.get(Projection::V).backward(&tape.h_attn, &dv, grads)?,
    )?;
    add(&norm_backward(norm, &tape.x, &block.attn_norm, &d_h_attn)?, &d_x_attn)
}

fn norm_backward(norm: &RmsNorm, x: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
    let (dx, _) = CustomOp2::bwd(norm, x, w, grad, grad)?;
    dx.ok_or_else(|| candle_core::Error::Msg("rms-norm: no input gradient".into()))
}

/// `[total, h]`, zero but for rows `rows[i]`, which hold row `i` of `picked` (the rows are
/// distinct positions).
fn scatter_rows(picked: &Tensor, rows: &Tensor, total: usize) -> candle_core::Result<Tensor> {
    let h = picked.dim(1)?;
    Tensor::zeros((total, h), picked.dtype(), picked.device())?.index_add(rows, picked, 0)
}
