// The machine's sgemm peak: the denominator of MFU.
#pragma once

namespace tern::kernels {

// Best cblas_sgemm GFLOP/s of several 1024^3 products on `threads` threads, after a warm-up.
// Takes about a second; leaves the thread count at `threads`.
double MeasureSgemmPeakGflops(int threads);

}  // namespace tern::kernels
