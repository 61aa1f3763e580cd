// The named parameter table over one flat buffer per training state (params, grads, fp32
// master, exp_avg, exp_avg_sq). Every state uses the same offsets, so sharding, checkpoints
// and the universal index are offset arithmetic over this table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tern {

struct ParamEntry {
  std::string name;            // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // global shape, row-major
  uint64_t offset = 0;         // element offset in the flat buffer
  uint64_t numel = 0;          // product of shape
  bool decay = true;           // AdamW weight decay applies (false for norms and biases)
  int unit = 0;                // gather/release unit (0 = embeddings, 1..L = blocks, L+1 = head)
};

// A contiguous group of parameters gathered and released together (ZeRO-3's unit).
struct ParamUnit {
  uint64_t offset = 0;  // first element
  uint64_t numel = 0;   // elements
};

class ParamTable {
 public:
  // Appends a parameter at the current end of the buffer; returns its offset.
  uint64_t Add(std::string name, std::vector<int64_t> shape, bool decay, int unit) {
    ParamEntry e;
    e.name = std::move(name);
    e.shape = std::move(shape);
    e.numel = 1;
    for (int64_t d : e.shape) e.numel *= static_cast<uint64_t>(d);
    e.offset = total_;
    e.decay = decay;
    e.unit = unit;
    total_ += e.numel;
    if (static_cast<int>(units_.size()) <= unit)
      units_.resize(unit + 1, ParamUnit{total_ - e.numel, 0});
    if (units_[unit].numel == 0) units_[unit].offset = e.offset;
    units_[unit].numel = e.offset + e.numel - units_[unit].offset;
    entries_.push_back(std::move(e));
    return entries_.back().offset;
  }

  const std::vector<ParamEntry>& entries() const { return entries_; }
  const std::vector<ParamUnit>& units() const { return units_; }
  uint64_t total() const { return total_; }

  const ParamEntry* Find(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }

 private:
  std::vector<ParamEntry> entries_;
  std::vector<ParamUnit> units_;
  uint64_t total_ = 0;
};

}  // namespace tern
