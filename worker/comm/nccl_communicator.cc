#include "worker/comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "worker/comm/byte_accounting.h"

namespace tern::comm {

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;  // null once aborted
  cudaStream_t stream = nullptr;
  cudaEvent_t done = nullptr;
  float* barrier = nullptr;  // one float on the device for Barrier's all-reduce
  int device = 0;
  ~Impl() {
    cudaSetDevice(device);
    if (comm != nullptr) ncclCommAbort(comm);
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    if (done != nullptr) cudaEventDestroy(done);
    if (barrier != nullptr) cudaFree(barrier);
  }
};

namespace {

using Clock = std::chrono::steady_clock;

std::string NcclError(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') absl::StrAppend(&s, ": ", last);
  return s;
}

// Polls a non-blocking communicator until its pending call is issued (not ncclInProgress).
ncclResult_t WaitIssued(ncclComm_t comm, Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (Clock::now() >= deadline) {
      *timed_out = true;
      return ncclInProgress;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Store& store, const std::string& prefix, int rank, int size, const NcclOptions& options) {
  const std::string group = options.name.empty() ? options.kind : options.name;
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL group '", group, "': rank ", rank, " of ", size));
  }
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("NCCL group '", group, "': no usable CUDA device: ",
                     e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none"));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL group '", group, "': CUDA device ", options.device, " of ", count));
  }
  if (cudaError_t e = cudaSetDevice(options.device); e != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("NCCL group '", group, "': cudaSetDevice: ", cudaGetErrorString(e)));
  }
  const auto deadline = Clock::now() + options.timeout;
  ncclUniqueId id;
  const std::string key = prefix + "/nccl_id";
  if (rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return absl::UnavailableError(
          absl::StrCat("NCCL group '", group, "': ncclGetUniqueId: ", NcclError(r, nullptr)));
    }
    const auto* p = reinterpret_cast<const uint8_t*>(&id);
    if (absl::Status s = store.Set(key, std::vector<uint8_t>(p, p + sizeof(id))); !s.ok()) return s;
  } else {
    auto v = store.Get(key, options.timeout);
    if (!v.ok()) return v.status();
    if (v->size() != sizeof(id)) {
      return absl::InternalError(absl::StrCat("NCCL group '", group, "': the id under ", key,
                                              " has ", v->size(), " bytes, not ", sizeof(id)));
    }
    std::memcpy(&id, v->data(), sizeof(id));
  }
  auto impl = std::make_unique<Impl>();
  impl->device = options.device;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; we poll with our own deadline
  ncclResult_t r = ncclCommInitRankConfig(&impl->comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    impl->comm = nullptr;
    return absl::UnavailableError(
        absl::StrCat("NCCL group '", group, "': ncclCommInitRankConfig: ", NcclError(r, nullptr)));
  }
  bool timed_out = false;
  r = WaitIssued(impl->comm, deadline, &timed_out);
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("NCCL group '", group, "' (rank ", rank, " of ",
                                                    size, "): not every rank joined within ",
                                                    options.timeout.count(), " ms"));
  }
  if (r != ncclSuccess) {
    return absl::UnavailableError(
        absl::StrCat("NCCL group '", group, "': init: ", NcclError(r, impl->comm)));
  }
  // A blocking stream: ordered after the kernels on the legacy default stream.
  if (cudaStreamCreate(&impl->stream) != cudaSuccess ||
      cudaEventCreateWithFlags(&impl->done, cudaEventDisableTiming) != cudaSuccess ||
      cudaMalloc(&impl->barrier, sizeof(float)) != cudaSuccess ||
      cudaMemset(impl->barrier, 0, sizeof(float)) != cudaSuccess) {
    const cudaError_t e = cudaGetLastError();
    return absl::UnavailableError(
        absl::StrCat("NCCL group '", group, "': CUDA setup: ", cudaGetErrorString(e)));
  }
  NcclOptions o = options;
  o.name = group;
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(rank, size, o, std::move(impl)));
}

NcclCommunicator::NcclCommunicator(int rank, int size, const NcclOptions& options,
                                   std::unique_ptr<Impl> impl)
    : Communicator(rank, size, options.kind, options.name),
      options_(options),
      impl_(std::move(impl)),
      thread_(options.name) {}

NcclCommunicator::~NcclCommunicator() { Abort(); }

void NcclCommunicator::Abort() {
  thread_.Shutdown(absl::CancelledError(
      absl::StrCat("communicator '", name(), "' (rank ", rank(), ") was aborted")));
  broken_.store(true);
  if (impl_ != nullptr && impl_->comm != nullptr) {
    cudaSetDevice(impl_->device);
    ncclCommAbort(impl_->comm);
    impl_->comm = nullptr;
  }
}

Work NcclCommunicator::Submit(Collective c, const CollectiveOptions& opts, uint64_t bytes,
                              uint64_t cross_node, std::function<int()> issue) {
  return thread_.Enqueue(
      [this, c, opts, bytes, cross_node, issue = std::move(issue)]() -> absl::Status {
        absl::Status st = Run(c, opts, issue);
        if (st.ok()) Record(c, bytes, cross_node);
        return st;
      });
}

absl::Status NcclCommunicator::Run(Collective c, const CollectiveOptions& opts,
                                   const std::function<int()>& issue) {
  if (broken_.load() || impl_->comm == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        Describe(c),
        ": communicator is broken after an earlier failure: ", first_error_.message()));
  }
  cudaSetDevice(impl_->device);
  const auto deadline = Clock::now() + opts.timeout;
  auto fail = [&](absl::Status st) {
    spdlog::warn("{}", st.ToString());
    first_error_ = st;
    broken_.store(true);
    // Abort: the kernels stop, no late data lands in the caller's buffers, and peers waiting on
    // this rank fail instead of hanging.
    ncclCommAbort(impl_->comm);
    impl_->comm = nullptr;
    return st;
  };
  const auto timeout_error = [&] {
    return absl::DeadlineExceededError(absl::StrCat(Describe(c), ": not complete after ",
                                                    opts.timeout.count(), " ms (a peer missing?)"));
  };
  ncclResult_t r = static_cast<ncclResult_t>(issue());
  if (r != ncclSuccess && r != ncclInProgress) {
    return fail(absl::UnavailableError(absl::StrCat(Describe(c), ": ", NcclError(r, impl_->comm))));
  }
  bool timed_out = false;
  r = WaitIssued(impl_->comm, deadline, &timed_out);
  if (timed_out) return fail(timeout_error());
  if (r != ncclSuccess) {
    return fail(absl::UnavailableError(absl::StrCat(Describe(c), ": ", NcclError(r, impl_->comm))));
  }
  if (cudaError_t e = cudaEventRecord(impl_->done, impl_->stream); e != cudaSuccess) {
    return fail(absl::InternalError(absl::StrCat(Describe(c), ": ", cudaGetErrorString(e))));
  }
  for (int spins = 0;; ++spins) {
    const cudaError_t q = cudaEventQuery(impl_->done);
    if (q == cudaSuccess) return absl::OkStatus();
    if (q != cudaErrorNotReady) {
      return fail(absl::InternalError(absl::StrCat(Describe(c), ": ", cudaGetErrorString(q))));
    }
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(impl_->comm, &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      return fail(
          absl::UnavailableError(absl::StrCat(Describe(c), ": ", NcclError(state, impl_->comm))));
    }
    if (Clock::now() >= deadline) return fail(timeout_error());
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

Work NcclCommunicator::StartAllReduce(std::span<float> data, const CollectiveOptions& opts) {
  // Ring all-reduce: each rank sends 2 (n-1)/n of the buffer.
  const uint64_t n = static_cast<uint64_t>(size());
  const uint64_t bytes = n > 1 ? 2 * (n - 1) * data.size_bytes() / n : 0;
  return Submit(Collective::kAllReduce, opts, bytes, CrossNodeToRight(bytes), [this, data] {
    return static_cast<int>(ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum,
                                          impl_->comm, impl_->stream));
  });
}

Work NcclCommunicator::StartReduceScatter(std::span<const float> input, std::span<float> output,
                                          const CollectiveOptions& opts) {
  const uint64_t bytes = ReduceScatterBytesSent(size(), input.size_bytes());
  return Submit(
      Collective::kReduceScatter, opts, bytes, CrossNodeToRight(bytes), [this, input, output] {
        return static_cast<int>(ncclReduceScatter(input.data(), output.data(), output.size(),
                                                  ncclFloat, ncclSum, impl_->comm, impl_->stream));
      });
}

Work NcclCommunicator::StartAllGather(ConstBytes input, MutableBytes output,
                                      const CollectiveOptions& opts) {
  const uint64_t bytes = AllGatherBytesSent(size(), input.size());
  return Submit(Collective::kAllGather, opts, bytes, CrossNodeToRight(bytes),
                [this, input, output] {
                  return static_cast<int>(ncclAllGather(input.data(), output.data(), input.size(),
                                                        ncclUint8, impl_->comm, impl_->stream));
                });
}

Work NcclCommunicator::StartAllToAll(ConstBytes input, MutableBytes output,
                                     const CollectiveOptions& opts) {
  const size_t chunk = input.size() / size();
  const uint64_t bytes = AllToAllBytesSent(size(), input.size());
  return Submit(
      Collective::kAllToAll, opts, bytes, CrossNodeToEach(chunk), [this, input, output, chunk] {
        ncclResult_t worst = ncclGroupStart();
        for (int j = 0; j < size() && worst == ncclSuccess; ++j) {
          const ncclResult_t s =
              ncclSend(input.data() + j * chunk, chunk, ncclUint8, j, impl_->comm, impl_->stream);
          const ncclResult_t r =
              ncclRecv(output.data() + j * chunk, chunk, ncclUint8, j, impl_->comm, impl_->stream);
          if (s != ncclSuccess) worst = s;
          if (r != ncclSuccess) worst = r;
        }
        const ncclResult_t end = ncclGroupEnd();
        return static_cast<int>(worst != ncclSuccess ? worst : end);
      });
}

Work NcclCommunicator::StartAllToAllV(ConstBytes input, std::span<const size_t> send_bytes,
                                      MutableBytes output, std::span<const size_t> recv_bytes,
                                      const CollectiveOptions& opts) {
  std::vector<size_t> send(send_bytes.begin(), send_bytes.end());
  std::vector<size_t> recv(recv_bytes.begin(), recv_bytes.end());
  const uint64_t bytes = AllToAllVBytesSent(rank(), send);
  uint64_t cross = 0;
  for (int j = 0; j < size(); ++j) {
    if (CrossNode(j)) cross += send[static_cast<size_t>(j)];
  }
  return Submit(Collective::kAllToAllV, opts, bytes, cross,
                [this, input, output, send = std::move(send), recv = std::move(recv)] {
                  ncclResult_t worst = ncclGroupStart();
                  size_t so = 0, ro = 0;
                  for (int j = 0; j < size() && worst == ncclSuccess; ++j) {
                    const size_t s = send[static_cast<size_t>(j)], r = recv[static_cast<size_t>(j)];
                    if (s > 0) {
                      const ncclResult_t e =
                          ncclSend(input.data() + so, s, ncclUint8, j, impl_->comm, impl_->stream);
                      if (e != ncclSuccess) worst = e;
                    }
                    if (r > 0) {
                      const ncclResult_t e =
                          ncclRecv(output.data() + ro, r, ncclUint8, j, impl_->comm, impl_->stream);
                      if (e != ncclSuccess) worst = e;
                    }
                    so += s;
                    ro += r;
                  }
                  const ncclResult_t end = ncclGroupEnd();
                  return static_cast<int>(worst != ncclSuccess ? worst : end);
                });
}

Work NcclCommunicator::StartBroadcast(MutableBytes data, int root, const CollectiveOptions& opts) {
  // A pipelined chain from the root: every rank but the last of the ring sends the buffer.
  const int last = (root + size() - 1) % size();
  const uint64_t bytes = size() > 1 && rank() != last ? data.size() : 0;
  return Submit(Collective::kBroadcast, opts, bytes, CrossNodeToRight(bytes), [this, data, root] {
    return static_cast<int>(ncclBroadcast(data.data(), data.data(), data.size(), ncclUint8, root,
                                          impl_->comm, impl_->stream));
  });
}

Work NcclCommunicator::StartBarrier(const CollectiveOptions& opts) {
  return Submit(Collective::kBarrier, opts, 0, 0, [this] {
    return static_cast<int>(ncclAllReduce(impl_->barrier, impl_->barrier, 1, ncclFloat, ncclSum,
                                          impl_->comm, impl_->stream));
  });
}

}  // namespace tern::comm
