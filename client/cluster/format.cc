#include "client/cluster/format.h"

#include <google/protobuf/util/json_util.h>

#include <ctime>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/core/run_text.h"
#include "worker/core/text.h"

namespace tern::cluster {
namespace {

nlohmann::json ProtoToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  std::string s;
  (void)google::protobuf::util::MessageToJsonString(m, &s, opts);
  return nlohmann::json::parse(s, nullptr, false);
}

std::string Si(double v) {
  if (v >= 1e9) return absl::StrFormat("%.1fG", v / 1e9);
  if (v >= 1e6) return absl::StrFormat("%.1fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

}  // namespace

std::string StateName(tern::v1::JobState s) {
  std::string n = tern::v1::JobState_Name(s);
  constexpr char kPrefix[] = "JOB_STATE_";
  return n.rfind(kPrefix, 0) == 0 ? n.substr(sizeof(kPrefix) - 1) : n;
}

std::string FormatDuration(int64_t ms) {
  int64_t s = std::max<int64_t>(0, ms) / 1000;
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

std::vector<std::string> StatsLines(const tern::v1::Job& job) {
  std::vector<std::string> out;
  if (job.goodput() >= 0 && job.started_ms() > 0) {
    out.push_back(
        absl::StrFormat("goodput:  %.1f%% (time in steps that count / wall time since it started)",
                        100 * job.goodput()));
  }
  for (const auto& inc : job.incidents()) {
    std::string line =
        absl::StrFormat("incident: %s in round %d, detected %.1fs after the last step", inc.cause(),
                        inc.round(), inc.detect_s());
    line += inc.resume_s() >= 0 ? absl::StrFormat(", training again %.1fs later", inc.resume_s())
                                : std::string(", not training again yet");
    if (inc.steps_lost() >= 0) line += absl::StrFormat(", %d step(s) lost", inc.steps_lost());
    out.push_back(line);
  }
  return out;
}

nlohmann::json JobToJson(const tern::v1::Job& job) {
  nlohmann::json j = ProtoToJson(job);
  j["id"] = job.id();
  j["state"] = StateName(job.state());
  return j;
}

nlohmann::json WorkerToJson(const tern::v1::WorkerInfo& w) {
  nlohmann::json j = ProtoToJson(w);
  j["name"] = w.name();
  j["slots"] = w.slots();
  j["used_slots"] = w.used_slots();
  j["connected"] = w.connected();
  return j;
}

nlohmann::json WatchItemToJson(const tern::v1::WatchJobResponse& item, int64_t now_ms) {
  nlohmann::json j;
  if (item.has_job()) {
    j = JobToJson(item.job());
    j["type"] = "job";
    j["time_ms"] = now_ms;
  } else if (item.has_event()) {
    const auto& e = item.event();
    j = {{"type", "event"},  {"time_ms", e.time_ms()}, {"job_id", e.job_id()},
         {"kind", e.kind()}, {"message", e.message()}, {"state", StateName(e.state())},
         {"seq", e.seq()}};
    if (e.rank() >= 0) j["rank"] = e.rank();
    if (!e.worker().empty()) j["worker"] = e.worker();
  } else if (item.has_metric()) {
    const auto& m = item.metric();
    j = {{"type", "metric"}, {"time_ms", m.time_ms()}, {"job_id", m.job_id()}, {"kind", m.kind()},
         {"step", m.step()}, {"rank", m.rank()},       {"round", m.round()}};
    for (const auto& [k, v] : m.values()) j[k] = v;
  }
  return j;
}

std::string ProgressLine(const tern::v1::MetricPoint& p, int64_t total, double step_ms) {
  std::string line = total > 0 ? absl::StrFormat("step %d/%d", p.step(), total)
                               : absl::StrFormat("step %d", p.step());
  auto v = [&](const char* k) -> const double* {
    auto it = p.values().find(k);
    return it == p.values().end() ? nullptr : &it->second;
  };
  if (auto* loss = v("loss")) absl::StrAppend(&line, absl::StrFormat("  loss %.4f", *loss));
  if (auto* tps = v("tokens_per_s")) absl::StrAppend(&line, "  tok/s ", Si(*tps));
  if (total > 0 && step_ms > 0 && p.step() <= total) {
    absl::StrAppend(
        &line, "  ETA ",
        FormatDuration(static_cast<int64_t>(step_ms * static_cast<double>(total - p.step()))));
  }
  return line;
}

std::string EventLine(const tern::v1::JobEvent& e) {
  std::time_t t = static_cast<std::time_t>(e.time_ms() / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return absl::StrCat(buf, " [", Printable(e.kind()), "] ",
                      Printable(EventText(e.kind(), e.message()), 4096));
}

std::string MetricLine(const tern::v1::MetricPoint& p) {
  nlohmann::json j = {{"type", p.kind()}, {"step", p.step()}};
  for (const auto& [k, v] : p.values()) j[k] = v;
  if (p.kind() == "eval") return Printable(EvalLine(j), 4096);
  const std::string head = absl::StrCat(Printable(p.kind()), " at step ", p.step(), ":");
  if (p.kind() == "summary") return absl::StrCat(head, " ", Printable(SummaryLine(j), 4096));
  std::string line = head;
  for (const auto& [k, v] : p.values()) absl::StrAppend(&line, " ", Printable(k), "=", v);
  return line;
}

}  // namespace tern::cluster
