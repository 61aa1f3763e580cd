// The cluster subcommands of `tern`: submit, jobs, show, watch, cancel, logs, workers.
// Each talks to ternd over gRPC (client/cluster/cli_common.h); exit codes: 0 ok, 1 runtime
// failure, 2 bad input; watch (and submit --watch): 0 SUCCEEDED, 1 FAILED, 3 CANCELLED.
#include "client/commands.h"

#include <iomanip>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cluster/cli_common.h"
#include "client/cluster/format.h"
#include "client/engine/spec_cli.h"
#include "infra/rpc/channel.h"
#include "worker/core/text.h"
#include "worker/spec/spec.h"

namespace tern::cli {
namespace {

using tern::cluster::Conn;
using tern::cluster::ConnOptions;
using tern::cluster::Fail;
using tern::infra::FromGrpc;
using tern::infra::MakeContext;

constexpr std::chrono::milliseconds kTimeout(10000);

// A table cell of at most `width` - 1 columns: escaped (worker/core/text.h), cut with "...".
std::string Cell(const std::string& text, size_t width) {
  std::string p = tern::Printable(text, width);
  if (p.size() > width - 1) p = p.substr(0, width - 4) + "...";
  return p;
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Runs `body(conn)` after connecting; maps connection errors to exit codes.
template <class Body>
void Run(const std::string& cmd, const ConnOptions& o, int* exit_code, Body body) {
  auto conn = tern::cluster::Connect(o);
  if (!conn.ok()) {
    *exit_code = Fail(cmd, conn.status(), o.coordinator);
    return;
  }
  *exit_code = body(*conn);
}

void AddSubmit(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string spec;
    std::vector<std::string> sets;
    bool watch = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("submit", "submit a job spec to ternd; prints the job id");
  cmd->add_option("spec", o->spec, "job spec JSON file")->required();
  cmd->add_option("--set", o->sets, "override a field: key.path=value (value parsed as JSON)");
  cmd->add_flag("--watch", o->watch, "follow the job; exit 0 only if it succeeds");
  tern::cluster::AddConnOptions(cmd, &o->conn, /*with_json=*/true);
  cmd->callback([o, exit_code] {
    // The same pipeline ternd runs, as a pre-check: a bad spec never leaves this machine.
    // ternd's reply carries the warnings, printed below.
    auto spec = tern::spec::LoadJobSpec(o->spec, o->sets);
    tern::spec::ResolveOptions ro;
    ro.check_files = false;
    ro.cluster = true;
    ro.default_checkpoint_dir = true;
    absl::Status checked = spec.ok() ? tern::spec::ResolveJob(*spec, ro).status() : spec.status();
    if (!checked.ok()) {
      *exit_code = Fail("submit", checked);
      return;
    }
    Run("submit", o->conn, exit_code, [&](Conn& c) {
      tern::v1::SubmitJobRequest req;
      *req.mutable_spec() = *spec;
      tern::v1::SubmitJobResponse resp;
      auto ctx = MakeContext(c.token, kTimeout);
      auto st = FromGrpc(c.jobs->SubmitJob(ctx.get(), req, &resp), "SubmitJob");
      if (!st.ok()) return Fail("submit", st, c.address);
      tern::cli::PrintSpecWarnings({resp.warnings().begin(), resp.warnings().end()});
      if (o->conn.json) {
        std::cout << nlohmann::json{{"id", resp.job_id()}}.dump() << std::endl;
      } else {
        std::cout << resp.job_id() << std::endl;
      }
      return o->watch ? tern::cluster::WatchJob(c, resp.job_id(), o->conn.json, std::cout) : 0;
    });
  });
}

void AddJobs(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    int limit = 50;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("jobs", "list jobs, newest first");
  cmd->add_option("--limit", o->limit, "most jobs to list")->capture_default_str();
  tern::cluster::AddConnOptions(cmd, &o->conn, true);
  cmd->callback([o, exit_code] {
    Run("jobs", o->conn, exit_code, [&](Conn& c) {
      // Pages until --limit jobs: a page stops at ternd's response byte budget.
      tern::v1::ListJobsResponse resp;
      std::string before;
      const int want = o->limit > 0 ? o->limit : 1000;
      while (resp.jobs_size() < want) {
        tern::v1::ListJobsRequest req;
        req.set_limit(want - resp.jobs_size());
        req.set_before_id(before);
        tern::v1::ListJobsResponse page;
        auto ctx = MakeContext(c.token, kTimeout);
        auto st = FromGrpc(c.jobs->ListJobs(ctx.get(), req, &page), "ListJobs");
        if (!st.ok()) return Fail("jobs", st, c.address);
        for (auto& j : *page.mutable_jobs()) *resp.add_jobs() = std::move(j);
        before = page.next_before_id();
        if (before.empty() || page.jobs_size() == 0) break;
      }
      if (o->conn.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& j : resp.jobs()) arr.push_back(tern::cluster::JobToJson(j));
        std::cout << nlohmann::json{{"jobs", arr}}.dump(2) << std::endl;
        return 0;
      }
      std::cout << std::left << std::setw(10) << "ID" << std::setw(22) << "NAME" << std::setw(11)
                << "STATE" << std::setw(7) << "WORLD" << std::setw(14) << "STEP" << std::setw(10)
                << "LOSS" << std::setw(8) << "AGE"
                << "MESSAGE\n";
      for (const auto& j : resp.jobs()) {
        const auto& m = j.last_metric();
        auto loss = m.values().find("loss");
        std::cout << std::setw(10) << Cell(j.id(), 10) << std::setw(22) << Cell(j.spec().name(), 22)
                  << std::setw(11) << tern::cluster::StateName(j.state()) << std::setw(7)
                  << j.world_size() << std::setw(14)
                  << absl::StrCat(m.step(), "/", j.spec().train_iters()) << std::setw(10)
                  << (loss == m.values().end() ? std::string("-")
                                               : absl::StrFormat("%.4f", loss->second))
                  << std::setw(8) << tern::cluster::FormatDuration(NowMs() - j.created_ms())
                  << tern::Printable(j.message(), 160) << "\n";
      }
      return 0;
    });
  });
}

void AddShow(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string job;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("show", "show one job");
  cmd->add_option("job", o->job, "job id")->required();
  tern::cluster::AddConnOptions(cmd, &o->conn, true);
  cmd->callback([o, exit_code] {
    Run("show", o->conn, exit_code, [&](Conn& c) {
      tern::v1::GetJobRequest req;
      req.set_job_id(o->job);
      tern::v1::Job job;
      auto ctx = MakeContext(c.token, kTimeout);
      auto st = FromGrpc(c.jobs->GetJob(ctx.get(), req, &job), "GetJob " + o->job);
      if (!st.ok()) return Fail("show", st, c.address);
      if (o->conn.json) {
        std::cout << tern::cluster::JobToJson(job).dump(2) << std::endl;
        return 0;
      }
      std::cout << "id:       " << job.id() << "\nname:     " << tern::Printable(job.spec().name())
                << "\nstate:    " << tern::cluster::StateName(job.state())
                << "\nround:    " << job.round() << "\nworld:    " << job.world_size()
                << "\nsteps:    " << job.spec().train_iters() << "\n";
      if (!job.message().empty())
        std::cout << "message:  " << tern::Printable(job.message(), 4096) << "\n";
      std::vector<std::string> placement;
      for (const auto& p : job.placement())
        placement.push_back(absl::StrCat(p.rank(), "@", tern::Printable(p.worker())));
      if (!placement.empty()) std::cout << "ranks:    " << absl::StrJoin(placement, " ") << "\n";
      if (job.has_last_metric()) {
        std::cout << "progress: "
                  << tern::cluster::ProgressLine(job.last_metric(), job.spec().train_iters(), 0)
                  << "\n";
      }
      for (const std::string& line : tern::cluster::StatsLines(job)) std::cout << line << "\n";
      return 0;
    });
  });
}

void AddWatch(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string job;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd =
      app.add_subcommand("watch", "follow a job live; exit 0 SUCCEEDED, 1 FAILED, 3 CANCELLED");
  cmd->add_option("job", o->job, "job id")->required();
  tern::cluster::AddConnOptions(cmd, &o->conn, true);
  cmd->callback([o, exit_code] {
    Run("watch", o->conn, exit_code,
        [&](Conn& c) { return tern::cluster::WatchJob(c, o->job, o->conn.json, std::cout); });
  });
}

void AddCancel(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string job, reason;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("cancel", "cancel a job (its ranks get SIGTERM, then SIGKILL)");
  cmd->add_option("job", o->job, "job id")->required();
  cmd->add_option("--reason", o->reason, "recorded in the job's message");
  tern::cluster::AddConnOptions(cmd, &o->conn, true);
  cmd->callback([o, exit_code] {
    Run("cancel", o->conn, exit_code, [&](Conn& c) {
      tern::v1::CancelJobRequest req;
      req.set_job_id(o->job);
      req.set_reason(o->reason);
      tern::v1::Job job;
      auto ctx = MakeContext(c.token, kTimeout);
      auto st = FromGrpc(c.jobs->CancelJob(ctx.get(), req, &job), "CancelJob " + o->job);
      if (!st.ok()) return Fail("cancel", st, c.address);
      if (o->conn.json) {
        std::cout << tern::cluster::JobToJson(job).dump(2) << std::endl;
      } else {
        std::cout << tern::Printable(job.id()) << " " << tern::cluster::StateName(job.state())
                  << std::endl;
      }
      return 0;
    });
  });
}

void AddDrain(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string worker, reason;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "drain",
      "a worker is going away: stop its rounds (elastic jobs continue elsewhere) and "
      "place nothing new there");
  cmd->add_option("worker", o->worker, "worker name")->required();
  cmd->add_option("--reason", o->reason, "recorded in the jobs' events");
  tern::cluster::AddConnOptions(cmd, &o->conn, true);
  cmd->callback([o, exit_code] {
    Run("drain", o->conn, exit_code, [&](Conn& c) {
      tern::v1::DrainWorkerRequest req;
      req.set_worker(o->worker);
      req.set_reason(o->reason);
      tern::v1::DrainWorkerResponse resp;
      auto ctx = MakeContext(c.token, kTimeout);
      auto st = FromGrpc(c.jobs->DrainWorker(ctx.get(), req, &resp), "DrainWorker " + o->worker);
      if (!st.ok()) return Fail("drain", st, c.address);
      if (o->conn.json) {
        std::cout << nlohmann::json{{"worker", o->worker},
                                    {"jobs", std::vector<std::string>(resp.jobs().begin(),
                                                                      resp.jobs().end())}}
                         .dump()
                  << std::endl;
      } else {
        std::cout << "draining " << tern::Printable(o->worker) << ": " << resp.jobs_size()
                  << " job(s) moved away" << std::endl;
      }
      return 0;
    });
  });
}

void AddLogs(CLI::App& app, int* exit_code) {
  struct Opts {
    ConnOptions conn;
    std::string job;
    int rank = 0;
    bool follow = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("logs", "print a rank's log (stdout and stderr)");
  cmd->add_option("job", o->job, "job id")->required();
  cmd->add_option("--rank", o->rank, "which rank")->capture_default_str();
  cmd->add_flag("-f,--follow", o->follow, "keep printing until the job ends");
  tern::cluster::AddConnOptions(cmd, &o->conn, false);
  cmd->callback([o, exit_code] {
    Run("logs", o->conn, exit_code, [&](Conn& c) {
      tern::v1::GetLogsRequest req;
      req.set_job_id(o->job);
      req.set_rank(o->rank);
      req.set_follow(o->follow);
      auto ctx = MakeContext(c.token, o->follow ? std::chrono::milliseconds(0) : kTimeout);
      auto reader = c.jobs->GetLogs(ctx.get(), req);
      tern::v1::LogChunk chunk;
      while (reader->Read(&chunk)) std::cout.write(chunk.data().data(), chunk.data().size());
      std::cout.flush();
      auto st = FromGrpc(reader->Finish(), "GetLogs " + o->job);
      return st.ok() ? 0 : Fail("logs", st, c.address);
    });
  });
}

void AddWorkers(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<ConnOptions>();
  auto* cmd = app.add_subcommand("workers", "list the workers ternd knows");
  tern::cluster::AddConnOptions(cmd, o.get(), true);
  cmd->callback([o, exit_code] {
    Run("workers", *o, exit_code, [&](Conn& c) {
      tern::v1::ListWorkersResponse resp;
      auto ctx = MakeContext(c.token, kTimeout);
      auto st = FromGrpc(c.jobs->ListWorkers(ctx.get(), {}, &resp), "ListWorkers");
      if (!st.ok()) return Fail("workers", st, c.address);
      if (o->json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& w : resp.workers()) arr.push_back(tern::cluster::WorkerToJson(w));
        std::cout << nlohmann::json{{"workers", arr}}.dump(2) << std::endl;
        return 0;
      }
      std::cout << std::left << std::setw(20) << "NAME" << std::setw(20) << "HOST" << std::setw(8)
                << "SLOTS" << std::setw(7) << "USED" << std::setw(11) << "CONNECTED"
                << std::setw(12) << "HEARTBEAT"
                << "JOBS\n";
      for (const auto& w : resp.workers()) {
        std::cout << std::setw(20) << Cell(w.name(), 20) << std::setw(20) << Cell(w.host(), 20)
                  << std::setw(8) << w.slots() << std::setw(7) << w.used_slots() << std::setw(11)
                  << (w.connected() ? "yes" : "no") << std::setw(12)
                  << (tern::cluster::FormatDuration(NowMs() - w.last_heartbeat_ms()) + " ago")
                  << tern::Printable(absl::StrJoin(w.jobs(), ","), 1024) << "\n";
        if (!w.cpu_sets().empty()) {
          std::cout << "  cpus per slot: "
                    << tern::Printable(absl::StrJoin(w.cpu_sets(), " | "), 1024) << "\n";
        }
        for (const auto& warning : w.warnings())
          std::cout << "  warning: " << tern::Printable(warning, 1024) << "\n";
      }
      return 0;
    });
  });
}

}  // namespace

void AddClusterCommands(CLI::App& app, int* exit_code) {
  AddSubmit(app, exit_code);
  AddJobs(app, exit_code);
  AddShow(app, exit_code);
  AddWatch(app, exit_code);
  AddCancel(app, exit_code);
  AddLogs(app, exit_code);
  AddDrain(app, exit_code);
  AddWorkers(app, exit_code);
}

}  // namespace tern::cli
