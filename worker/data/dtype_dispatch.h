// Internal: maps a token DType to its C++ type for templated loops.
#pragma once

#include <cstdint>

#include "worker/core/status.h"
#include "worker/data/indexed_dataset.h"

namespace tern::data::internal {

// Calls fn(T{}) with T the C++ type of `dtype` (integer token dtypes only; aborts otherwise,
// callers validate first) and returns its result.
template <typename Fn>
auto DispatchTokenType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kUInt8:
      return fn(uint8_t{});
    case DType::kInt8:
      return fn(int8_t{});
    case DType::kInt16:
      return fn(int16_t{});
    case DType::kUInt16:
      return fn(uint16_t{});
    case DType::kInt32:
      return fn(int32_t{});
    case DType::kInt64:
      return fn(int64_t{});
    default:
      break;
  }
  TERN_CHECK(false) << "not a token dtype: code " << static_cast<int>(dtype);
  return fn(int32_t{});  // unreachable
}

}  // namespace tern::data::internal
