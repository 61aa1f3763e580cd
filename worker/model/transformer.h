// The decoder-only transformer (GPT-2, Llama, phi-3 families) as explicit layers with
// forward/backward over kernels/. Parameters live in one flat buffer described by a
// ParamTable with Hugging Face names; the model reads them through a ParamSource, so ZeRO-3
// can gather a unit just before use and reduce its gradients right after — the model itself
// never calls a communicator.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "worker/core/device.h"
#include "worker/core/param_table.h"
#include "worker/model/config.h"
#include "worker/model/ms_poe.h"
#include "worker/model/quantized.h"
#include "worker/model/sequence.h"

namespace tern::model {

// Where the model finds parameters and puts gradients, one unit at a time
// (unit 0 = embeddings, 1..L = blocks, L+1 = final norm and untied head).
template <typename T>
class ParamSource {
 public:
  virtual ~ParamSource() = default;
  // Parameters of `unit`, laid out as in the ParamTable starting at the unit's offset.
  virtual const T* Acquire(int unit) = 0;
  // The model is done reading `unit` for now.
  virtual void Release(int unit) {}
  // Gradient buffer of `unit` (same layout); the model accumulates into it.
  virtual T* Grads(int unit) = 0;
  // All gradient contributions of `unit` for this backward pass are in.
  virtual void GradsReady(int unit) {}
};

// ParamSource over full flat buffers (single rank, ZeRO stages 0-2).
template <typename T>
class FlatParamSource : public ParamSource<T> {
 public:
  FlatParamSource(const ParamTable* table, const T* params, T* grads)
      : table_(table), params_(params), grads_(grads) {}
  const T* Acquire(int unit) override { return params_ + table_->units()[unit].offset; }
  T* Grads(int unit) override { return grads_ + table_->units()[unit].offset; }

 private:
  const ParamTable* table_;
  const T* params_;
  T* grads_;
};

// Where the model runs: the Device its activations are allocated on (and counted against the
// device budget) and the operation table of kernels it calls.
template <typename T>
struct Backend {
  Device* device = nullptr;
  const kernels::Ops<T>* ops = nullptr;
  // The weight-only quantized product (float models; null: the backend cannot serve quantized
  // weights).
  const kernels::QuantizedLinearOps* qlinear = nullptr;
};
// The default device (no budget) and the CPU kernels (with the quantized product for float).
template <typename T>
Backend<T> CpuBackend();

template <typename T>
class Transformer {
 public:
  explicit Transformer(const ModelDims& dims, Backend<T> backend = CpuBackend<T>());

  const ModelDims& dims() const { return dims_; }
  const ParamTable& params() const { return table_; }
  int num_units() const { return dims_.L + 2; }

  // Deterministic initialisation of the whole flat buffer from `seed` (HF defaults:
  // normal(0, initializer_range) for matrices, ones for norm weights, zeros for biases).
  void InitParams(T* params, uint64_t seed) const;

  // Activation checkpointing (before Reserve): keep only each layer's input during the forward
  // and recompute the layer's activations in the backward, into one shared set of buffers.
  void set_recompute_layers(bool on) {
    recompute_ = on;
    B_ = T_ = 0;  // the next Reserve sizes the buffers again
  }
  bool recompute_layers() const { return recompute_; }

  // FPDT (before Reserve; chunk 0 = off): every pass runs layer by layer and chunk by chunk over
  // `chunk` tokens of each sequence (the last chunk may be shorter). Only the layer inputs are
  // kept from the forward; the backward recomputes each layer's q/k/v, attention output and
  // log-sum-exp chunk by chunk, runs the MLP and the output projection backward per chunk, then
  // the attention backward over chunk pairs (outer loop over key chunks, dQ accumulated in the
  // store, dK/dV on the device) and the q/k/v projection per key chunk. The layer inputs and
  // those chunks live in a store in the host tier (`offload`) or on the device; chunks are
  // prefetched on a stream while the previous pair computes (two buffers each). The head and the
  // loss run per chunk too, so no (sequence, vocabulary) tensor exists. Needs targets.
  struct FpdtOptions {
    int chunk = 0;
    bool offload = true;
  };
  void set_fpdt(const FpdtOptions& o) {
    fpdt_ = o;
    B_ = T_ = 0;
  }
  const FpdtOptions& fpdt() const { return fpdt_; }
  // Bytes of the FPDT store (in the host tier with offload, else included in activation_bytes).
  uint64_t fpdt_store_bytes() const;

  // Allocates the activation buffers for micro-batches of B sequences of Tn tokens on the
  // device; past the device budget: RESOURCE_EXHAUSTED naming the buffer (nothing is kept
  // allocated then). Forward reserves its shape itself and aborts if that fails: callers that
  // run under a budget (the trainer) reserve first.
  absl::Status Reserve(int B, int Tn);
  // Bytes held by activation and scratch buffers.
  uint64_t activation_bytes() const;

  // Forward pass. With targets, returns the mean cross-entropy over the targets >= 0 and keeps
  // what backward needs; without, only computes logits (B*Tn, V).
  double Forward(ParamSource<T>& src, const int32_t* tokens, const int32_t* targets, int B, int Tn);
  // Backward of the last Forward: accumulates d(loss * grad_scale) into src.Grads.
  void Backward(ParamSource<T>& src, float grad_scale);

  const T* logits() const { return logits_.data(); }

  // Weight-only quantized inference (worker/model/quantized.h). The matrices the quantized path
  // replaces, as this model's table stores them.
  std::vector<LinearWeight> Linears() const;
  // Those matrices quantized from fp32 parameters in table order (float models only).
  absl::StatusOr<QuantizedWeights> Quantize(const T* params, kernels::WeightFormat format) const;
  // From now on Forward and ForwardCached multiply by `q` (kept alive by the caller; null: off)
  // and never read the fp32 slots of those matrices; Backward is refused. FAILED_PRECONDITION for
  // a backend without quantized kernels, a model other than float, FPDT or sequence parallelism;
  // INVALID_ARGUMENT naming the first matrix whose shape is not this model's.
  absl::Status set_quantized(const QuantizedWeights* q);
  const QuantizedWeights* quantized() const { return quant_; }

  // Sequence parallelism (transformer_sequence.cc). `positions` are the global positions of the
  // Tn tokens of each sequence this rank holds (RoPE and GPT-2's learned positions use them).
  // With an exchange of size() > 1, each layer's attention runs over the whole sequence for
  // the exchange's local heads: q/k/v rows scattered, attention, output rows gathered back; the
  // local tokens must then be block rank() of the group's contiguous sequence
  // (positions[i] = rank() * Tn + i). Null exchange and empty positions: off. Forward and
  // Backward keep going after a failed exchange; sequence_status() holds the first failure.
  void set_sequence(SequenceExchange<T>* exchange, std::vector<int32_t> positions);
  const absl::Status& sequence_status() const { return seq_status_; }

  // Incremental decoding: the fused q/k/v rows (after RoPE) of every position processed so far,
  // per layer, (B, capacity, QKV) each; each sequence (row) has its own length.
  struct KvCache {
    int B = 0, capacity = 0;
    std::vector<int> len;  // positions held per row
    std::vector<Buffer<T>> layers;
    // Ms-PoE: (B, L, S) slots, S = num_key_value_heads; a row's are measured by the call that
    // starts it (len 0) and kept while it decodes (-1: not measured, or a layer it skips).
    std::vector<int32_t> ms_poe_slots;
  };
  // An empty cache for B sequences of up to `capacity` (<= max_position_embeddings) positions,
  // on the model's device (RESOURCE_EXHAUSTED past its budget).
  absl::StatusOr<KvCache> NewKvCache(int B, int capacity) const;
  // Runs tokens (B, Tn) as the next Tn positions of cache rows [row0, row0 + B) (row r at
  // positions len[r] ..), attending to each row's cached positions and to themselves, and
  // appends them; logits() holds (B*Tn, V). Prompts of different lengths: one call per row
  // (B = 1, row0 = r); then every decode step one call for all rows with one token each.
  // LongRoPE picks the call's table by its largest position, or by `batch_max_pos` when that is
  // larger: rows of one batch run by separate calls then rotate as one padded call over the
  // batch would (Hugging Face's table is picked by the largest position of the whole batch).
  void ForwardCached(ParamSource<T>& src, const int32_t* tokens, int B, int Tn, KvCache* cache,
                     int row0 = 0, int64_t batch_max_pos = 0);

  // Ms-PoE (ms_poe.h), inference only (transformer_ms_poe.cc): Forward and ForwardCached rotate
  // the layers from o.first_layer on with each head group's positions divided by its slot's
  // ratio; Backward, FPDT and sequence parallelism refuse it. INVALID_ARGUMENT where it does not
  // apply to the model (or FPDT / sequence parallelism is set); RESOURCE_EXHAUSTED when its
  // tables (num_key_value_heads x max_position_embeddings x head_dim) do not fit the device.
  absl::Status set_ms_poe(const MsPoeOptions& o);
  void clear_ms_poe();
  bool ms_poe_on() const { return ms_poe_on_; }
  // Forward measures the slots of every sequence on its own tokens unless fixed ones are set:
  // (L, S) slots for every sequence, e.g. ms_poe_slots() of a forward over a prompt, so that
  // recomputing a longer context keeps the prompt's assignment as a KV cache row does. Empty:
  // measure. INVALID_ARGUMENT unless (L, S) slots with each rescaled layer a permutation.
  absl::Status set_ms_poe_fixed_slots(std::vector<int32_t> slots);
  // The slots of the last Forward, (B, L, S): -1 in the layers before first_layer.
  const std::vector<int32_t>& ms_poe_slots() const { return ms_poe_slots_; }

 private:
  struct LayerActs {
    Buffer<T> ln1, ln1_mean, ln1_rstd;  // (N,C), (N), (N)
    Buffer<T> qkv;                      // (N,QKV) after RoPE
    Buffer<T> lse;                      // (B,NH,T) attention log-sum-exp per row
    Buffer<T> atty;                     // (N,NH*HS)
    Buffer<T> mid;                      // (N,C) residual after attention
    Buffer<T> ln2, ln2_mean, ln2_rstd;  // (N,C), (N), (N)
    Buffer<T> fc;                       // (N,2F) llama gate|up, (N,F) gpt2 pre-GELU
    Buffer<T> act;                      // (N,F) SwiGLU / GELU output
    struct {  // sequence parallelism: this rank's heads over all B x (P x Tn) tokens
      Buffer<T> qkv, out, lse;
    } seq;
  };
  struct LayerOffsets {  // element offsets of a block's parameters within its unit
    uint64_t ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, fc_w, fc_b, proj_w, proj_b;
  };

  void BuildTable();
  void NormForward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int N);
  void NormBackward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                    const T* rstd, int N);
  // With `cache` (the first of B rows of a KvCache layer of `capacity`), row b's tokens sit at
  // positions pos0[b].. and attend to its cached positions; their q/k/v rows are appended.
  // `layer`: the layer's index (-1: none): Ms-PoE may apply to it, and with quantized weights its
  // matrices are the quantized ones.
  void BlockForward(const T* p, LayerActs& a, const T* x, T* out, int B, int Tn, T* cache = nullptr,
                    int capacity = 0, const int* pos0 = nullptr, int layer = -1);
  // out (N, OC) = in (N, C) @ W (+ b): the fp32 matrix at w in layout wl, or q when given.
  void Linear(T* out, const T* in, const T* w, const T* b, int N, int C, int OC,
              kernels::WeightLayout wl, const kernels::QuantizedMatrix* q);
  const QuantizedLayer* QuantLayer(int l) const {
    return quant_ && l >= 0 ? &quant_->layers[l] : nullptr;
  }
  void BlockBackward(const T* p, T* g, const LayerActs& a, const T* x, T* dx, int B, int Tn);
  // The final norm and the LM head over resid_[L]: logits_ (N, V).
  void HeadForward(ParamSource<T>& src, int N);
  // Sequence parallelism (transformer_sequence.cc).
  bool SequenceParallel() const { return seq_ != nullptr && seq_->size() > 1; }
  const int32_t* TokenPositions() const { return seq_pos_.empty() ? nullptr : seq_pos_.data(); }
  // Frees the sequence-parallel buffers; ReserveSequence allocates them for (B, Tn) (and has the
  // exchange reserve its own) after Reserve's, RESOURCE_EXHAUSTED naming the buffer.
  void FreeSequence();
  absl::Status ReserveSequence(int B, int Tn);
  uint64_t SequenceElems() const;
  // a.qkv -> a.seq (scatter, attention) -> a.atty (gather).
  void SequenceAttentionForward(LayerActs& a, int B, int Tn);
  // datty_ -> dqkv_ through the head-sharded attention backward.
  void SequenceAttentionBackward(const LayerActs& a, int B, int Tn);

  // FPDT (transformer_fpdt.cc).
  struct FpdtState {
    int c = 0, u = 0;  // local tokens per chunk, chunks per sequence
    // Over a sequence-parallel group: P ranks, this rank's query and key/value heads. The
    // attention runs head-sharded over the P x c tokens of a chunk's span (P = 1: the chunk).
    int P = 1, nh = 0, nkv = 0;
    // Device, one chunk of B x c rows (head-sharded ones: B x P*c rows of this rank's heads).
    Buffer<T> x, ln1, ln1_mean, ln1_rstd, q, qh, kv[2], o, oh, lse, o2, lse2, proj, mid, ln2,
        ln2_mean, ln2_rstd, fc, act, out, logits, probs, losses, dlogits, dy, dln, dtmp, dfc, dact,
        datty, kvj, dkv, cos, sin;
    Buffer<T> sq[2], so[2], slse[2], sdo[2], sdq[2];  // the attention backward's pipeline
    Buffer<int32_t> tok, tgt, pos;
    // The store: layer inputs (L+1) and the current layer's chunks, chunk-major: chunk i's
    // B x len rows start at row B * i * c (head-sharded: B * i * P*c). In the host tier with
    // offload. hol: the local attention output (P > 1).
    std::vector<Buffer<T>> xs;
    Buffer<T> hqkv, ho, hol, hlse, hdo, hdq, hdx, rope_cos, rope_sin;
    std::unique_ptr<Stream> stream;
  };
  absl::Status ReserveFpdt(int B, int Tn);
  double ForwardFpdt(ParamSource<T>& src, const int32_t* tokens, const int32_t* targets, int B,
                     int Tn);
  void BackwardFpdt(ParamSource<T>& src, float grad_scale);
  // One layer over every chunk: q/k/v of each chunk go to the store; with `keep` (the backward's
  // recompute) the attention output and lse too and the MLP is skipped, else the layer output
  // goes to xs[l + 1].
  void LayerForwardFpdt(const T* p, int l, int B, int Tn, bool keep);
  // The chunk's R rows from the attention output f.o and the layer input f.x through the output
  // projection, the residual (f.mid), ln2 and the MLP's input projection and activation (f.fc,
  // f.act): the forward's and the backward's recompute share it.
  void FpdtMlpIn(const T* p, int R);
  void FpdtGather(int i, int B, int Tn);  // tokens, targets, positions, RoPE rows of chunk i
  void SeqOk(absl::Status st);            // keeps the first failed exchange in seq_status_
  int FpdtLen(int i, int Tn) const { return std::min(fpdt_state_.c, Tn - i * fpdt_state_.c); }

  ModelDims dims_;
  Backend<T> backend_;
  const kernels::Ops<T>* ops_;
  ParamTable table_;
  LayerOffsets lo_{};
  uint64_t wte_off_ = 0, wpe_off_ = 0, lnf_w_off_ = 0, lnf_b_off_ = 0, head_off_ = 0;

  int B_ = 0, T_ = 0;
  const int32_t* tokens_ = nullptr;
  const int32_t* targets_ = nullptr;
  int count_ = 0;
  bool recompute_ = false;                   // activation checkpointing (set_recompute_layers)
  const QuantizedWeights* quant_ = nullptr;  // set_quantized
  FpdtOptions fpdt_;
  FpdtState fpdt_state_;
  double fpdt_loss_sum_ = 0;
  Buffer<T> rope_cos_, rope_sin_;            // plain RoPE, or LongRoPE's short factors
  Buffer<T> rope_cos_long_, rope_sin_long_;  // LongRoPE's long factors (else empty)
  bool rope_long_ = false;                   // the current pass rotates with the long table
  // LongRoPE: Hugging Face picks the table per forward by its largest position (seq_len =
  // max(position_ids) + 1 > original_max_position_embeddings: long); the pass's tables.
  void PickRopeTable(int64_t max_pos) { rope_long_ = UseLongRope(dims_, max_pos); }
  const T* RopeCos() const { return rope_long_ ? rope_cos_long_.data() : rope_cos_.data(); }
  const T* RopeSin() const { return rope_long_ ? rope_sin_long_.data() : rope_sin_.data(); }
  // Positions [0, Tn) of the RoPE table into cos/sin on the model's device: computed on the host
  // in double precision (LongRoPE's short or long factors) and copied with Device::Copy.
  void CopyRopeTables(T* cos, T* sin, bool long_factors, int Tn);
  // Ms-PoE (ms_poe.h, transformer_ms_poe.cc).
  bool ms_poe_on_ = false;
  MsPoeOptions ms_poe_;
  Buffer<T> ms_poe_cos_, ms_poe_sin_;  // S stacked (max_T, HS/2) tables, slot s at ratio r_s
  Buffer<int32_t> ms_poe_heads_;       // (B, NH + NKV): each head's table in this call
  std::vector<int32_t> ms_poe_fixed_;  // (L, S) or empty (set_ms_poe_fixed_slots)
  std::vector<int32_t> ms_poe_slots_;  // (B, L, S) of the last Forward
  int32_t* ms_poe_pass_ = nullptr;     // (B, L, S) of this call's sequences
  std::vector<char> ms_poe_measure_;   // per sequence of this call: measure its slots
  bool MsPoeLayer(int layer) const { return ms_poe_on_ && layer >= ms_poe_.first_layer; }
  // Where this call's slots live (ms_poe_slots_ or the cache rows') and which to measure.
  void MsPoeBeginPass(int B, int32_t* slots, const int* pos0);
  // RoPE of layer `layer` (pre-RoPE qkv of this call): measures the slots of the sequences that
  // need it, then rotates each head with its group's table.
  void MsPoeRope(T* qkv, int B, int Tn, const int32_t* pos, int layer);
  std::vector<Buffer<T>> resid_;  // L+1 x (N,C): input of each block, then final
  std::vector<LayerActs> acts_;
  Buffer<T> lnf_, lnf_mean_, lnf_rstd_, logits_, probs_, losses_;
  // Scratch for backward.
  Buffer<T> dx_, dtmp_, dln_, dqkv_, datty_, dfc_, dact_, dlogits_, proj_;
  // Sequence parallelism (set_sequence).
  SequenceExchange<T>* seq_ = nullptr;
  std::vector<int32_t> seq_positions_;  // (Tn) as given
  std::vector<int32_t> seq_pos_;        // (B, Tn) for the kernels; empty = positions 0..Tn-1
  Buffer<T> seq_dout_, seq_dqkv_;       // head-sharded backward scratch
  absl::Status seq_status_;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace tern::model
