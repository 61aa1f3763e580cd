// tern-gpu-check: every CUDA op against the CPU kernels (kernels/cuda/op_check.h, the checks the
// gpu tests run), then the quantizers' throughput next to a device-to-device copy of the same
// buffer. Prints one line per check and ends with one JSON line. Exit 0 when every check
// passes, 1 when one fails, 2 when there is no usable GPU.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/op_check.h"

namespace {

using tern::kernels::QuantizeOps;

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

// Median milliseconds of `reps` runs of fn (after one warm-up), timed with CUDA events.
double TimeMs(const std::function<void()>& fn, int reps = 10) {
  fn();
  TERN_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  TERN_CUDA_CHECK(cudaEventCreate(&a));
  TERN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    TERN_CUDA_CHECK(cudaEventRecord(a, 0));
    fn();
    TERN_CUDA_CHECK(cudaEventRecord(b, 0));
    TERN_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    TERN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void Fill(float* d, size_t n) {
  std::vector<float> h(n);
  uint32_t s = 12345;
  for (float& x : h) {
    s = s * 1664525u + 1013904223u;
    x = (static_cast<float>(s >> 8) / 16777216.0f - 0.5f) * 4;
  }
  TERN_CUDA_CHECK(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
}

// The quantizers over n floats (block elements per scale) against cudaMemcpy of the fp32 buffer.
std::string QuantBench(const QuantizeOps& q, size_t n, size_t block) {
  float *x, *y, *s, *s2;
  int8_t* q8;
  uint8_t *q4, *q4b, *q4c;
  TERN_CUDA_CHECK(cudaMalloc(&x, n * 4));
  TERN_CUDA_CHECK(cudaMalloc(&y, n * 4));
  TERN_CUDA_CHECK(cudaMalloc(&s, n / block * 4));
  TERN_CUDA_CHECK(cudaMalloc(&s2, n / block * 4));
  TERN_CUDA_CHECK(cudaMalloc(&q8, n));
  TERN_CUDA_CHECK(cudaMalloc(&q4, n / 2));
  TERN_CUDA_CHECK(cudaMalloc(&q4b, n / 2));
  TERN_CUDA_CHECK(cudaMalloc(&q4c, n / 2));
  Fill(x, n);
  const double copy = TimeMs([&] { cudaMemcpy(y, x, n * 4, cudaMemcpyDeviceToDevice); });
  const double qi8 = TimeMs([&] { q.quantize_int8(q8, s, x, n, block); });
  const double di8 = TimeMs([&] { q.dequantize_int8(y, q8, s, n, block); });
  const double qi4 = TimeMs([&] { q.quantize_int4(q4, s, x, n, block); });
  const double di4 = TimeMs([&] { q.dequantize_int4(y, q4, s, n, block); });
  const double da4 = TimeMs([&] { q.dequantize_int4_add(y, q4, s, n, block); });
  q.quantize_int4(q4b, s2, x, n, block);
  const uint8_t* qin[4] = {q4, q4b, q4, q4b};
  const float* sin[4] = {s, s2, s, s2};
  const double dsr = TimeMs([&] { q.dequant_sum_requant_int4(q4c, s2, qin, sin, 4, n, block); });
  for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(s),
                  static_cast<void*>(s2), static_cast<void*>(q8), static_cast<void*>(q4),
                  static_cast<void*>(q4b), static_cast<void*>(q4c)})
    cudaFree(p);
  const double gb = n * 4 / 1e9;  // fp32 bytes of the buffer
  std::ostringstream o;
  auto item = [&](const char* name, double ms) {
    o << "\"" << name << "\":{\"ms\":" << ms << ",\"fp32_GBps\":" << gb / (ms / 1e3)
      << ",\"vs_copy\":" << copy / ms << "}";
  };
  o << "{\"elements\":" << n << ",\"block\":" << block << ",";
  item("d2d_copy", copy);
  o << ",";
  item("quantize_int8", qi8);
  o << ",";
  item("dequantize_int8", di8);
  o << ",";
  item("quantize_int4", qi4);
  o << ",";
  item("dequantize_int4", di4);
  o << ",";
  item("dequantize_int4_add", da4);
  o << ",";
  item("dequant_sum_requant_int4_m4", dsr);
  o << "}";
  std::printf(
      "quantizers over %zu floats (block %zu): copy %.3f ms, q8 %.3f, dq8 %.3f, q4 %.3f, "
      "dq4 %.3f, dq4+ %.3f, dsr4 %.3f\n",
      n, block, copy, qi8, di8, qi4, di4, da4, dsr);
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  size_t quant_elems = size_t(64) << 20;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--quant-elems" && i + 1 < argc)
      quant_elems = std::strtoull(argv[++i], nullptr, 10);
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("{\"tool\":\"tern-gpu-check\",\"error\":\"no usable CUDA device: %s\"}\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    return 2;
  }
  cudaDeviceProp prop{};
  TERN_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::string error;
  auto ops = tern::kernels::cuda::NewCudaOps(&error);
  if (ops == nullptr) {
    std::printf("{\"tool\":\"tern-gpu-check\",\"error\":\"%s\"}\n", Escape(error).c_str());
    return 2;
  }
  int failed = 0;
  std::ostringstream checks, failures;
  double worst = 0;
  for (const std::string& name : tern::kernels::cuda::OpCheckNames()) {
    const auto r = tern::kernels::cuda::RunOpCheck(name, *ops, tern::kernels::CpuOps<float>(),
                                                   tern::kernels::cuda::CudaQuantizeOps(),
                                                   tern::kernels::CpuQuantizeOps());
    std::printf("%-34s %s  max_err %.3g  %s\n", name.c_str(), r.ok ? "ok  " : "FAIL", r.max_err,
                r.detail.c_str());
    std::fflush(stdout);
    if (!checks.str().empty()) checks << ",";
    checks << "\"" << name << "\":{\"ok\":" << (r.ok ? "true" : "false")
           << ",\"max_err\":" << r.max_err << "}";
    if (!r.ok) {
      if (failed++ > 0) failures << ",";
      failures << "\"" << name << ": " << Escape(r.detail) << "\"";
    }
    worst = std::max(worst, r.max_err);
  }
  const std::string quant = QuantBench(tern::kernels::cuda::CudaQuantizeOps(), quant_elems, 2048);
  std::printf(
      "{\"tool\":\"tern-gpu-check\",\"device\":\"%s\",\"sm\":\"%d.%d\",\"ops_checked\":%zu,"
      "\"ops_failed\":%d,\"worst_err\":%.3g,\"failures\":[%s],\"checks\":{%s},\"quant\":%s}\n",
      Escape(prop.name).c_str(), prop.major, prop.minor, tern::kernels::cuda::OpCheckNames().size(),
      failed, worst, failures.str().c_str(), checks.str().c_str(), quant.c_str());
  return failed == 0 ? 0 : 1;
}
