#include "daemon/http/http_server.h"

#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/http/dashboard_assets.h"
#include "daemon/http/http_sse.h"
#include "daemon/http/prometheus.h"
#include "infra/http/prometheus_text.h"
#include "infra/rpc/status.h"

namespace tern::daemon {
namespace {

constexpr char kJobId[] = "([A-Za-z0-9._-]{1,128})";
constexpr char kCsp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";
constexpr int64_t kDefaultLogTail = 16 << 10;
constexpr int64_t kMaxLogTail = 1 << 20;

int HttpCode(absl::StatusCode c) {
  switch (c) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kResourceExhausted:
      return 503;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

void Json(httplib::Response& res, const nlohmann::json& body, int status = 200) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(Dump(body) + "\n", "application/json; charset=utf-8");
}

void Error(httplib::Response& res, int status, const std::string& message) {
  Json(res, {{"error", message}}, status);
}

void Error(httplib::Response& res, const absl::Status& st) {
  Error(res, HttpCode(st.code()), std::string(st.message()));
}

int64_t NowMsLocal() { return NowMs(); }

}  // namespace

HttpServer::HttpServer(HttpOptions options, Coordinator* coord, EventLoop* loop,
                       const Authorizer* auth, const JobStats* stats)
    : options_(std::move(options)),
      coord_(coord),
      loop_(loop),
      auth_(auth),
      stats_(stats),
      server_(std::make_unique<infra::BoundedServer>(options_.limits)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() {
  if (options_.max_event_streams < 0 ||
      options_.max_event_streams > options_.limits.max_connections / 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http-max-event-streams ", options_.max_event_streams, " must be 0..",
                     options_.limits.max_connections / 2,
                     " (half of --http-max-connections): event streams must not starve the API"));
  }
  server_->set_default_headers({{"Content-Security-Policy", kCsp},
                                {"X-Content-Type-Options", "nosniff"},
                                {"X-Frame-Options", "DENY"},
                                {"Referrer-Policy", "no-referrer"},
                                {"Cross-Origin-Resource-Policy", "same-origin"},
                                {"Cross-Origin-Opener-Policy", "same-origin"}});
  Routes();
  auto port = listener_.Start(server_.get(), options_.address, "--http");
  if (!port.ok()) return port.status();
  spdlog::info("dashboard at http://{}:{}/ (Prometheus at /metrics)",
               options_.address.substr(0, options_.address.rfind(':')), *port);
  return absl::OkStatus();
}

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    for (SseStream* s : streams_) s->Interrupt();
  }
  listener_.Stop();
}

bool HttpServer::HostAllowed(const std::string& header) const {
  if (header.empty()) return true;  // HTTP/1.0
  std::string host = header;
  if (host.front() == '[') {
    host = host.substr(1, host.find(']') == std::string::npos ? 0 : host.find(']') - 1);
  } else if (host.find(':') != std::string::npos && host.find(':') == host.rfind(':')) {
    host = host.substr(0, host.find(':'));
  }
  unsigned char buf[16];
  if (host == "localhost" || ::inet_pton(AF_INET, host.c_str(), buf) == 1 ||
      ::inet_pton(AF_INET6, host.c_str(), buf) == 1) {
    return true;
  }
  for (const auto& h : options_.allowed_hosts) {
    if (host == h) return true;
  }
  return false;
}

namespace {

// The value of cookie `name` in a Cookie header, URL-decoded; "" if absent.
std::string CookieValue(const std::string& header, const std::string& name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    std::string_view part(header.data() + pos, end - pos);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name &&
        part[name.size()] == '=') {
      std::string out;
      const std::string_view v = part.substr(name.size() + 1);
      for (size_t i = 0; i < v.size(); ++i) {
        int hex = 0;
        if (v[i] == '%' && i + 2 < v.size() &&
            absl::SimpleHexAtoi(std::string(v.substr(i + 1, 2)), &hex)) {
          out += static_cast<char>(hex);
          i += 2;
        } else {
          out += v[i];
        }
      }
      return out;
    }
    pos = end + 1;
  }
  return "";
}

}  // namespace

absl::Status HttpServer::CheckRead(const httplib::Request& req) const {
  if (!auth_->read_protected()) return absl::OkStatus();
  std::string authorization = req.get_header_value("Authorization");
  if (authorization.empty()) {
    const std::string cookie = CookieValue(req.get_header_value("Cookie"), "tern_token");
    if (!cookie.empty()) authorization = "Bearer " + cookie;
  }
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "this ternd needs a token for job data --> hint: send \"Authorization: Bearer "
        "<token>\" (a read or admin token; Prometheus: authorization.credentials_file), or "
        "enter it in the dashboard");
  }
  return auth_->CheckHeader(authorization, Role::kRead);
}

template <class T>
std::optional<T> HttpServer::OnLoop(std::function<T()> fn) {
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<T> value;
  };
  auto state = std::make_shared<State>();
  loop_->Post([state, fn = std::move(fn)] {
    T v = fn();
    std::lock_guard<std::mutex> lock(state->mu);
    state->value = std::move(v);
    state->cv.notify_all();
  });
  std::unique_lock<std::mutex> lock(state->mu);
  state->cv.wait_for(lock, std::chrono::seconds(10), [&] { return state->value.has_value(); });
  return std::move(state->value);
}

std::optional<ClusterSnapshot> HttpServer::Snapshot() {
  return OnLoop<ClusterSnapshot>([coord = coord_, stats = stats_, max = options_.max_jobs] {
    ClusterSnapshot s;
    s.now_ms = NowMs();
    s.jobs = coord->ListJobs(tern::v1::JOB_STATE_UNSPECIFIED, max);
    s.workers = coord->ListWorkers();
    for (const auto& j : s.jobs) {
      if (const JobAggregate* a = stats->Find(j.id())) s.stats[j.id()] = *a;
    }
    s.watch_streams = coord->hub()->total_watchers();
    return s;
  });
}

void HttpServer::Routes() {
  auto& s = *server_;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!HostAllowed(req.get_header_value("Host"))) {
      Error(res, 421,
            "unexpected Host header --> hint: use an IP address or localhost, or start "
            "ternd with --http-allow-host <name>");
      return httplib::Server::HandlerResponse::Handled;
    }
    // Job data (everything under /api, and /metrics) needs a token when tokens are set.
    if (req.path.rfind("/api/", 0) == 0 || req.path == "/metrics") {
      if (auto st = CheckRead(req); !st.ok()) {
        res.set_header("WWW-Authenticate", "Bearer realm=\"ternd\"");
        Error(res, st);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  auto asset = [this](const httplib::Request& req, httplib::Response& res) {
    ServeAsset(req, res);
  };
  s.Get("/", asset);
  s.Get(R"(/assets/[A-Za-z0-9._-]+)", asset);
  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok\n", "text/plain; charset=utf-8");
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { ServeMetrics(res); });
  s.Get("/api/cluster",
        [this](const httplib::Request&, httplib::Response& res) { ServeCluster(res); });
  s.Get("/api/jobs", [this](const httplib::Request&, httplib::Response& res) { ServeJobs(res); });
  s.Get(absl::StrCat("/api/jobs/", kJobId),
        [this](const httplib::Request& req, httplib::Response& res) {
          ServeJob(req.matches[1], res);
        });
  s.Get(absl::StrCat("/api/jobs/", kJobId, "/events"),
        [this](const httplib::Request& req, httplib::Response& res) {
          ServeEvents(req.matches[1], req, res);
        });
  s.Get(absl::StrCat("/api/jobs/", kJobId, "/logs/([0-9]{1,6})"),
        [this](const httplib::Request& req, httplib::Response& res) {
          ServeLog(req.matches[1], std::stoi(req.matches[2]), req, res);
        });
  s.Post(absl::StrCat("/api/jobs/", kJobId, "/cancel"),
         [this](const httplib::Request& req, httplib::Response& res) {
           ServeCancel(req.matches[1], req, res);
         });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (res.body.empty()) {
      Error(res, res.status,
            res.status == 404 ? absl::StrCat("no such page: ", req.path)
                              : absl::StrCat("HTTP ", res.status));
    }
  });
}

void HttpServer::ServeAsset(const httplib::Request& req, httplib::Response& res) {
  const DashboardAsset* a = FindDashboardAsset(req.path);
  if (!a) return Error(res, 404, absl::StrCat("no such asset: ", req.path));
  res.set_header("Cache-Control", "no-cache");
  res.set_content(reinterpret_cast<const char*>(a->data), a->size, DashboardContentType(a->path));
}

void HttpServer::ServeCluster(httplib::Response& res) {
  auto snap = Snapshot();
  if (!snap) return Error(res, 503, "ternd is busy or shutting down");
  nlohmann::json workers = nlohmann::json::array();
  int slots = 0, used = 0, connected = 0;
  for (const auto& w : snap->workers) {
    workers.push_back(WorkerJson(w, snap->now_ms));
    if (!w.connected()) continue;
    ++connected;
    slots += w.slots();
    used += w.used_slots();
  }
  Json(res, {{"now_ms", snap->now_ms},
             {"workers", workers},
             {"connected_workers", connected},
             {"slots", slots},
             {"used_slots", used}});
}

void HttpServer::ServeJobs(httplib::Response& res) {
  auto snap = Snapshot();
  if (!snap) return Error(res, 503, "ternd is busy or shutting down");
  nlohmann::json jobs = nlohmann::json::array();
  for (const auto& j : snap->jobs) {
    auto it = snap->stats.find(j.id());
    jobs.push_back(
        JobSummaryJson(j, it == snap->stats.end() ? nullptr : &it->second, snap->now_ms));
  }
  Json(res, {{"now_ms", snap->now_ms}, {"jobs", jobs}});
}

void HttpServer::ServeJob(const std::string& id, httplib::Response& res) {
  struct One {
    absl::Status status;
    tern::v1::Job job;
    std::optional<JobAggregate> agg;
  };
  auto one = OnLoop<One>([coord = coord_, stats = stats_, id] {
    One o;
    auto job = coord->GetJob(id);
    o.status = job.status();
    if (job.ok()) o.job = std::move(*job);
    if (const JobAggregate* a = stats->Find(id)) o.agg = *a;
    return o;
  });
  if (!one) return Error(res, 503, "ternd is busy or shutting down");
  if (!one->status.ok()) return Error(res, one->status);
  nlohmann::json out = JobSummaryJson(one->job, one->agg ? &*one->agg : nullptr, NowMsLocal());
  std::string spec;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  if (google::protobuf::util::MessageToJsonString(one->job.spec(), &spec, opts).ok()) {
    out["spec"] = nlohmann::json::parse(spec, nullptr, /*allow_exceptions=*/false);
  }
  Json(res, out);
}

void HttpServer::ServeEvents(const std::string& id, const httplib::Request& req,
                             httplib::Response& res) {
  if (!coord_->JobExists(id)) return Error(res, 404, absl::StrCat("no job ", id));
  std::string last = req.get_header_value("Last-Event-ID");
  if (last.empty() && req.has_param("last_event_id")) last = req.get_param_value("last_event_id");
  auto stream = std::make_shared<SseStream>(
      [](const tern::v1::Job& job) { return Dump(JobSummaryJson(job, nullptr, NowMs())); },
      last.empty() ? std::nullopt : ParseSseCursor(last), options_.max_stream_queue);
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    if (stopping_) return Error(res, 503, "ternd is shutting down");
    if (static_cast<int>(streams_.size()) >= options_.max_event_streams) {
      res.set_header("Retry-After", "5");
      return Error(res, 503, "too many open event streams");
    }
    streams_.insert(stream.get());
  }
  loop_->Post([coord = coord_, id, sink = stream->sink()] {
    if (auto st = coord->Watch(id, sink); !st.ok()) sink->Close(infra::ToGrpc(st));
  });
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Accel-Buffering", "no");
  auto last_write =
      std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
  auto first = std::make_shared<bool>(true);
  res.set_chunked_content_provider(
      // Exactly "text/event-stream": cpp-httplib gzips any other text/* type for clients that
      // accept it, and its compressor holds events back until a block fills.
      "text/event-stream",
      [stream, last_write, first](size_t, httplib::DataSink& sink) {
        std::string out = *first ? "retry: 1000\n\n" : "";
        *first = false;
        const auto next = stream->Pop(std::chrono::milliseconds(250), 64 << 10, &out);
        const auto now = std::chrono::steady_clock::now();
        if (out.empty() && now - *last_write > std::chrono::seconds(15)) out = ": keepalive\n\n";
        if (!out.empty()) {
          if (!sink.write(out.data(), out.size())) return false;
          *last_write = now;
        }
        if (next == SseStream::Next::kEnd) sink.done();
        return true;
      },
      [this, stream](bool) {
        std::lock_guard<std::mutex> lock(streams_mu_);
        streams_.erase(stream.get());
      });
}

void HttpServer::ServeLog(const std::string& id, int rank, const httplib::Request& req,
                          httplib::Response& res) {
  if (!coord_->JobExists(id)) return Error(res, 404, absl::StrCat("no job ", id));
  int64_t tail = kDefaultLogTail;
  if (req.has_param("tail") &&
      (!absl::SimpleAtoi(req.get_param_value("tail"), &tail) || tail < 0 || tail > kMaxLogTail)) {
    return Error(res, 400, absl::StrCat("tail must be 0..", kMaxLogTail, " bytes"));
  }
  const std::string path = coord_->LogPath(id, rank);
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(res, 404, absl::StrCat("no log yet for rank ", rank, " of job ", id));
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  const int64_t from = std::max<int64_t>(0, size - tail);
  std::string data(static_cast<size_t>(size - from), '\0');
  in.seekg(from);
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  data.resize(static_cast<size_t>(std::max<std::streamsize>(0, in.gcount())));
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Log-Size", std::to_string(size));
  res.set_header("X-Log-Offset", std::to_string(from));
  res.set_content(data, "text/plain; charset=utf-8");
}

void HttpServer::ServeCancel(const std::string& id, const httplib::Request& req,
                             httplib::Response& res) {
  if (!auth_->admin_enabled()) {
    return Error(res, 403,
                 "the dashboard is read-only --> hint: start ternd with --auth-token-file and "
                 "present that admin token to cancel");
  }
  if (auto st = auth_->CheckHeader(req.get_header_value("Authorization"), Role::kAdmin); !st.ok()) {
    return Error(res, st);
  }
  auto job = OnLoop<absl::StatusOr<tern::v1::Job>>(
      [coord = coord_, id] { return coord->Cancel(id, "cancelled from the dashboard"); });
  if (!job) return Error(res, 503, "ternd is busy or shutting down");
  if (!job->ok()) return Error(res, job->status());
  spdlog::info("job {} cancelled over HTTP by {}", id, req.remote_addr);
  Json(res, {{"id", id}, {"state", StateName((*job)->state())}});
}

void HttpServer::ServeMetrics(httplib::Response& res) {
  auto snap = Snapshot();
  if (!snap) return Error(res, 503, "ternd is busy or shutting down");
  res.set_header("Cache-Control", "no-store");
  res.set_content(RenderPrometheus(*snap), infra::PrometheusText::kContentType);
}

}  // namespace tern::daemon
