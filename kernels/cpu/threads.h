// One thread pool for BLAS and elementwise kernels (OpenMP; OpenBLAS's OpenMP build).
#pragma once

namespace tern::kernels {

// Sets the OpenMP and OpenBLAS thread counts for this process.
void SetNumThreads(int n);
int NumThreads();      // OpenMP
int BlasNumThreads();  // OpenBLAS

}  // namespace tern::kernels
