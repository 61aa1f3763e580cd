#include "kernels/cpu/peak.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "kernels/cpu/threads.h"

namespace tern::kernels {

double MeasureSgemmPeakGflops(int threads) {
  // Best of several GEMMs after a warm-up: a single timed call on a shared machine
  // under-reports the peak (and would over-report MFU).
  using Clock = std::chrono::steady_clock;
  SetNumThreads(threads);
  const int n = 1024;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), c(size_t(n) * n);
  double best = 0;
  for (int rep = 0; rep < 10; ++rep) {
    const auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rep > 1) best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

}  // namespace tern::kernels
