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
use crate::sampling::Rng;
use crate::train_attention::CausalAttention;
use crate::train_ops::{FrozenLinear, ProjectedCrossEntropy, RmsNorm, SwiGlu, add};

/// A projection as the training pass runs it: the frozen base and, when present, its adapter.
struct TrainLinear<'a> {
    op: FrozenLinear,
    lora: Option<&'a LoraWeights>,
}

impl<'a> TrainLinear<'a> {
    /// None where the pass does not apply: a quantized base.
    fn of(l: &'a Linear) -> Option<Self> {
        let BaseWeight::Dense(w) = &l.base else { return None };
        let op = FrozenLinear { w: w.clone(), scale: l.lora.as_ref().map_or(0.0, |lora| lora.scale), mask: None };
        Some(Self { op, lora: l.lora.as_ref() })
    }

    /// The output, and the dropout mask the adapter's input got, drawn from `rng` (in the order
    /// candle's autograd path draws them: projection by projection, as the layer runs them).
    fn forward(&self, x: &Tensor, rng: &mut Rng) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        match self.lora {
            None => Ok((x.apply_op1_no_bwd(&self.op)?, None)),
            Some(l) if l.dropout > 0.0 => {
                let mask = crate::train::dropout_mask(rng, x, l.dropout)?;
                let op = FrozenLinear { mask: Some(mask.clone()), ..self.op.clone() };
                Ok((x.apply_op3_no_bwd(&l.a, &l.b, &op)?, Some(mask)))
            }
            Some(l) => Ok((x.apply_op3_no_bwd(&l.a, &l.b, &self.op)?, None)),
        }
    }

    /// The input gradient, given the forward pass's dropout mask; the adapter's gradients go
    /// into `grads`.
    fn backward(&self, x: &Tensor, mask: Option<&Tensor>, grad: &Tensor, grads: &mut GradStore) -> candle_core::Result<Tensor> {
        let masked;
        let op = match mask {
            None => &self.op,
            Some(mask) => {
                masked = FrozenLinear { mask: Some(mask.clone()), ..self.op.clone() };
                &masked
            }
        };
        // The ops' backward passes do not read their forward result: `grad` stands in for it.
        let dx = match self.lora {
            None => CustomOp1::bwd(op, x, grad, grad)?,
            Some(l) => {
                let (dx, da, db) = CustomOp3::bwd(op, x, &l.a, &l.b, grad, grad)?;
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

    /// Runs projection `p` on `x`, keeping its dropout mask in `masks`.
    fn forward(&self, p: Projection, x: &Tensor, rng: &mut Rng, masks: &mut Masks) -> candle_core::Result<Tensor> {
        let (y, mask) = self.get(p).forward(x, rng)?;
        masks[p as usize] = mask;
        Ok(y)
    }

    /// The gradient of projection `p`'s input (see [`TrainLinear::backward`]).
    fn backward(&self, p: Projection, tape: &LayerTape, x: &Tensor, grad: &Tensor, grads: &mut GradStore) -> candle_core::Result<Tensor> {
        self.get(p).backward(x, tape.masks[p as usize].as_ref(), grad, grads)
    }
}

/// A layer's dropout masks, in `Projection` order (None without dropout).
type Masks = [Option<Tensor>; 7];

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
    masks: Masks,
}

impl Llama {
    /// `scale ×` the loss sum of [`Llama::train_loss_sum`] and its gradients with respect to the
    /// LoRA factors, keyed by the factors' tensors; None when some projection needs candle's
    /// autograd (see [`TrainLinear::of`]). Dropout masks come from this thread's generator.
    pub(crate) fn train_loss_and_grads(&self, input: &Tensor, rows: &Tensor, targets: Vec<u32>, scale: f64) -> Result<Option<(f64, GradStore)>> {
        let Some(layers) = self.blocks.iter().map(LayerLinears::of).collect::<Option<Vec<_>>>() else { return Ok(None) };
        let Some(w_out) = self.output.frozen_dense_weight() else { return Ok(None) };
        crate::train::with_dropout_rng(|rng| on_pool(|| self.loss_and_grads(&layers, w_out, input, rows, targets, scale, rng).map(Some)))
    }

    #[allow(clippy::too_many_arguments)]
    fn loss_and_grads(&self, layers: &[LayerLinears], w_out: &Tensor, input: &Tensor, rows: &Tensor, targets: Vec<u32>, scale: f64, rng: &mut Rng) -> Result<(f64, GradStore)> {
        let c = &self.config;
        let (b, t) = input.dims2()?;
        let norm = RmsNorm { eps: c.rms_norm_eps as f32 as f64 };
        let (cos, sin) = (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?);
        let mut x = self.embedding.index_select(&input.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        let mut tapes = Vec::with_capacity(layers.len());
        for (block, linears) in self.blocks.iter().zip(layers) {
            let mut masks = Masks::default();
            let h_attn = x.apply_op2_no_bwd(&block.attn_norm, &norm)?;
            let q = linears.forward(Projection::Q, &h_attn, rng, &mut masks)?;
            let k = linears.forward(Projection::K, &h_attn, rng, &mut masks)?;
            let v = linears.forward(Projection::V, &h_attn, rng, &mut masks)?;
            let attention = CausalAttention::new(c.num_heads, c.num_kv_heads, cos.clone(), sin.clone())?;
            let attn = q.apply_op3_no_bwd(&k, &v, &attention)?;
            let x_attn = add(&linears.forward(Projection::O, &attn, rng, &mut masks)?, &x)?;
            let h_mlp = x_attn.apply_op2_no_bwd(&block.ffn_norm, &norm)?;
            let gate = linears.forward(Projection::Gate, &h_mlp, rng, &mut masks)?;
            let up = linears.forward(Projection::Up, &h_mlp, rng, &mut masks)?;
            let act = gate.apply_op2_no_bwd(&up, &SwiGlu)?;
            let next = add(&linears.forward(Projection::Down, &act, rng, &mut masks)?, &x_attn)?;
            tapes.push(LayerTape { x, h_attn, q, k, v, attention, attn, x_attn, h_mlp, gate, up, act, masks });
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
    let d_act = linears.backward(Projection::Down, &tape, &tape.act, dy, grads)?;
    let (d_gate, d_up) = CustomOp2::bwd(&SwiGlu, &tape.gate, &tape.up, dy, &d_act)?;
    let (d_gate, d_up) = (d_gate.expect("swiglu gate gradient"), d_up.expect("swiglu up gradient"));
    let d_h_mlp = add(&linears.backward(Projection::Gate, &tape, &tape.h_mlp, &d_gate, grads)?, &linears.backward(Projection::Up, &tape, &tape.h_mlp, &d_up, grads)?)?;
    let d_x_attn = add(&norm_backward(norm, &tape.x_attn, &block.ffn_norm, &d_h_mlp)?, dy)?;
    let d_attn = linears.backward(Projection::O, &tape, &tape.attn, &d_x_attn, grads)?;
    let (dq, dk, dv) = CustomOp3::bwd(&tape.attention, &tape.q, &tape.k, &tape.v, &d_attn, &d_attn)?;
    let (dq, dk, dv) = (dq.expect("dq"), dk.expect("dk"), dv.expect("dv"));
    let d_h_attn = add(
        &add(&linears.backward(Projection::Q, &tape, &tape.h_attn, &dq, grads)?, &linears.backward(Projection::K, &tape, &tape.h_attn, &dk, grads)?)?,
        &linears.backward(Projection::V, &tape, &tape.h_attn, &dv, grads)?,
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
