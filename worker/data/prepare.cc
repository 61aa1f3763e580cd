#include "worker/data/prepare.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"
#include "worker/core/status.h"
#include "worker/data/mapped_file.h"
#include "worker/data/rng.h"
#include "worker/data/tokenizer.h"

namespace tern::data {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kValSplitStream = 0x76616c5f73706c74ull;  // "val_splt"

struct DocExtent {
  int32_t file;
  uint64_t offset;
  uint64_t length;
};

// Splits one input into documents (see PrepareOptions::doc_separator).
void SplitDocuments(const MappedFile& file, int32_t file_index, const std::string& separator,
                    std::vector<DocExtent>* docs, PrepareReport* report) {
  const char* data = reinterpret_cast<const char*>(file.data());
  const uint64_t size = file.size();
  auto emit = [&](uint64_t begin, uint64_t end) {
    if (end > begin) {
      docs->push_back({file_index, begin, end - begin});
    } else {
      ++report->empty_docs_dropped;
    }
  };
  if (separator.empty()) {
    emit(0, size);
    return;
  }
  uint64_t doc_begin = 0;
  uint64_t line_begin = 0;
  while (line_begin < size) {
    const void* nl = std::memchr(data + line_begin, '\n', size - line_begin);
    const uint64_t line_end = nl ? static_cast<const char*>(nl) - data : size;  // excludes '\n'
    std::string_view line(data + line_begin, line_end - line_begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const uint64_t next = nl ? line_end + 1 : size;
    if (line == separator) {
      emit(doc_begin, line_begin);
      ++report->separator_lines;
      doc_begin = next;
    }
    line_begin = next;
  }
  emit(doc_begin, size);
}

int64_t ValCount(int64_t n, double fraction) {
  if (fraction <= 0.0 || n < 2) return 0;
  return std::clamp<int64_t>(std::llround(static_cast<double>(n) * fraction), 1, n - 1);
}

// Checks options and expands inputs; nothing is written.
absl::Status ValidateOptions(const PrepareOptions& options, PrepareReport* report) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("prepare: no input files given");
  if (options.output_prefix.empty()) {
    return absl::InvalidArgumentError("prepare: output_prefix is empty");
  }
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prepare: val_fraction must be in [0, 1), got ", options.val_fraction));
  }
  std::vector<std::string> missing;
  for (const std::string& input : options.inputs) {
    std::error_code ec;
    fs::file_status st = fs::status(input, ec);
    if (st.type() == fs::file_type::not_found) {
      missing.push_back(input);
    } else if (ec) {
      return absl::UnavailableError(
          absl::StrCat("prepare: cannot stat input '", input, "': ", ec.message()));
    } else if (fs::is_directory(st)) {
      TERN_ASSIGN_OR_RETURN(std::vector<std::string> files, ListCorpusFiles(input));
      for (std::string& f : files) report->input_files.push_back(std::move(f));
    } else if (fs::is_regular_file(st)) {
      report->input_files.push_back(input);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("prepare: input '", input, "' is neither a file nor a directory"));
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat("prepare: input file(s) not found: '", absl::StrJoin(missing, "', '"), "'"));
  }
  return absl::OkStatus();
}

// Removes the temporaries unless Release() was called.
struct TempFiles {
  std::vector<std::string> paths;
  bool keep = false;
  ~TempFiles() {
    if (keep) return;
    for (const std::string& p : paths) std::remove(p.c_str());
  }
};

absl::Status SyncDirectory(const std::string& prefix) {
  fs::path dir = fs::path(prefix).parent_path();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FileError(errno, "output directory", dir.string(), "cannot open");
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return FileError(err, "output directory", dir.string(), "cannot fsync");
  return absl::OkStatus();
}

}  // namespace

uint64_t ValSplitSeed(uint64_t seed) { return DeriveSeed(seed, kValSplitStream); }

absl::StatusOr<SplitCounts> WriteSplitDatasets(
    const std::string& prefix, DType dtype, int64_t count,
    const std::function<bool(int64_t)>& is_val,
    const std::function<absl::Status(int64_t, std::vector<int32_t>*)>& document) {
  const std::string val_prefix = ValPrefix(prefix);
  const std::string tmp = absl::StrCat(".tmp-", ::getpid());
  const std::string paths[4] = {BinPath(prefix), IdxPath(prefix), BinPath(val_prefix),
                                IdxPath(val_prefix)};
  TempFiles temps;
  for (const std::string& p : paths) temps.paths.push_back(p + tmp);
  TERN_ASSIGN_OR_RETURN(auto train,
                        IndexedDatasetBuilder::Create(temps.paths[0], temps.paths[1], dtype));
  TERN_ASSIGN_OR_RETURN(auto val,
                        IndexedDatasetBuilder::Create(temps.paths[2], temps.paths[3], dtype));
  std::vector<int32_t> tokens;
  for (int64_t d = 0; d < count; ++d) {
    TERN_RETURN_IF_ERROR(document(d, &tokens));
    TERN_RETURN_IF_ERROR((is_val(d) ? val : train)->AddDocument(tokens));
  }
  TERN_RETURN_IF_ERROR(train->Finish());
  TERN_RETURN_IF_ERROR(val->Finish());
  for (int i = 0; i < 4; ++i) {
    if (std::rename(temps.paths[i].c_str(), paths[i].c_str()) != 0) {
      return FileError(errno, "dataset file", paths[i], "cannot rename temporary into");
    }
  }
  temps.keep = true;
  TERN_RETURN_IF_ERROR(SyncDirectory(prefix));
  return SplitCounts{train->num_documents(), val->num_documents(), train->num_tokens(),
                     val->num_tokens()};
}

absl::Status CheckOutputDirectory(const std::string& what, const std::string& prefix) {
  fs::path out_dir = fs::path(prefix).parent_path();
  if (out_dir.empty()) out_dir = ".";
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(what, ": output directory '", out_dir.string(),
                                            "' of output_prefix '", prefix, "' does not exist"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PrepareReport> PrepareDataset(const PrepareOptions& options) {
  TERN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, MakeTokenizer(options.tokenizer));
  PrepareReport report;
  report.train_prefix = options.output_prefix;
  report.val_prefix = ValPrefix(options.output_prefix);
  report.tokenizer = tokenizer->name();
  report.vocab_size = tokenizer->vocab_size();
  report.dtype = DTypeForVocab(report.vocab_size);
  TERN_RETURN_IF_ERROR(ValidateOptions(options, &report));
  TERN_RETURN_IF_ERROR(CheckOutputDirectory("prepare", options.output_prefix));

  std::vector<MappedFile> files;
  std::vector<DocExtent> docs;
  for (size_t i = 0; i < report.input_files.size(); ++i) {
    TERN_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(report.input_files[i], "input"));
    report.input_bytes += file.size();
    SplitDocuments(file, static_cast<int32_t>(i), options.doc_separator, &docs, &report);
    files.push_back(std::move(file));
  }
  const int64_t n = static_cast<int64_t>(docs.size());
  if (n == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prepare: no non-empty documents in ", report.input_files.size(), " input file(s) (",
        report.input_bytes, " bytes, separator '", options.doc_separator, "')"));
  }
  std::vector<uint64_t> perm;
  FillPermutation(static_cast<uint64_t>(n), ValSplitSeed(options.seed), &perm);
  std::vector<bool> is_val(n, false);
  const int64_t n_val = ValCount(n, options.val_fraction);
  for (int64_t k = 0; k < n_val; ++k) is_val[perm[k]] = true;

  TERN_ASSIGN_OR_RETURN(
      SplitCounts counts,
      WriteSplitDatasets(
          report.train_prefix, report.dtype, n, [&](int64_t d) { return is_val[d]; },
          [&](int64_t d, std::vector<int32_t>* tokens) {
            const DocExtent& doc = docs[d];
            tokens->clear();
            tokenizer->Encode(
                std::string_view(reinterpret_cast<const char*>(files[doc.file].data()) + doc.offset,
                                 doc.length),
                tokens);
            return absl::OkStatus();
          }));
  for (int64_t d = 0; d < n; ++d)
    if (is_val[d]) report.val_doc_ids.push_back(d);
  report.train_docs = counts.train_docs;
  report.val_docs = counts.val_docs;
  report.train_tokens = counts.train_tokens;
  report.val_tokens = counts.val_tokens;
  spdlog::info("prepared {}: {} train docs ({} tokens), {} val docs ({} tokens) from {} file(s)",
               report.train_prefix, report.train_docs, report.train_tokens, report.val_docs,
               report.val_tokens, report.input_files.size());
  return report;
}

nlohmann::json PrepareReport::ToJson() const {
  return nlohmann::json{{"train_prefix", train_prefix},
                        {"val_prefix", val_prefix},
                        {"tokenizer", tokenizer},
                        {"vocab_size", vocab_size},
                        {"dtype", DTypeName(dtype)},
                        {"input_files", input_files.size()},
                        {"input_bytes", input_bytes},
                        {"separator_lines", separator_lines},
                        {"empty_docs_dropped", empty_docs_dropped},
                        {"train_docs", train_docs},
                        {"val_docs", val_docs},
                        {"train_tokens", train_tokens},
                        {"val_tokens", val_tokens}};
}

absl::StatusOr<std::vector<std::string>> ListCorpusFiles(const std::string& dir) {
  std::error_code ec;
  fs::file_status st = fs::status(dir, ec);
  if (st.type() == fs::file_type::not_found) {
    return absl::NotFoundError(absl::StrCat("corpus directory '", dir, "' not found"));
  }
  if (!fs::is_directory(st)) {
    return absl::InvalidArgumentError(absl::StrCat("'", dir, "' is not a directory"));
  }
  std::vector<std::string> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    if (name.ends_with(".dat") || name.ends_with(".u8")) continue;
    std::error_code type_ec;
    if (!fs::is_regular_file(it->path(), type_ec)) continue;
    files.push_back(it->path().string());
  }
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot list corpus directory '", dir, "': ", ec.message()));
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace tern::data
