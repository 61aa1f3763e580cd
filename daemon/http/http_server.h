// HttpServer: ternd's web side on --http (default 127.0.0.1:8080): the dashboard page
// (embedded assets), JSON under /api, a job's live stream as server-sent events (fed by the
// WatchJob path), rank log tails, Prometheus text at /metrics, and one mutation, cancel,
// which needs the admin bearer token (and ternd started with --auth-token-file): without it
// everything is read-only.
//
// Tokens: the same as gRPC's (rpc/auth.h). With --auth-token-file or --read-token-file,
// everything under /api and /metrics needs a valid token (read, admin or worker), sent as
// "Authorization: Bearer <token>" or, for the browser's EventSource which cannot set
// headers, as the cookie "tern_token" (URL-encoded; the page sets it, SameSite=Strict).
// Cancel takes the admin token from the Authorization header only (never a cookie, so
// another site cannot make the browser cancel). The page shell (/, /assets/*) and /healthz
// hold no job data and stay public.
//
// Connections: an infra::BoundedServer (--http-max-connections, idle and request timeouts);
// event streams hold a connection each and are capped at max_event_streams, which must stay
// at most half of max_connections so streams never starve the JSON API.
//
//   GET  /                                the dashboard (HTML; JS/CSS/Chart.js under /assets/)
//   GET  /api/cluster                     workers: slots, heartbeat age, state
//   GET  /api/jobs                        jobs: state, progress, ETA, goodput, newest values
//   GET  /api/jobs/<id>                   one job, with its spec
//   GET  /api/jobs/<id>/events            text/event-stream (see http_sse.h), Last-Event-ID
//   GET  /api/jobs/<id>/logs/<rank>?tail=N   the last N bytes (default 16 KiB) of a rank's log
//   POST /api/jobs/<id>/cancel            Authorization: Bearer <admin token>
//   GET  /metrics                         Prometheus text exposition
//   GET  /healthz                         "ok"
//
// Every response carries a Content-Security-Policy that allows only this origin. Requests
// whose Host is a name other than localhost (or --http-allow-host) are refused, which keeps
// DNS-rebinding pages away from a loopback dashboard.
//
// Threads: cpp-httplib's pool runs the handlers; they read the Coordinator and JobStats
// only through EventLoop posts. Stop() before the EventLoop stops.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "daemon/http/http_json.h"
#include "daemon/rpc/auth.h"
#include "daemon/state/coordinator.h"
#include "daemon/state/event_loop.h"
#include "daemon/state/job_stats.h"
#include "infra/http/bounded_server.h"
#include "infra/http/http_listener.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace tern::daemon {

class SseStream;

struct HttpOptions {
  std::string address = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  std::vector<std::string> allowed_hosts;  // Host names accepted besides IPs and localhost
  infra::HttpLimits limits;                // connections, timeouts, payload size
  int max_event_streams = 24;              // open /events streams; more get 503
  size_t max_stream_queue = 8192;          // queued items per stream before it is cut off
  int max_jobs = 200;                      // newest jobs listed in /api/jobs and /metrics
};

class HttpServer {
 public:
  HttpServer(HttpOptions options, Coordinator* coord, EventLoop* loop, const Authorizer* auth,
             const JobStats* stats);
  ~HttpServer();  // Stop()

  absl::Status Start();
  int port() const { return listener_.port(); }
  // Ends the event streams, stops accepting and waits for the handlers.
  void Stop();

 private:
  void Routes();
  bool HostAllowed(const std::string& host_header) const;
  // OK when the request may read job data: a valid token in the Authorization header or
  // the tern_token cookie, or no read tokens configured.
  absl::Status CheckRead(const httplib::Request& req) const;
  // Runs `fn` on the EventLoop thread and returns its result (nullopt if the loop does not
  // answer within 10 s). `fn` must capture only long-lived pointers and copies.
  template <class T>
  std::optional<T> OnLoop(std::function<T()> fn);
  std::optional<ClusterSnapshot> Snapshot();

  void ServeAsset(const httplib::Request& req, httplib::Response& res);
  void ServeCluster(httplib::Response& res);
  void ServeJobs(httplib::Response& res);
  void ServeJob(const std::string& id, httplib::Response& res);
  void ServeEvents(const std::string& id, const httplib::Request& req, httplib::Response& res);
  void ServeLog(const std::string& id, int rank, const httplib::Request& req,
                httplib::Response& res);
  void ServeCancel(const std::string& id, const httplib::Request& req, httplib::Response& res);
  void ServeMetrics(httplib::Response& res);

  const HttpOptions options_;
  Coordinator* coord_;
  EventLoop* loop_;
  const Authorizer* auth_;
  const JobStats* stats_;
  std::unique_ptr<infra::BoundedServer> server_;
  infra::HttpListener listener_;
  std::atomic<bool> stopping_{false};
  std::mutex streams_mu_;
  std::set<SseStream*> streams_;  // open event streams (interrupted by Stop)
};

}  // namespace tern::daemon
