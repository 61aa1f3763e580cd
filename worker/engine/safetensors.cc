#include "worker/engine/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "worker/core/bounded_input.h"
#include "worker/core/status.h"

namespace tern::engine {
namespace fs = std::filesystem;
namespace {

constexpr const char* kSingle = "model.safetensors";
constexpr const char* kIndex = "model.safetensors.index.json";
constexpr uint64_t kMaxHeader = 100ull << 20;

uint64_t DtypeSize(const std::string& d) {
  if (d == "F32") return 4;
  if (d == "BF16" || d == "F16") return 2;
  if (d == "U8" || d == "I8") return 1;
  return 0;
}
bool IsByteDtype(const std::string& d) { return d == "U8" || d == "I8"; }
uint64_t Numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// The tensors of one .safetensors file, checked against its size.
absl::StatusOr<std::vector<SafeTensor>> ListFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (ec || size < 8) return absl::DataLossError(absl::StrCat(path, ": shorter than 8 bytes"));
  uint8_t lb[8];
  in.read(reinterpret_cast<char*>(lb), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | lb[i];  // little-endian
  if (!in || n > kMaxHeader || n > size - 8) {
    return absl::DataLossError(absl::StrCat(path, ": bad header length ", n, " for a ", size,
                                            "-byte file (not a safetensors file?)"));
  }
  std::string h(n, '\0');
  in.read(h.data(), static_cast<std::streamsize>(n));
  if (!in) return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  auto parsed = ParseJsonBounded(h, path + " header", 8);
  if (!parsed.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": bad header: ", parsed.status().message()));
  }
  if (!parsed->is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": bad header: not a JSON object"));
  }
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  std::vector<SafeTensor> out;
  for (const auto& [name, t] : parsed->items()) {
    if (name == "__metadata__") continue;
    auto bad = [&, &name = name](const std::string& what) {
      return absl::DataLossError(absl::StrCat(path, ": tensor ", name, ": ", what));
    };
    if (!t.is_object() || !t.contains("dtype") || !t["dtype"].is_string() || !t.contains("shape") ||
        !t["shape"].is_array() || !t.contains("data_offsets") || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2) {
      return bad("needs dtype, shape and data_offsets [begin, end]");
    }
    SafeTensor st;
    st.name = name;
    st.file = path;
    st.dtype = t["dtype"].get<std::string>();
    const uint64_t es = DtypeSize(st.dtype);
    if (es == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", name, " has dtype ", st.dtype,
          "; Tern reads F32, BF16, F16 (and U8/I8 quantized weights) --> hint: convert the "
          "weights to one of them"));
    }
    uint64_t numel = 1;
    for (const auto& d : t["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape is not a list of sizes");
      st.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    for (const auto& o : t["data_offsets"])
      if (!o.is_number_unsigned()) return bad("data_offsets are not byte offsets");
    const uint64_t b = t["data_offsets"][0].get<uint64_t>(),
                   e = t["data_offsets"][1].get<uint64_t>();
    if (b > e || e > data_size || e - b != numel * es) {
      return bad(absl::StrCat("data_offsets [", b, ", ", e, ") do not hold ", numel, " ", st.dtype,
                              " elements inside the ", data_size, " data bytes"));
    }
    st.begin = data_start + b;
    st.end = data_start + e;
    out.push_back(std::move(st));
  }
  return out;
}

absl::Status WriteAll(std::ofstream& out, const void* p, uint64_t n, const std::string& path) {
  out.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
  if (!out) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

// One file: tensors [first, last).
absl::Status WriteFile(const std::string& path, const std::vector<OutTensor>& tensors, size_t first,
                       size_t last, const nlohmann::json& metadata) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t pos = 0;
  for (size_t i = first; i < last; ++i) {
    const uint64_t bytes = Numel(tensors[i].shape) * DtypeSize(tensors[i].dtype);
    header[tensors[i].name] = {{"dtype", tensors[i].dtype},
                               {"shape", tensors[i].shape},
                               {"data_offsets", {pos, pos + bytes}}};
    pos += bytes;
  }
  header["__metadata__"] = metadata;
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // the data starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    uint8_t lb[8];
    for (int i = 0; i < 8; ++i) lb[i] = static_cast<uint8_t>(uint64_t(h.size()) >> (8 * i));
    TERN_RETURN_IF_ERROR(WriteAll(out, lb, 8, tmp));
    TERN_RETURN_IF_ERROR(WriteAll(out, h.data(), h.size(), tmp));
    std::vector<uint16_t> half;
    for (size_t i = first; i < last; ++i) {
      const OutTensor& t = tensors[i];
      const uint64_t n = Numel(t.shape);
      if (IsByteDtype(t.dtype)) {
        TERN_RETURN_IF_ERROR(WriteAll(out, t.raw, n, tmp));
        continue;
      }
      if (t.dtype == "F32") {
        TERN_RETURN_IF_ERROR(WriteAll(out, t.values, n * 4, tmp));
        continue;
      }
      half.resize(n);
      for (uint64_t k = 0; k < n; ++k)
        half[k] = t.dtype == "BF16" ? FloatToBf16(t.values[k]) : FloatToF16(t.values[k]);
      TERN_RETURN_IF_ERROR(WriteAll(out, half.data(), n * 2, tmp));
    }
    out.flush();
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t x = uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow: infinity
  if (e <= 0) {                                               // subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into infinity
  return static_cast<uint16_t>(sign | half);
}

float F16ToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      x = sign | (uint32_t(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

absl::StatusOr<std::string> SafetensorsDtype(const std::string& name) {
  if (name == "f32" || name == "F32" || name == "fp32") return std::string("F32");
  if (name == "bf16" || name == "BF16") return std::string("BF16");
  if (name == "f16" || name == "F16" || name == "fp16") return std::string("F16");
  return absl::InvalidArgumentError(
      absl::StrCat("dtype '", name, "' is not one of f32, bf16, f16"));
}

absl::StatusOr<std::vector<SafeTensor>> ListSafetensors(const std::string& dir) {
  const std::string index = dir + "/" + kIndex, single = dir + "/" + kSingle;
  std::error_code ec;
  if (!fs::exists(index, ec)) {
    if (!fs::exists(single, ec)) {
      return absl::NotFoundError(absl::StrCat(dir, " holds neither ", kSingle, " nor ", kIndex));
    }
    return ListFile(single);
  }
  TERN_ASSIGN_OR_RETURN(const std::string text,
                        ReadBoundedFile(index, "safetensors index", size_t{16} << 20));
  TERN_ASSIGN_OR_RETURN(auto j, ParseJsonBounded(text, index, 8));
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return absl::DataLossError(absl::StrCat(index, ": no weight_map object"));
  }
  std::map<std::string, std::string> where;  // tensor -> file
  std::set<std::string> files;
  for (const auto& [name, f] : j["weight_map"].items()) {
    if (!f.is_string() || f.get<std::string>().find('/') != std::string::npos ||
        f.get<std::string>().empty() || f.get<std::string>()[0] == '.') {
      return absl::DataLossError(
          absl::StrCat(index, ": tensor ", name, " maps to a bad file name"));
    }
    where[name] = f.get<std::string>();
    files.insert(f.get<std::string>());
  }
  std::vector<SafeTensor> out;
  for (const auto& f : files) {
    TERN_ASSIGN_OR_RETURN(auto tensors, ListFile(dir + "/" + f));
    for (auto& t : tensors) {
      auto it = where.find(t.name);
      if (it == where.end() || it->second != f) {
        return absl::DataLossError(absl::StrCat(dir, "/", f, " holds tensor ", t.name, " that ",
                                                kIndex, " does not map to it"));
      }
      where.erase(it);
      out.push_back(std::move(t));
    }
  }
  if (!where.empty()) {
    return absl::DataLossError(absl::StrCat(index, " maps ", where.begin()->first, " to ",
                                            where.begin()->second, ", which does not hold it"));
  }
  return out;
}

absl::Status ReadTensorBytes(const SafeTensor& t, void* out) {
  std::ifstream in(t.file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", t.file));
  in.seekg(static_cast<std::streamoff>(t.begin));
  in.read(static_cast<char*>(out), static_cast<std::streamsize>(t.end - t.begin));
  if (!in) return absl::DataLossError(absl::StrCat(t.file, ": short read of tensor ", t.name));
  return absl::OkStatus();
}

absl::Status ReadTensorF32(const SafeTensor& t, float* out) {
  if (IsByteDtype(t.dtype))
    return absl::InvalidArgumentError(absl::StrCat(
        t.file, ": tensor ", t.name, " holds quantized weights (", t.dtype,
        ") --> hint: tern generate and tern eval read quantized models; training and export "
        "need fp32 weights"));
  std::ifstream in(t.file, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", t.file));
  in.seekg(static_cast<std::streamoff>(t.begin));
  const uint64_t bytes = t.end - t.begin;
  if (t.dtype == "F32") {
    in.read(reinterpret_cast<char*>(out), static_cast<std::streamsize>(bytes));
  } else {
    std::vector<uint16_t> half(bytes / 2);
    in.read(reinterpret_cast<char*>(half.data()), static_cast<std::streamsize>(bytes));
    for (size_t i = 0; i < half.size(); ++i)
      out[i] = t.dtype == "BF16" ? Bf16ToFloat(half[i]) : F16ToFloat(half[i]);
  }
  if (!in) return absl::DataLossError(absl::StrCat(t.file, ": short read of tensor ", t.name));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> ReadWeights(const std::string& dir, const ParamTable& table) {
  TERN_ASSIGN_OR_RETURN(auto tensors, ListSafetensors(dir));
  // GPT-2 weights saved from GPT2Model have no "transformer." prefix.
  for (auto& t : tensors) {
    const std::string prefixed = "transformer." + t.name;
    if (table.Find(t.name) == nullptr && table.Find(prefixed) != nullptr) t.name = prefixed;
  }
  for (const auto& t : tensors)
    if (IsByteDtype(t.dtype))
      return absl::InvalidArgumentError(absl::StrCat(
          dir, " holds quantized weights (tensor ", t.name, " is ", t.dtype,
          ") --> hint: tern generate and tern eval read quantized models; training and export "
          "need fp32 weights"));
  std::vector<TensorShape> found;
  for (const auto& t : tensors) found.push_back({t.name, t.shape});
  TERN_RETURN_IF_ERROR(MatchTensors(table, found, absl::StrCat("weights in ", dir),
                                    " --> hint: the model section (or config.json) must describe "
                                    "the architecture these weights were saved from"));
  std::vector<float> out(table.total());
  for (const auto& t : tensors) {
    TERN_RETURN_IF_ERROR(ReadTensorF32(t, out.data() + table.Find(t.name)->offset));
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& dir, const ParamTable& table, const float* params,
                              const SafetensorsWriteOptions& options) {
  TERN_ASSIGN_OR_RETURN(const std::string dtype, SafetensorsDtype(options.dtype));
  std::vector<OutTensor> tensors;
  for (const auto& e : table.entries()) {
    OutTensor t;
    t.name = e.name;
    t.dtype = dtype;
    t.shape = e.shape;
    t.values = params + e.offset;
    tensors.push_back(std::move(t));
  }
  return WriteSafetensorsTensors(dir, tensors, options);
}

absl::Status WriteSafetensorsTensors(const std::string& dir, const std::vector<OutTensor>& tensors,
                                     const SafetensorsWriteOptions& options) {
  if (options.max_shard_bytes == 0) {
    return absl::InvalidArgumentError("max shard size must be positive");
  }
  for (const auto& t : tensors) {
    const bool bytes = IsByteDtype(t.dtype);
    if (DtypeSize(t.dtype) == 0 || (bytes ? t.raw == nullptr : t.values == nullptr))
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", t.name, ": dtype ", t.dtype, " without its data"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  // Shards: consecutive tensors up to max_shard_bytes (a bigger tensor gets a file of its own).
  std::vector<std::pair<size_t, size_t>> shards;
  uint64_t in_shard = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t b = Numel(tensors[i].shape) * DtypeSize(tensors[i].dtype);
    if (shards.empty() || (in_shard > 0 && in_shard + b > options.max_shard_bytes)) {
      shards.push_back({i, i});
      in_shard = 0;
    }
    shards.back().second = i + 1;
    in_shard += b;
    total += b;
  }
  const nlohmann::json meta = {{"format", "pt"}, {"producer", "tern"}};
  if (shards.size() <= 1) {
    return WriteFile(dir + "/" + kSingle, tensors, 0, tensors.size(), meta);
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", int(s + 1), int(shards.size()));
    TERN_RETURN_IF_ERROR(
        WriteFile(dir + "/" + name, tensors, shards[s].first, shards[s].second, meta));
    for (size_t i = shards[s].first; i < shards[s].second; ++i) weight_map[tensors[i].name] = name;
  }
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string path = dir + "/" + kIndex, tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << index.dump(2) << "\n";
    if (!out) return absl::DataLossError(absl::StrCat("short write to ", tmp));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace tern::engine
